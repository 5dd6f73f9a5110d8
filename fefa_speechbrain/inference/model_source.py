"""One loader for every way of naming a trained model ("MODEL").

A model is given as one of three things, told apart by :func:`model_kind`:

- a training run: the ``output_folder`` of ``train_speaker_embeddings.py``
  (``hyperparams.yaml`` and ``save/CKPT+*``), loaded by :func:`load_experiment`;
- a pretrained folder, as ``export_pretrained.py`` writes it (``hyperparams.yaml``,
  ``embedding_model.ckpt``, ..., ``config.json``), loaded by SpeechBrain's
  ``SpeakerRecognition.from_hparams`` (its ``hyperparams.yaml`` runs: trust it);
- a hub id (``owner/name``), fetched by SpeechBrain and then loaded as a pretrained folder.

:func:`load_model` returns a :class:`LoadedModel` (the embedding modules, sample rate,
the stored decision thresholds); the recipe scripts and the command line use it.
"""

import difflib
import hashlib
import json
import logging
import math
import numbers
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlparse

from fefa_speechbrain.checkpoints import PretrainedFolderError
from fefa_speechbrain.inference.embedder import load_experiment
from fefa_speechbrain.hparams import check_trusted_yaml, read_plain_hparams

logger = logging.getLogger(__name__)

