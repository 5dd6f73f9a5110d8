"""The recipe yamls: every key is used, every training yaml builds, bad overrides fail clearly.

Also checks ``tests/recipes/VoxCeleb.csv`` (SpeechBrain's recipe-test format) against the
recipe folder: every yaml is listed, the listed files exist, the debug flags name real keys.

A top-level key counts as used when another key of the same yaml references it
(``!ref <key>``, ``!copy <key>``; comments do not count), or when the yaml's script (the
``Script_file`` of its CSV rows) reads it from a ``hparams`` object: ``hparams["key"]``, ``hparams.key``, ``hparams.get("key")``,
``getattr(hparams, "key")``, ``"key" in hparams`` (``self.hparams`` and
``brain.hparams`` alike). Keys starting with ``__`` run at load time and are exempt.
"""

import ast
import csv
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import speechbrain as sb
import torch
from ruamel.yaml import YAML
from ruamel.yaml.comments import TaggedScalar

from fefa_speechbrain.lobes.features import feature_lengths
from fefa_speechbrain.lobes.fefa import FEFA
from fefa_speechbrain.hparams import load_hparams

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb" / "FEFA"
HPARAMS = RECIPE / "hparams"
RECIPE_CSV = REPO / "tests" / "recipes" / "VoxCeleb.csv"
SMALL_PRESET = "train_ecapa_fefa_small.yaml"
SHIPPED_CARD = REPO / "pretrained" / "fefa-ecapa128-speechcommands" / "README.md"
CSV_HEADER = [
    "Task", "Dataset", "Script_file", "Hparam_file", "Data_prep_file", "Readme_file",
    "Result_url", "HF_repo", "test_debug_flags", "test_debug_checks", "performance",
]
TRAIN_YAMLS = sorted(HPARAMS.glob("train_*.yaml"))
FEFA_SETTINGS = ("none", "single", "multi")
REFERENCE_TAGS = ("!ref", "!copy")
REFERENCE = re.compile(r"<([^<>]+)>")


def small(yaml_path):
    """Overrides that shrink a training yaml's model for fast tests."""
    return {"ecapa_channels": 16} if "ecapa" in yaml_path.name else {"width": 0.125}


def dummy_data(tmp_path):
    """Required keys, with paths that exist nowhere, and writable outputs under tmp_path."""
    return {
        "data_folder": "/nonexistent/voxceleb",
        "verification_file": "/nonexistent/veri_test2.txt",
        "save_folder": str(tmp_path / "save"),
        "train_log": str(tmp_path / "train_log.txt"),
    }


def test_small_preset_is_the_shipped_models_training_command(tmp_path):
    """The preset's defaults are the settings of the card's exact training command."""
    card = SHIPPED_CARD.read_text(encoding="utf-8")
    command = re.search(r"python train_speaker_embeddings.py hparams/train_ecapa_fefa.yaml(.*?)```",
                        card, re.S).group(1).replace("\\\n", " ")
    flags = dict(flag[2:].split("=", 1) for flag in shlex.split(command) if "=" in flag)
    paths = ("data_folder", "prep_folder", "output_folder", "num_workers", "skip_prep",
             "verification_file", "seed")
    settings = {key: value for key, value in flags.items() if key not in paths}
    assert {"ecapa_channels", "lr", "head", "number_of_epochs", "batch_size", "augment_reverb"} <= set(settings)
    overrides = {k: v for k, v in dummy_data(tmp_path).items() if k != "verification_file"}
    preset = load_hparams(HPARAMS / SMALL_PRESET, dict(overrides, n_speakers=7))
    for key, value in settings.items():
        assert str(preset[key]) == value or float(preset[key]) == float(value), key
    assert preset["verification_file"] is None and preset["corpus"] == "folder"


# --------------------------------------------------------------------------- key usage


def _round_trip(path):
    with open(path, encoding="utf-8") as fin:
        return YAML(typ="rt").load(fin)


def _tagged_references(node):
    """Names referenced by !ref / !copy anywhere below ``node``."""
    tag = getattr(getattr(node, "tag", None), "value", None)
    if isinstance(node, TaggedScalar) and tag is not None and tag.split(":")[0] in REFERENCE_TAGS:
        return {re.split(r"[.\[]", ref.strip())[0] for ref in REFERENCE.findall(str(node.value))}
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return set().union(*(_tagged_references(child) for child in children))


def yaml_keys_and_references(path):
    """(top-level keys, names referenced from inside the yaml)."""
    tree = _round_trip(path)
    return list(tree), _tagged_references(tree)


def _is_hparams(node):
    return (isinstance(node, ast.Name) and node.id == "hparams") or (
        isinstance(node, ast.Attribute) and node.attr == "hparams"
    )


