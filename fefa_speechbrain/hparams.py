"""Recipe hyperparameters: loading a yaml with overrides, and checking its values early.

Used by every recipe script, by inference (an experiment's ``hyperparams.yaml``) and by
export; it knows nothing about data preparation or training. :func:`plain_hparams`
reads the values a yaml and its overrides give *without building anything* (HyperPyYAML
tags stay text), so that :func:`check_hparams` can list every invalid value, and a key
given twice on the command line is refused, before any module is constructed.
"""

import csv
import math
import numbers
import os
import re

import yaml
from hyperpyyaml import load_hyperpyyaml, resolve_references

from fefa_speechbrain.data.audio import CHECK_MODES
from fefa_speechbrain.lobes.classifier import HEADS
from fefa_speechbrain.lobes.fefa import APPLY_MODES, FEFA_PLACEMENTS, KERNELS
from fefa_speechbrain.lobes.features import NORMALIZATIONS

CORPORA = ("voxceleb", "folder")
CHOICES = {
    "corpus": CORPORA,
    "check_audio": CHECK_MODES,
    "fefa": FEFA_PLACEMENTS,
    "fefa_kernel": KERNELS,
    "fefa_apply": APPLY_MODES,
    "head": HEADS,
    "feature_norm": tuple(NORMALIZATIONS),
}
AUGMENTATIONS = ("augment_speed", "augment_noise", "augment_babble", "augment_reverb",
                 "augment_drop_freq", "augment_coloured_noise", "augment_band_limit",
                 "augment_bit_depth", "augment_codec", "augment_clip")
FLAGS = ("skip_prep", "fefa_rescale", "augment", "power_spectrum", "log_spectrum", "remove_dc", "emb_relu",
         "random_channel", "allow_outside_root") + AUGMENTATIONS
POSITIVE_NUMBERS = ("sentence_len", "seg_dur", "lr", "lr_final", "width", "aam_scale",
                    "fefa_lr_multiplier")
NON_NEGATIVE_NUMBERS = ("weight_decay",)
NUMBERS = ("aam_margin",)
POSITIVE_INTEGERS = ("batch_size", "number_of_epochs", "sample_rate", "emb_dim", "prep_jobs",
                     "n_speakers", "n_test_speakers", "cohort_utts_per_speaker", "cohort_size",
                     "n_overlays", "max_mean_files")
NON_NEGATIVE_INTEGERS = ("num_workers", "lr_warmup_steps", "seed", "n_threshold_speakers")
PERCENT_SPLITS = ("split_ratio",)
COMMAND_LINE = "command line"
MAY_BE_NULL = ("sentence_len", "n_test_speakers", "max_mean_files")  # null: not used / all


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


def _refuse_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            where = (
                f"--{key} is given twice" if loader.name == COMMAND_LINE
                else f"key {key!r} is given twice (line {key_node.start_mark.line + 1})"
            )
            raise ValueError(f"{loader.name}: {where}; keep one value")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