PRETRAINED_FILES = ("hyperparams.yaml", "embedding_model.ckpt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_TIMEOUT_SECONDS = 5


@dataclass
class LoadedModel:
    """A model ready to embed: what :func:`load_model` returns.

    Attributes
    ----------
    modules : mapping
        ``compute_features``, ``mean_var_norm``, ``embedding_model`` (eval mode).
    sample_rate : int
        The rate the model works at.
    kind : str
        ``"experiment"``, ``"pretrained"`` or ``"hub"``.
    source : str
        The MODEL as given.
    checkpoint : str
        The checkpoint folder of a training run, or the pretrained source.
    config : dict
        ``config.json`` of a pretrained folder (``{}`` for a training run); its
        ``thresholds`` hold the decision thresholds stored at export.
    config_path : str
        Where ``config`` was read from (``""`` for a training run).
    """

    modules: object
    sample_rate: int
    kind: str
    source: str
    checkpoint: str
    config: dict = field(default_factory=dict)
    config_path: str = ""

    @property
    def thresholds(self):
        """name -> {"value", "description"}: the stored decision thresholds, checked.

        Raises
        ------
        PretrainedFolderError
            Naming config.json, when a threshold is not a finite cosine in [-1, 1] with
            a description.
        """
        return checked_thresholds(self.config, self.config_path or "config.json")


def checked_thresholds(config, config_path):
    """The ``thresholds`` of a config.json, each a finite number in [-1, 1].

    Example
    -------
    >>> checked_thresholds({"thresholds": {"eer": {"value": 0.4, "description": "d"}}}, "c.json")
    {'eer': {'value': 0.4, 'description': 'd'}}
    >>> checked_thresholds({"thresholds": {"eer": {"value": "0.4"}}}, "c.json")
    Traceback (most recent call last):
    ...
    fefa_speechbrain.checkpoints.PretrainedFolderError: c.json: threshold 'eer' is malformed: ...
    """
    stored = config.get("thresholds", {})
    if not isinstance(stored, dict):
        raise PretrainedFolderError(
            f"{config_path}: 'thresholds' is a {type(stored).__name__}, not a mapping "
            "name -> {value, description}; export again with export_pretrained.py "
            "--threshold_trials, or pass --threshold"
        )
    for name, entry in stored.items():
        if name == "trials":
            continue
        value = entry.get("value") if isinstance(entry, dict) else None
        problem = None
        if not isinstance(entry, dict):
            problem = f"a {type(entry).__name__}, not {{value, description}}"
        elif "value" not in entry:
            problem = "it has no 'value'"
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            problem = f"value {value!r} is not a number"
        elif not math.isfinite(value) or not -1 <= value <= 1:
            problem = f"value {value!r} is not a cosine in [-1, 1]"
        elif not isinstance(entry.get("description", ""), str):
            problem = "its description is not text"
        if problem:
            raise PretrainedFolderError(
                f"{config_path}: threshold {name!r} is malformed: {problem}; export again "
                "with export_pretrained.py --threshold_trials, fix the file, or pass --threshold"
            )
    return {name: dict(entry) for name, entry in stored.items()}


def _looks_like_path(model):
    """True when MODEL reads as a local path rather than a hub id ``owner/name``."""
    parent = os.path.dirname(model.rstrip(os.sep))
    return (
        model.startswith((".", "~", os.sep))
        or model.endswith(os.sep)
        or (os.altsep is not None and os.altsep in model)
        or not HUB_ID.match(model)
        or (parent != "" and os.path.isdir(parent))
    )


def _no_such_folder(model):
    """The error for a MODEL that is no folder, with the nearest names beside it."""
    parent = os.path.dirname(model.rstrip(os.sep)) or "."
    hint = ""
    if os.path.isdir(parent):
        try:
            names = [name for name in os.listdir(parent) if os.path.isdir(os.path.join(parent, name))]
        except OSError:
            names = []
        close = difflib.get_close_matches(os.path.basename(model.rstrip(os.sep)), names, n=3)
        if close:
            hint = f"; did you mean {', '.join(os.path.join(parent, name) for name in close)}?"
        elif os.path.dirname(model.rstrip(os.sep)):
            hint = f" ({parent} exists, so it is not taken for a hub id)"
    elif HUB_ID.match(model) is None:
        hint = " (and not a hub id 'owner/name')"
    return FileNotFoundError(f"MODEL {model}: no such local folder{hint}")


def model_kind(model):
    """Which kind of MODEL ``model`` names, without loading it.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "hyperparams.yaml").write("")
    >>> _ = (tmp / "embedding_model.ckpt").write("")
    >>> model_kind(str(tmp)), model_kind("speechbrain/spkrec-ecapa-voxceleb")
    ('pretrained', 'hub')
    >>> model_kind(str(tmp / "nothing_here"))
    Traceback (most recent call last):
    ...
    FileNotFoundError: MODEL .../nothing_here: no such local folder (... exists, so it is not taken for a hub id)
    """
    model = os.path.expanduser(os.fspath(model))
    if os.path.isdir(model):
        has_yaml = os.path.isfile(os.path.join(model, "hyperparams.yaml"))
        if has_yaml and os.path.isdir(os.path.join(model, "save")):
            return "experiment"
        if all(os.path.isfile(os.path.join(model, name)) for name in PRETRAINED_FILES):
            return "pretrained"
        raise FileNotFoundError(
            f"MODEL {model} is neither a training run (hyperparams.yaml and save/) nor a "
            f"pretrained folder ({', '.join(PRETRAINED_FILES)}, as export_pretrained.py writes)"
        )
    if os.path.exists(model):
        raise FileNotFoundError(f"MODEL {model} is a file, not a model folder or hub id")
    if _looks_like_path(model):
        raise _no_such_folder(model)
    return "hub"


def load_model(model, device="cpu", savedir=None, trust=False):
    """Loads a training run, a pretrained folder or a hub id, ready to embed.

    Loading runs the model's ``hyperparams.yaml``. Unless ``trust``, it is checked
    first (:func:`~fefa_speechbrain.hparams.check_trusted_yaml`): a tag naming code
    outside speechbrain, fefa_speechbrain, torch and torchaudio is refused. A pretrained
    folder's ``config.json`` must agree with its yaml (sample rate, FEFA): an edited
    yaml that disagrees is refused, naming both files and values.

    Arguments
    ---------
    model : str
        The MODEL (see :func:`model_kind`).
    device : str
        Where the modules go.
    savedir : str
        Where a hub model is fetched to (default: SpeechBrain's choice); a local
        pretrained folder is always read in place.
    trust : bool
        Load the yaml without checking its tags (only for folders you trust).

    Returns
    -------
    LoadedModel

    Example
    -------
    >>> load_model(str(getfixture("tmpdir")))
    Traceback (most recent call last):
    ...
    FileNotFoundError: MODEL ... is neither a training run (hyperparams.yaml and save/) ...
    """
    model = os.path.expanduser(os.fspath(model))
    kind = model_kind(model)
    if kind == "experiment":
        check_trusted_yaml(os.path.join(model, "hyperparams.yaml"), trust)
        hparams, checkpoint = load_experiment(model, device=device)
        return LoadedModel(
            hparams["modules"], hparams.get("sample_rate", 16000), kind, model, str(checkpoint.path)
        )
    return _load_pretrained(model, kind, device, savedir, trust)


def _hub_unreachable(timeout=None):
    """Why the hub cannot be reached in ``timeout`` seconds (None when it answers).

    One TCP connection to the hub's host (``HF_ENDPOINT`` or huggingface.co), in a
    thread so that a hanging name lookup cannot outlast the timeout either.
    """
    timeout = HUB_TIMEOUT_SECONDS if timeout is None else timeout
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    outcome = {}

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["ok"] = True
        except OSError as error:
            outcome["error"] = " ".join(str(error).split()) or type(error).__name__

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    if outcome.get("ok"):
        return None
    return f"{host}:{port}: {outcome.get('error', f'no answer in {timeout} s')}"


def _offline():
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _check_hub_reachable(model):
    """Fails in seconds, naming the model, when the hub cannot be reached."""
    if _offline():
        return
    why = _hub_unreachable()
    if why is None:
        return
    cached = ""
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(model, "hyperparams.yaml"), str):
            cached = "; it is in the local hub cache: run with HF_HUB_OFFLINE=1 to use that copy"
    except Exception:  # no cache, or another huggingface_hub: no hint
        pass
    raise PretrainedFolderError(
        f"MODEL {model}: no local folder of that name, and the hub cannot be reached "
        f"({why}): check the network or the id, or download the model folder and pass "
        f"its path{cached}"
    )