def _string(node):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def hparams_reads(source):
    """Names read from a ``hparams`` object in Python source code."""
    tree = ast.parse(source)
    methods = {  # hparams.get(...), hparams.items(): dict methods, not keys
        id(node.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in dir(dict)
    }
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_hparams(node.value):
            names.add(_string(node.slice))
        elif isinstance(node, ast.Attribute) and _is_hparams(node.value):
            if id(node) not in methods:
                names.add(node.attr)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr"):
                if len(node.args) >= 2 and _is_hparams(node.args[0]):
                    names.add(_string(node.args[1]))
            elif isinstance(func, ast.Attribute) and func.attr == "get" and _is_hparams(func.value):
                names.add(_string(node.args[0]))
        elif isinstance(node, ast.Compare) and len(node.ops) == 1:
            if isinstance(node.ops[0], (ast.In, ast.NotIn)) and _is_hparams(node.comparators[0]):
                names.add(_string(node.left))
    return names - {None}


def unused_keys(yaml_path, python_files):
    """Top-level keys of ``yaml_path`` that neither the yaml nor the Python code uses."""
    keys, referenced = yaml_keys_and_references(yaml_path)
    read = set().union(*(hparams_reads(Path(f).read_text(encoding="utf-8")) for f in python_files))
    return {key for key in keys if not key.startswith("__")} - referenced - read


def read_recipe_csv():
    with open(RECIPE_CSV, newline="", encoding="utf-8") as fin:
        return list(csv.DictReader(fin))


def scripts_of(yaml_path):
    """The Script_file of every CSV row of this yaml (as SpeechBrain's check_yaml reads it)."""
    rel = yaml_path.relative_to(REPO).as_posix()
    scripts = {REPO / row["Script_file"] for row in read_recipe_csv() if row["Hparam_file"] == rel}
    assert scripts, f"{rel} has no row in {RECIPE_CSV}"
    return sorted(scripts)


@pytest.mark.parametrize("yaml_path", sorted(HPARAMS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_yaml_key_is_used(yaml_path):
    assert unused_keys(yaml_path, scripts_of(yaml_path)) == set()


def test_unused_key_check_catches_a_new_key(tmp_path):
    """The check fails on a doctored copy, ignores comments, follows !ref and Python reads."""
    original = HPARAMS / "train_thin_resnet34_tap.yaml"
    python = scripts_of(original)
    doctored = tmp_path / "doctored.yaml"
    doctored.write_text(
        original.read_text() + "\n# <dangling_knob> mentioned in a comment only\n"
        "dangling_knob: 3\n"
    )
    assert unused_keys(doctored, python) == {"dangling_knob"}

    doctored.write_text(doctored.read_text() + "knob_user: !ref <dangling_knob> * 2\n")
    assert unused_keys(doctored, python) == {"knob_user"}

    reader = tmp_path / "reader.py"
    reader.write_text("def f(self, hparams):\n    return self.hparams.knob_user\n")
    assert unused_keys(doctored, python + [reader]) == set()


def test_python_reads_are_found():
    source = (
        "a = hparams['k1']\nb = self.hparams.k2\nc = getattr(self.hparams, 'k3', None)\n"
        "d = hparams.get('k4')\ne = 'k5' in hparams\nf = other['k6']\n# hparams['k7']\n"
        "g = brain.hparams.epoch_counter\nh = self.hparams.compute_cost(x)\n"
    )
    assert hparams_reads(source) == {"k1", "k2", "k3", "k4", "k5", "epoch_counter", "compute_cost"}


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("yaml_path", TRAIN_YAMLS, ids=lambda p: p.name)
def test_training_yaml_builds_its_modules(yaml_path, tmp_path):
    """Shipped sizes: FEFA(S) by default, embeddings of emb_dim, one logit per speaker."""
    hparams = load_hparams(yaml_path, dict(dummy_data(tmp_path), n_speakers=7))
    assert hparams["fefa"] == "single"
    assert hparams["output_folder"] == f"results/{hparams['model_name']}/fefa_single/1986"
    if yaml_path.name != SMALL_PRESET:  # the paper's settings, no augmentation
        assert (hparams["lr"], hparams["batch_size"], hparams["head"]) == (1e-4, 64, "softmax")
        assert hparams["augment"] is False
    modules = hparams["modules"]
    assert set(modules) == {"compute_features", "mean_var_norm", "embedding_model", "classifier"}
    fefa_modules = [m for m in modules["embedding_model"].modules() if isinstance(m, FEFA)]
    assert len(fefa_modules) == 1

    wavs, lens = torch.randn(2, 16000), torch.tensor([1.0, 0.6])
    for module in modules.values():
        module.eval()
    with torch.no_grad():
        feats = modules["compute_features"](wavs)
        feat_lens = feature_lengths(modules["compute_features"], lens, wavs.shape[1])
        feats = modules["mean_var_norm"](feats, feat_lens)
        embeddings = modules["embedding_model"](feats, feat_lens)
        logits = modules["classifier"](embeddings)
    assert feats.shape == (2, 101, 257)
    assert embeddings.shape == (2, 1, hparams["emb_dim"])
    assert logits.shape == (2, 1, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("fefa", FEFA_SETTINGS)
@pytest.mark.parametrize("yaml_path", TRAIN_YAMLS, ids=lambda p: p.name)
def test_fefa_override_reaches_the_model(yaml_path, fefa, tmp_path):
    """--fefa=none|single|multi: no FEFA, one before the input, one per size change."""
    overrides = dict(dummy_data(tmp_path), fefa=fefa, **small(yaml_path))
    if "ecapa" in yaml_path.name and fefa == "multi":
        with pytest.raises(ValueError, match="FEFAWrapper supports 'none' and 'single'"):
            load_hparams(yaml_path, overrides)
        return
    hparams = load_hparams(yaml_path, overrides)
    count = sum(isinstance(m, FEFA) for m in hparams["embedding_model"].modules())
    expected = {"none": count == 0, "single": count == 1, "multi": count > 1}
    assert expected[fefa], count
    assert hparams["output_folder"].endswith(f"/fefa_{fefa}/1986")


@pytest.mark.parametrize("yaml_path", TRAIN_YAMLS, ids=lambda p: p.name)
def test_bad_fefa_value_lists_the_valid_ones(yaml_path, tmp_path):
    with pytest.raises(ValueError) as error:
        load_hparams(yaml_path, dict(dummy_data(tmp_path), fefa="sometimes", **small(yaml_path)))
    assert "fefa='sometimes': choose one of ['none', 'single', 'multi']" in str(error.value)


@pytest.mark.parametrize("yaml_path", sorted(HPARAMS.glob("*.yaml")), ids=lambda p: p.name)
def test_unknown_override_lists_the_valid_keys(yaml_path):
    keys, _ = yaml_keys_and_references(yaml_path)
    with pytest.raises(KeyError) as error:
        load_hparams(yaml_path, {"no_such_key": 1})
    message = str(error.value)
    assert "no_such_key" in message
    assert all(repr(key) in message for key in keys)


def test_typo_on_the_command_line_fails_before_training(tmp_path):
    """As a user sees it: a misspelt option stops the script with the valid keys listed."""
    result = subprocess.run(
        [
            sys.executable, "train_speaker_embeddings.py", "hparams/train_vggm_tap.yaml",
            "--data_folder=/nonexistent", "--verification_file=/nonexistent",
            f"--output_folder={tmp_path / 'out'}", f"--prep_folder={tmp_path / 'prep'}",
            "--fefa_mode=multi",
        ],
        cwd=RECIPE, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "Override 'fefa_mode' not found in:" in result.stderr
    assert "'fefa'" in result.stderr and "'fefa_kernel'" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "prep").exists()


# --------------------------------------------------------------------------- recipe CSV


def test_recipe_csv_header():
    with open(RECIPE_CSV, newline="", encoding="utf-8") as fin:
        assert next(csv.reader(fin)) == CSV_HEADER


def test_recipe_csv_lists_every_yaml_and_existing_files():
    rows = read_recipe_csv()
    listed = {row["Hparam_file"] for row in rows}
    on_disk = {path.relative_to(REPO).as_posix() for path in HPARAMS.glob("*.yaml")}
    assert listed == on_disk
    for row in rows:
        for column in ("Script_file", "Hparam_file", "Data_prep_file", "Readme_file"):
            assert (REPO / row[column]).is_file(), f"{column} {row[column]} does not exist"
        assert (row["Task"], row["Dataset"]) == ("Speaker_recognition", "VoxCeleb")


def test_recipe_csv_covers_the_table_grid():
    """Each training yaml with each FEFA setting (ECAPA: none and single; the small preset:
    single), in debug mode."""
    settings = {}
    for row in read_recipe_csv():
        if Path(row["Hparam_file"]).name.startswith("train_"):
            fefa = re.search(r"--fefa=(\w+)", row["test_debug_flags"]).group(1)
            settings.setdefault(Path(row["Hparam_file"]).name, []).append(fefa)
    expected = {path.name: list(FEFA_SETTINGS) for path in TRAIN_YAMLS}
    expected["train_ecapa_fefa.yaml"] = ["none", "single"]
    expected[SMALL_PRESET] = ["single"]
    assert {name: sorted(values) for name, values in settings.items()} == {
        name: sorted(values) for name, values in expected.items()
    }


@pytest.mark.parametrize(
    "row", read_recipe_csv(), ids=lambda row: Path(row["Hparam_file"]).stem
)
def test_recipe_csv_flags_name_real_keys(row):
    """Every debug flag is a SpeechBrain run option or a top-level key of the row's yaml."""
    flags = shlex.split(row["test_debug_flags"])
    yaml_file, run_opts, overrides = sb.parse_arguments([row["Hparam_file"], *flags])
    keys, _ = yaml_keys_and_references(REPO / yaml_file)
    given = set(YAML(typ="safe").load(overrides) or {})
    assert given - set(keys) == set(), f"flags that are not keys of {yaml_file}"
    if Path(yaml_file).name.startswith("train_"):
        assert run_opts["debug"] and run_opts["debug_batches"] == 1
        assert run_opts["debug_epochs"] == 1
    checks = row["test_debug_checks"]
    assert re.fullmatch(r'(file_exists=\[[^\]]+\])( performance_check=\[[^\]]+\])?', checks)
