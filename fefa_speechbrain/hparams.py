"""Recipe hyperparameters: loading a yaml with overrides, and checking its values early.

Used by every recipe script, by inference (an experiment's ``hyperparams.yaml``) and by
export; it knows nothing about data preparation or training.
"""

import csv
import numbers
import os

import yaml
from hyperpyyaml import load_hyperpyyaml

from fefa_speechbrain.data.audio import CHECK_MODES

CORPORA = ("voxceleb", "folder")
CHOICES = {"corpus": CORPORA, "check_audio": CHECK_MODES}
FLAGS = ("skip_prep", "fefa_rescale", "augment", "power_spectrum", "log_spectrum", "emb_relu",
         "random_channel")
POSITIVE_NUMBERS = ("sentence_len", "seg_dur", "lr")
POSITIVE_INTEGERS = ("batch_size", "number_of_epochs", "sample_rate", "emb_dim", "prep_jobs")
NON_NEGATIVE_INTEGERS = ("num_workers",)
MAY_BE_NULL = ("sentence_len",)  # null: train on whole chunks


class _TagTolerantLoader(yaml.SafeLoader):
    """A safe loader that reads HyperPyYAML tags (``!new:``, ``!ref`` ...) as plain text."""


def _tag_as_text(loader, suffix, node):
    value = loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else ""
    return f"!{suffix} {value}".strip()


_TagTolerantLoader.add_multi_constructor("!", _tag_as_text)


def parse_overrides(overrides):
    """Overrides as a dict, from SpeechBrain's yaml string (or a dict, or None).

    HyperPyYAML tags are kept as text: the dict tells which keys are overridden and
    their plain values; :func:`load_hparams` applies the original string, tags included.

    Example
    -------
    >>> parse_overrides("fefa: multi\\nlr: 0.001")
    {'fefa': 'multi', 'lr': 0.001}
    >>> parse_overrides("mean_var_norm: !new:torch.nn.Identity")
    {'mean_var_norm': '!new:torch.nn.Identity'}
    """
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    return yaml.load(overrides, Loader=_TagTolerantLoader) or {}


def add_override(overrides, key, value):
    """``overrides`` (a yaml string, dict or None) with ``key: value`` added.

    Example
    -------
    >>> add_override("fefa: none", "n_speakers", 30)
    'fefa: none\\nn_speakers: 30'
    >>> add_override(None, "n_speakers", 30)
    {'n_speakers': 30}
    """
    if isinstance(overrides, str) and overrides.strip():
        return f"{overrides.rstrip()}\n{key}: {yaml.safe_dump(value).splitlines()[0]}"
    updated = dict(overrides or {})
    updated[key] = value
    return updated


def load_hparams(hparams_file, overrides=None):
    """Loads a recipe yaml with overrides (a yaml string with tags, a dict, or None).

    Unknown keys fail with the list of valid ones (HyperPyYAML's check).
    """
    with open(hparams_file, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides or {})


def _value_problem(key, value):
    """Why ``value`` is not valid for ``key`` (None when it is, or the key is unchecked)."""
    if value is None and key in MAY_BE_NULL:
        return None
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if key in CHOICES and value not in CHOICES[key]:
        return f"choose one of {list(CHOICES[key])}"
    if key in FLAGS and not isinstance(value, bool):
        return "must be True or False"
    if key in POSITIVE_NUMBERS and not (is_number and value > 0):
        return "must be a number > 0"
    if key in POSITIVE_INTEGERS and not (is_int and value >= 1):
        return "must be an integer >= 1"
    if key in NON_NEGATIVE_INTEGERS and not (is_int and value >= 0):
        return "must be an integer >= 0"
    return None


def check_hparams(hparams, hparams_file="hparams"):
    """Checks the values the modules do not check themselves, before any long work.

    The modules already refuse bad choices when the yaml is loaded (``fefa``,
    ``fefa_kernel``, ``fefa_apply``, ``head``, ``width``, with the valid values); this
    catches the rest (a typo in ``corpus`` or ``check_audio``, a flag that is not a
    boolean, a non-positive ``sentence_len``, ``batch_size``, ``lr``, ...) that would
    otherwise fail after the data preparation, or silently train on nothing. Keys the
    yaml does not have are not checked.

    Raises
    ------
    ValueError
        Listing every invalid value with what is expected.

    Example
    -------
    >>> check_hparams({"corpus": "folder", "batch_size": 64, "sentence_len": None})
    >>> check_hparams({"corpus": "timit", "batch_size": 0, "augment": "yes"})
    Traceback (most recent call last):
    ...
    ValueError: hparams: invalid values (fix the yaml or the command-line override):
      corpus='timit': choose one of ['voxceleb', 'folder']
      batch_size=0: must be an integer >= 1
      augment='yes': must be True or False
    """
    problems = [
        f"{key}={hparams[key]!r}: {problem}"
        for key in hparams
        if (problem := _value_problem(key, hparams[key])) is not None
    ]
    if problems:
        raise ValueError(
            f"{hparams_file}: invalid values (fix the yaml or the command-line override):\n  "
            + "\n  ".join(problems)
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