class _StrictTagTolerantLoader(_TagTolerantLoader):
    """:class:`_TagTolerantLoader` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        return _refuse_duplicates(self, node, deep)


def _tagged_as_data(loader, suffix, node):
    if isinstance(node, yaml.MappingNode):
        return {"!": suffix, **loader.construct_mapping(node, deep=True)}
    if isinstance(node, yaml.SequenceNode):
        return {"!": suffix, "args": loader.construct_sequence(node, deep=True)}
    return _tag_as_text(loader, suffix, node)


class _PlainLoader(_StrictTagTolerantLoader):
    """Reads a resolved HyperPyYAML file as data: a tagged object becomes a dict with
    its tag under ``"!"``, e.g. ``{"!": "new:torch.nn.Linear", "in_features": 4}``."""


_PlainLoader.add_multi_constructor("!", _tagged_as_data)
# Read scalars as HyperPyYAML (ruamel, YAML 1.2) does: only true/false are booleans
# ("yes" stays text), and 1e-4 is a number.
_PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PlainLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_PlainLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def pop_override(overrides, key):
    """``(value, overrides without key)``: a recipe option that is not a yaml key.

    A bare ``--key`` on the command line arrives as ``key:`` (None), read as True.

    Example
    -------
    >>> pop_override("fefa: none\\noverwrite:", "overwrite")
    (True, 'fefa: none')
    >>> pop_override({"fefa": "none"}, "overwrite")
    (None, {'fefa': 'none'})
    """
    if isinstance(overrides, str):
        lines = overrides.splitlines()
        kept = [line for line in lines if line.split(":", 1)[0].strip() != key]
        if len(kept) == len(lines):
            return None, overrides
        value = parse_overrides("\n".join(set(lines) - set(kept))).get(key)
        return (True if value is None else value), "\n".join(kept)
    overrides = dict(overrides or {})
    if key not in overrides:
        return None, overrides
    value = overrides.pop(key)
    return (True if value is None else value), overrides


def plain_hparams(hparams_file, overrides=None):
    """The values of a recipe yaml with its overrides, as data; nothing is built.

    References (``!ref``) are resolved by HyperPyYAML; tagged objects (``!new:``,
    ``!name:`` ...) come back as dicts with the tag under ``"!"``. Unknown override keys
    fail with the list of valid ones; a key given twice (in the file or on the command
    line) fails naming it.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "h.yaml").write("width: 1.0\\nnet: !new:torch.nn.Linear\\n  in_features: !ref <width>\\n")
    >>> plain_hparams(str(tmp / "h.yaml"), "width: 2.0")
    {'width': 2.0, 'net': {'!': 'new:torch.nn.Linear', 'in_features': 2.0}}
    >>> plain_hparams(str(tmp / "h.yaml"), "width: 2.0\\nwidth: 3.0")
    Traceback (most recent call last):
    ...
    ValueError: command line: --width is given twice; keep one value
    """
    if isinstance(overrides, str) and overrides.strip():
        loader = _StrictTagTolerantLoader(overrides)
        loader.name = COMMAND_LINE
        try:
            loader.get_single_data()
        finally:
            loader.dispose()
    with open(hparams_file, encoding="utf-8") as fin:
        resolved = resolve_references(fin, overrides or {}).getvalue()
    loader = _PlainLoader(resolved)
    loader.name = os.fspath(hparams_file)
    try:
        return loader.get_single_data() or {}
    finally:
        loader.dispose()


def read_plain_hparams(path):
    """The values of a saved (resolved) ``hyperparams.yaml``, as :func:`plain_hparams`
    gives them; nothing is built, no code runs.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "hyperparams.yaml").write("seed: 3\\nset: !apply:torch.manual_seed [3]\\n")
    >>> read_plain_hparams(str(tmp / "hyperparams.yaml"))
    {'seed': 3, 'set': {'!': 'apply:torch.manual_seed', 'args': [3]}}
    """
    with open(path, encoding="utf-8") as fin:
        loader = _PlainLoader(fin.read())
    loader.name = os.fspath(path)
    try:
        return loader.get_single_data() or {}
    finally:
        loader.dispose()


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

    Before anything is built: unknown keys fail with the list of valid ones
    (HyperPyYAML's check), a key given twice fails naming it, and every value is checked
    (:func:`check_hparams`, one message listing every problem).
    """
    try:
        plain = plain_hparams(hparams_file, overrides)
    except ValueError as error:
        if "!PLACEHOLDER" not in str(error):
            raise
        plain = None  # HyperPyYAML names the unknown keys first, then the placeholder
    if plain is not None:
        check_hparams(plain, hparams_file)
    with open(hparams_file, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides or {})


def _value_problem(key, value):
    """Why ``value`` is not valid for ``key`` (None when it is, or the key is unchecked)."""
    if value is None and key in MAY_BE_NULL:
        return None
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    is_number = (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    )
    if key in CHOICES and value not in CHOICES[key]:
        return f"choose one of {list(CHOICES[key])}"
    if key in FLAGS and not isinstance(value, bool):
        return "must be True or False"
    if key in POSITIVE_NUMBERS and not (is_number and value > 0):
        return "must be a number > 0"
    if key in NON_NEGATIVE_NUMBERS and not (is_number and value >= 0):
        return "must be a number >= 0"
    if key in NUMBERS and not is_number:
        return "must be a number"
    if key in POSITIVE_INTEGERS and not (is_int and value >= 1):
        return "must be an integer >= 1"
    if key in NON_NEGATIVE_INTEGERS and not (is_int and value >= 0):
        return "must be an integer >= 0"
    if key in PERCENT_SPLITS and not _is_split(value):
        return "must be two numbers [train, dev], train > 0, dev >= 0, e.g. [90, 10]"
    return None


def _is_split(value):
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return False
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        return False
    return value[0] > 0 and value[1] >= 0


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
    >>> check_hparams({"augment": True, "augment_noise": False, "augment_speed": False})
    Traceback (most recent call last):
    ...
    ValueError: hparams: invalid values (fix the yaml or the command-line override):
      augment=True: enable at least one of augment_speed, augment_noise, augment_babble, augment_reverb, augment_drop_freq, ...
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
    enabled = [hparams[key] for key in AUGMENTATIONS if key in hparams]
    if hparams.get("augment") is True and enabled and not any(enabled):
        problems.append(f"augment=True: enable at least one of {', '.join(AUGMENTATIONS)}")
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


