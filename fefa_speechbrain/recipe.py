"""The glue of the VoxCeleb recipe: hparams loading, data preparation, speaker count.

Kept in the package so that ``recipes/VoxCeleb/FEFA/train_speaker_embeddings.py`` reads
like SpeechBrain's own recipe, line by line.
"""

import csv
import os

import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from fefa_speechbrain.data.prepare import prepare_folder_corpus, prepare_voxceleb

CORPORA = ("voxceleb", "folder")


def parse_overrides(overrides):
    """Overrides as a dict, from SpeechBrain's yaml string (or a dict, or None).

    Example
    -------
    >>> parse_overrides("fefa: multi\\nlr: 0.001")
    {'fefa': 'multi', 'lr': 0.001}
    """
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    return yaml.safe_load(overrides) or {}


def load_hparams(hparams_file, overrides=None):
    """Loads a recipe yaml with overrides; unknown keys fail with the list of valid ones."""
    with open(hparams_file, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, parse_overrides(overrides))


def prepare_corpus(hparams):
    """Runs the data preparation the hparams ask for (idempotent; skipped with skip_prep).

    Keys read: ``skip_prep``, ``corpus`` ("voxceleb" or "folder"), ``data_folder``,
    ``prep_folder``, ``verification_file``, ``split_ratio``, ``seg_dur``,
    ``check_audio``, ``prep_jobs``, ``seed`` and, for "folder", ``test_speakers``
    and ``n_test_speakers``.
    """
    if hparams["skip_prep"]:
        return None
    corpus = hparams["corpus"]
    if corpus not in CORPORA:
        raise ValueError(f"corpus={corpus!r} is not valid; choose one of {list(CORPORA)}")
    common = dict(
        save_folder=hparams["prep_folder"],
        verification_pairs_file=hparams["verification_file"],
        split_ratio=hparams["split_ratio"],
        seg_dur=hparams["seg_dur"],
        check_audio=hparams["check_audio"],
        n_jobs=hparams["prep_jobs"],
        seed=hparams["seed"],
    )
    if corpus == "voxceleb":
        return prepare_voxceleb(hparams["data_folder"], **common)
    return prepare_folder_corpus(
        hparams["data_folder"],
        test_speakers=hparams["test_speakers"],
        n_test_speakers=hparams["n_test_speakers"],
        **common,
    )


def count_speakers(csv_path):
    """Number of distinct ``spk_id`` values in a SpeechBrain CSV.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(path, "w").write("ID,spk_id\\na,s1\\nb,s2\\nc,s1\\n")
    >>> count_speakers(path)
    2
    """
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(
            f"Training annotation {csv_path} does not exist: run the data preparation "
            "first (leave skip_prep False) or point train_annotation at your CSV"
        )
    with open(csv_path, newline="", encoding="utf-8") as fin:
        reader = csv.DictReader(fin)
        if reader.fieldnames is None or "spk_id" not in reader.fieldnames:
            raise ValueError(f"{csv_path} has no spk_id column (columns: {reader.fieldnames})")
        return len({row["spk_id"] for row in reader})


def load_recipe_hparams(hparams_file, overrides=None):
    """Loads the training hparams, prepares the data, and sizes the classifier.

    ``n_speakers`` is set from the training CSV unless given on the command line, so the
    same yaml trains on VoxCeleb2 (5,994 speakers), VoxCeleb1+2 or a folder of your own.

    Returns
    -------
    (hparams, overrides) : the loaded hparams and the overrides dict actually applied
    (to be saved with the experiment).
    """
    overrides = parse_overrides(overrides)
    hparams = load_hparams(hparams_file, overrides)
    run_on_main(prepare_corpus, kwargs={"hparams": hparams})
    n_speakers = count_speakers(hparams["train_annotation"])
    if "n_speakers" not in overrides and hparams["n_speakers"] != n_speakers:
        overrides["n_speakers"] = n_speakers
        hparams = load_hparams(hparams_file, overrides)
    return hparams, overrides
