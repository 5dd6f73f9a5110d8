"""scripts/push_to_hub.py --dry-run: the checks before an upload (the upload needs a network)."""

import importlib.util
import os
import shutil

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "pretrained", "fefa-ecapa128-speechcommands")


@pytest.fixture(scope="module")
def push():
    spec = importlib.util.spec_from_file_location("push_to_hub", os.path.join(REPO, "scripts", "push_to_hub.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED, folder)
    return folder


FOLDERS = sorted(name for name in os.listdir(os.path.join(REPO, "pretrained"))
                 if os.path.isfile(os.path.join(REPO, "pretrained", name, "hyperparams.yaml")))


@pytest.mark.parametrize("name", FOLDERS)
def test_every_shipped_folder_is_ready(push, capsys, name):
    folder = os.path.join(REPO, "pretrained", name)
    assert push.main([folder, f"owner/{name}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"ready for owner/{name}" in out and "3 example clips embedded" in out


def _problems(push, capsys, folder):
    assert push.main([str(folder), "owner/name", "--dry-run"]) == 1
    return capsys.readouterr().err


def test_a_missing_checkpoint_is_named(push, capsys, tmp_path):
    folder = _copy(tmp_path)
    os.remove(folder / "classifier.ckpt")
    err = _problems(push, capsys, folder)
    assert "classifier.ckpt: the pretrainer loads classifier from it" in err


def test_absolute_paths_are_named_with_their_line(push, capsys, tmp_path):
    folder = _copy(tmp_path)
    with open(folder / "config.json", "a", encoding="utf-8") as handle:
        handle.write('\n"/home/me/runs/exp1/save"\n')
    err = _problems(push, capsys, folder)
    assert "config.json:" in err and "absolute local path '/home/me/runs/exp1/save'" in err


def test_a_card_without_front_matter_is_refused(push, capsys, tmp_path):
    folder = _copy(tmp_path)
    text = (folder / "README.md").read_text(encoding="utf-8")
    (folder / "README.md").write_text(text.replace("license: cc-by-4.0\n", "license: [unclosed\n", 1),
                                      encoding="utf-8")
    assert "the front-matter is not YAML" in _problems(push, capsys, folder)
    (folder / "README.md").write_text("# a card\n", encoding="utf-8")
    assert "does not start with front-matter" in _problems(push, capsys, folder)


def test_a_folder_that_does_not_load_is_refused(push, capsys, tmp_path):
    folder = _copy(tmp_path)
    (folder / "embedding_model.ckpt").write_bytes(b"not a checkpoint")
    assert "SpeakerRecognition.from_hparams fails" in _problems(push, capsys, folder)


def test_a_bad_repo_id_is_refused(push):
    with pytest.raises(SystemExit):
        push.main([SHIPPED, "no-owner", "--dry-run"])