def _read_config(config_path):
    """config.json as a dict ({} when there is none)."""
    if not config_path or not os.path.isfile(config_path):
        return {}
    with open(config_path, encoding="utf-8") as handle:
        try:
            config = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise PretrainedFolderError(f"{config_path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise PretrainedFolderError(f"{config_path} holds a {type(config).__name__}, not a JSON object")
    return config


def _yaml_value(tree, *keys):
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return None if isinstance(tree, (dict, list)) or str(tree).startswith("!") else tree


def config_disagreements(yaml_path, config, config_path):
    """Where a pretrained folder's yaml disagrees with its config.json (nothing is built).

    Compares what both files state: the sample rate (the yaml's ``sample_rate`` and its
    front-end's), FEFA's placement and its ``rescale`` (``fefa``, ``fefa_rescale``).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "hyperparams.yaml").write("sample_rate: 8000\\n")
    >>> config_disagreements(str(tmp / "hyperparams.yaml"), {"sample_rate": 16000}, "config.json")
    ['sample_rate: 8000 in .../hyperparams.yaml, 16000 in config.json']
    """
    plain = read_plain_hparams(yaml_path)
    stated = [
        ("sample_rate", config.get("sample_rate"), _yaml_value(plain, "sample_rate")),
        ("compute_features.sample_rate", config.get("sample_rate"),
         _yaml_value(plain, "compute_features", "sample_rate")),
        ("embedding_model.fefa", config.get("fefa"), _yaml_value(plain, "embedding_model", "fefa")),
        ("embedding_model.rescale", config.get("fefa_rescale"),
         _yaml_value(plain, "embedding_model", "rescale")),  # FEFAWrapper (ECAPA-TDNN)
        ("embedding_model.fefa_rescale", config.get("fefa_rescale"),
         _yaml_value(plain, "embedding_model", "fefa_rescale")),  # the CNN backbones
    ]
    return [
        f"{key}: {in_yaml!r} in {yaml_path}, {in_config!r} in {config_path}"
        for key, in_config, in_yaml in stated
        if in_config is not None and in_yaml is not None and in_yaml != in_config
    ]


def check_against_config(yaml_path, config, config_path):
    """Refuses a yaml edited so that it disagrees with config.json; warns on other edits.

    Raises
    ------
    PretrainedFolderError
        Naming both files and the values that differ.
    """
    differences = config_disagreements(yaml_path, config, config_path)
    if differences:
        raise PretrainedFolderError(
            f"{yaml_path} disagrees with {config_path} (edited after export?): "
            f"{'; '.join(differences)}. The weights were trained and checked with the "
            "values in config.json: restore hyperparams.yaml, or export the model again"
        )
    expected = config.get("hyperparams_sha256")
    if expected:
        with open(yaml_path, "rb") as handle:
            actual = hashlib.sha256(handle.read()).hexdigest()
        if actual != expected:
            logger.warning(
                "%s was edited after export (its SHA-256 differs from %s's "
                "hyperparams_sha256): using it as it is now", yaml_path, config_path,
            )


def _load_pretrained(model, kind, device, savedir, trust=False):
    """A pretrained folder or hub id through SpeechBrain's from_hparams and fetching."""
    from speechbrain.inference.speaker import SpeakerRecognition
    from speechbrain.utils.fetching import fetch

    local = kind == "pretrained"
    if local:
        yaml_path, config_path = (os.path.join(model, name) for name in ("hyperparams.yaml", "config.json"))
    else:
        _check_hub_reachable(model)
        try:
            yaml_path = str(fetch("hyperparams.yaml", source=model, savedir=savedir))
        except Exception as error:
            raise PretrainedFolderError(
                f"MODEL {model}: the hub model (no local folder of that name) cannot be "
                f"fetched: {type(error).__name__}: {' '.join(str(error).split())}"
            ) from error
        try:
            config_path = str(fetch("config.json", source=model, savedir=savedir))
        except Exception:  # a hub model without config.json: no stored thresholds
            config_path = ""
    check_trusted_yaml(yaml_path, trust)
    config = _read_config(config_path)
    check_against_config(yaml_path, config, config_path or "config.json")
    try:
        loaded = SpeakerRecognition.from_hparams(
            source=model, savedir=None if local else savedir, run_opts={"device": device}
        )
    except (PretrainedFolderError, FileNotFoundError):
        raise
    except Exception as error:
        where = "pretrained folder" if local else "hub model (no local folder of that name)"
        raise PretrainedFolderError(
            f"MODEL {model}: the {where} cannot be loaded: {type(error).__name__}: "
            f"{' '.join(str(error).split())}"
        ) from error
    modules = loaded.mods
    modules.eval()
    sample_rate = int(getattr(loaded.hparams, "sample_rate", config.get("sample_rate", 16000)))
    return LoadedModel(modules, sample_rate, kind, model, model, config, config_path)
