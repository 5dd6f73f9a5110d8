"""An output folder belongs to one experiment; no silent empty training; every value checked.

The training script runs as a user runs it (a subprocess) on a tiny generated corpus:
a batch larger than the corpus is refused before anything is written; a rerun with
another identity value (width, seed, corpus) is refused naming it and leaves the old
experiment byte for byte; ``--overwrite`` moves it aside; a longer rerun resumes; a
second run in a live run's folder is refused naming the PID, a dead run's lock is taken
over. The value checks are called in-process (they fail before any module is built).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fefa_speechbrain.data.synthetic import generate_corpus
from fefa_speechbrain.experiment import LOCK_NAME, ExperimentError, ExperimentLock
from recipe_scripts import load_script

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb" / "FEFA"
TRAIN_SCRIPT = RECIPE / "train_speaker_embeddings.py"
TAP_YAML = RECIPE / "hparams" / "train_thin_resnet34_tap.yaml"
TIMEOUT = 300
load_training_hparams = load_script("train_speaker_embeddings").load_training_hparams


def _run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=TIMEOUT,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """3 training speakers x 6 files of 1.2-1.6 s (one 3 s chunk each), 2 test speakers."""
    folder = tmp_path_factory.mktemp("corpus")
    generate_corpus(
        str(folder), n_speakers=5, n_test_speakers=2, sessions_per_speaker=1,
        utts_per_session=6, min_duration=1.2, max_duration=1.6, progress=False,
    )
    return folder


def _command(corpus, folder, *extra, prep="prep"):
    """The training command; ``extra`` (``--key=value`` or ``--flag``) replaces defaults."""
    options = {
        "data_folder": corpus, "verification_file": corpus / "veri_test2.txt",
        "prep_folder": folder / prep, "output_folder": folder / "out", "width": 0.125,
        "sentence_len": 1.0, "batch_size": 2, "num_workers": 0, "split_ratio": "[75,25]",
        "check_audio": "header", "number_of_epochs": 1,
    }
    flags = []
    for option in extra:
        if "=" in option:
            key, value = option[2:].split("=", 1)
            options[key] = value
        else:
            flags.append(option)
    return [TRAIN_SCRIPT, TAP_YAML, *(f"--{k}={v}" for k, v in options.items()), *flags]


def _snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """One finished 1-epoch experiment; tests copy it before touching it."""
    folder = tmp_path_factory.mktemp("trained")
    code, output = _run(_command(corpus, folder), cwd=folder)
    assert code == 0, output[-4000:]
    return folder


def _copy(trained, tmp_path):
    import shutil

    shutil.copytree(trained / "out", tmp_path / "out")
    shutil.copytree(trained / "prep", tmp_path / "prep")
    return tmp_path


def test_a_batch_larger_than_the_corpus_is_refused_before_anything_is_written(corpus, tmp_path):
    code, output = _run(_command(corpus, tmp_path, "--batch_size=64"), cwd=tmp_path)
    assert code != 0
    assert "train chunks make no batch of batch_size=64" in output, output[-3000:]
    assert "Lower --batch_size to" in output
    assert "train loss" not in output
    out = tmp_path / "out"
    assert [p.name for p in out.rglob("*") if p.is_file()] == []  # the lock is gone, nothing else


def test_rerun_with_other_identity_values_is_refused_and_the_experiment_kept(trained, tmp_path):
    folder = _copy(trained, tmp_path)
    before = _snapshot(folder / "out")
    corpus = Path(
        next(line for line in (trained / "out" / "hyperparams.yaml").read_text().splitlines()
             if line.startswith("data_folder:")).split(":", 1)[1].strip()
    )
    for extra, named in (("--width=0.25", "width: 0.125 -> 0.25"), ("--seed=7", "seed: 1986 -> 7")):
        code, output = _run(_command(corpus, folder, extra), cwd=folder)
        assert code != 0
        assert "holds another experiment; this run differs in:" in output, output[-3000:]
        assert named in output
        assert _snapshot(folder / "out") == before

    # another corpus: one speaker fewer (its files removed) -> other speakers and chunks
    smaller = tmp_path / "smaller"
    import shutil

    shutil.copytree(corpus, smaller)
    shutil.rmtree(smaller / "wav" / "id10003")
    code, output = _run(_command(smaller, folder, prep="prep2"), cwd=folder)
    assert code != 0
    assert "speakers: 1 only in the saved" in output and "id10003" in output, output[-3000:]
    assert "train_annotation: other chunks" in output
    assert _snapshot(folder / "out") == before

    # --overwrite moves the old experiment aside, byte for byte, and trains the new one
    code, output = _run(_command(corpus, folder, "--width=0.25", "--overwrite"), cwd=folder)
    assert code == 0, output[-4000:]
    (replaced,) = (folder / "out").glob("replaced-*")
    moved = _snapshot(replaced)
    assert {k: v for k, v in moved.items() if k != "REPLACED.txt"} == before
    assert "width: 0.125 -> 0.25" in moved["REPLACED.txt"].decode()
    assert "width: 0.25" in (folder / "out" / "hyperparams.yaml").read_text()


def test_a_longer_rerun_resumes(trained, tmp_path):
    folder = _copy(trained, tmp_path)
    code, output = _run(_command(Path(_data_folder(trained)), folder, "--number_of_epochs=2",
                                 "--prep_jobs=2"), cwd=folder)
    assert code == 0, output[-4000:]
    assert "Loading a checkpoint from" in output
    epochs = [line.split(",")[0] for line in (folder / "out" / "train_log.txt").read_text().splitlines()]
    assert epochs == ["epoch: 1", "epoch: 2"]


def _data_folder(trained):
    text = (trained / "out" / "hyperparams.yaml").read_text()
    return next(l for l in text.splitlines() if l.startswith("data_folder:")).split(":", 1)[1].strip()


def test_a_second_run_is_refused_while_the_first_lives_and_a_dead_runs_lock_is_taken(
    corpus, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(f"{sleeper.pid} {os.uname().nodename}\n")
        code, output = _run(_command(corpus, tmp_path), cwd=tmp_path)
        assert code != 0
        assert f"is in use by another run (PID {sleeper.pid})" in output, output[-3000:]
        assert not (tmp_path / "prep").exists()  # refused before the preparation
    finally:
        sleeper.kill()
        sleeper.wait()
    # the holder is dead now: the lock is taken over, and released at the end
    lock = ExperimentLock(out).acquire()
    assert (out / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    lock.release()
    assert not (out / LOCK_NAME).exists()


def test_a_live_lock_refuses_in_process(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(f"{sleeper.pid} {os.uname().nodename}\n")
        with pytest.raises(ExperimentError, match=f"PID {sleeper.pid}"):
            ExperimentLock(tmp_path).acquire()
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_every_value_the_recipe_reads_is_checked_before_anything_is_built(tmp_path):
    overrides = "\n".join([
        f"data_folder: {tmp_path}", f"output_folder: {tmp_path / 'out'}",
        "width: abc", "lr_final: -1", "weight_decay: -1", "lr_warmup_steps: abc",
        "aam_margin: abc", "fefa_lr_multiplier: 0", "fefa: sometimes", "seed: 1.5",
        "split_ratio: [0, 10]", "aam_scale: .nan",
    ])
    with pytest.raises(ValueError) as error:
        load_training_hparams(TAP_YAML, overrides)
    lines = str(error.value).splitlines()
    assert lines[0].endswith("invalid values (fix the yaml or the command-line override):")
    assert sorted(lines[1:]) == sorted([
        "  seed=1.5: must be an integer >= 0",
        "  fefa='sometimes': choose one of ['none', 'single', 'multi']",
        "  split_ratio=[0, 10]: must be two numbers [train, dev], train > 0, dev >= 0, e.g. [90, 10]",
        "  lr_final=-1: must be a number > 0",
        "  fefa_lr_multiplier=0: must be a number > 0",
        "  lr_warmup_steps='abc': must be an integer >= 0",
        "  weight_decay=-1: must be a number >= 0",
        "  width='abc': must be a number > 0",
        "  aam_margin='abc': must be a number",
        "  aam_scale=nan: must be a number > 0",
    ])
    assert not (tmp_path / "out").exists()


def test_a_key_given_twice_on_the_command_line_is_refused(corpus, tmp_path):
    code, output = _run([*_command(corpus, tmp_path), "--fefa=multi", "--fefa=none"], cwd=tmp_path)
    assert code != 0
    assert "ValueError: command line: --fefa is given twice; keep one value" in output, output[-3000:]
    assert not (tmp_path / "out").exists() and not (tmp_path / "prep").exists()


def test_a_trained_checkpoints_fefa_parameters_have_moved(trained):
    """FEFA starts at zero (the identity); one epoch of training must move it."""
    import torch

    (checkpoint,) = (trained / "out" / "save").glob("CKPT+*")
    state = torch.load(checkpoint / "embedding_model.ckpt", weights_only=True)
    fefa = {k: v for k, v in state.items() if k.startswith("input_fefa.")}
    assert fefa and all(float(v.abs().max()) > 0 for v in fefa.values()), fefa