# Loading a yaml runs it: HyperPyYAML builds every !new: object, calls every !apply:
# function and imports every !name: / !module: target (and ruamel's loader also
# constructs !!python/ tags). A model folder from someone else is therefore checked
# before it is loaded: only tags naming these packages pass, minus the entry points in
# them that fetch, load or run other code. This is a filter against the obvious, not a
# sandbox: trust=True (--trust) skips it for folders whose author you trust.
TRUSTED_PACKAGES = ("speechbrain", "fefa_speechbrain", "torch", "torchaudio")
UNSAFE_TARGETS = (
    "torch.hub", "torch.load", "torch.serialization", "torch.package", "torch.jit.load",
    "torch.utils.cpp_extension", "torch.ops", "torch.classes", "torch.library",
    "torch.distributed", "torch.multiprocessing", "torch.compile",
    "speechbrain.utils.superpowers", "speechbrain.utils.data_utils", "speechbrain.utils.fetching",
    "speechbrain.utils.importutils", "speechbrain.utils.distributed", "speechbrain.inference",
    "speechbrain.pretrained", "speechbrain.core", "speechbrain.utils.checkpoints",
    "fefa_speechbrain.hparams", "fefa_speechbrain.inference.model_source",
    "fefa_speechbrain.cli", "fefa_speechbrain.export",
)
CALLING_TAGS = ("!new:", "!name:", "!apply:", "!module:")


class UntrustedYamlError(ValueError):
    """A yaml that would import or run code outside the trusted packages when loaded."""


def _untrusted_target(target):
    """Why loading a tag naming ``target`` (``os.system``) is refused, or None."""
    parts = target.split(".")
    if parts[0] not in TRUSTED_PACKAGES:
        return f"names {parts[0]}, outside {', '.join(TRUSTED_PACKAGES)}"
    if any(part.startswith("_") for part in parts):
        return "names a private or special attribute"
    for unsafe in UNSAFE_TARGETS:
        if target == unsafe or target.startswith(unsafe + "."):
            return f"{unsafe} fetches, loads or runs other code"
    return None


def _tag_problem(tag):
    """Why a yaml node tag is refused before loading (None for a harmless tag)."""
    if tag.startswith("tag:yaml.org,2002:python/"):
        return "a Python object tag (runs code when loaded)"
    if tag.startswith("!include:"):
        return "includes another file, which would be loaded unchecked"
    for prefix in CALLING_TAGS:
        if tag.startswith(prefix):
            return _untrusted_target(tag[len(prefix):].strip())
    return None


def untrusted_tags(path):
    """Every tag of a yaml that loading would use to import or run untrusted code.

    The yaml is composed (parsed into nodes: tags, ``%TAG`` directives and verbatim
    tags resolved, nothing constructed, nothing imported), so a tag cannot hide in
    another spelling.

    Returns
    -------
    list of str : ``"line N: !apply:os.system names os, outside ..."``.

    Raises
    ------
    UntrustedYamlError
        When the file is not valid YAML (it cannot be checked).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "h.yaml").write("a: !new:torch.nn.Linear [2, 2]\\nb: !apply:os.system [ls]\\n")
    >>> untrusted_tags(str(tmp / "h.yaml"))
    ['line 2: !apply:os.system names os, outside speechbrain, fefa_speechbrain, torch, torchaudio']
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fin:
            root = yaml.compose(fin, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UntrustedYamlError(
            f"{path} is not valid YAML, so it cannot be checked before loading: "
            f"{' '.join(str(error).split())}"
        ) from error
    found, stack = [], [root] if root is not None else []
    while stack:
        node = stack.pop()
        problem = _tag_problem(node.tag or "")
        if problem:
            shown = node.tag.replace("tag:yaml.org,2002:", "!!")
            found.append((node.start_mark.line + 1, f"{shown} {problem}"))
        if isinstance(node, yaml.MappingNode):
            stack.extend(item for pair in node.value for item in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return [f"line {line}: {text}" for line, text in sorted(found)]


def check_trusted_yaml(path, trust=False):
    """Refuses, before loading, a yaml whose tags would import or run untrusted code.

    Arguments
    ---------
    path : str
        A model's ``hyperparams.yaml``.
    trust : bool
        Skip the check (the user trusts the folder's author).

    Raises
    ------
    UntrustedYamlError
        Listing every offending tag with its line, and the remedy.
    """
    if trust:
        return
    problems = untrusted_tags(path)
    if problems:
        raise UntrustedYamlError(
            f"{path}: refusing to load it: loading a yaml runs its tags, and "
            f"{len(problems)} would import or run code outside the trusted packages: "
            f"{'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''}. Read the "
            "file; load it only if you trust its author (--trust on the command line, "
            "trust=True in load_model)"
        )
