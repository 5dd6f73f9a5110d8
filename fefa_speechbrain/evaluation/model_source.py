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

import json
import os
import re
from dataclasses import dataclass, field

from fefa_speechbrain.checkpoints import PretrainedFolderError
from fefa_speechbrain.evaluation.inference import load_experiment

PRETRAINED_FILES = ("hyperparams.yaml", "embedding_model.ckpt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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
    """

    modules: object
    sample_rate: int
    kind: str
    source: str
    checkpoint: str
    config: dict = field(default_factory=dict)

    @property
    def thresholds(self):
        """name -> {"value", "description"}: the stored decision thresholds."""
        return dict(self.config.get("thresholds", {}))


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
    FileNotFoundError: MODEL .../nothing_here: no such folder (and not a hub id 'owner/name')
    """
    model = os.fspath(model)
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
    if HUB_ID.match(model) and not model.startswith(("./", "../")):
        return "hub"
    raise FileNotFoundError(f"MODEL {model}: no such folder (and not a hub id 'owner/name')")


def load_model(model, device="cpu", savedir=None):
    """Loads a training run, a pretrained folder or a hub id, ready to embed.

    Arguments
    ---------
    model : str
        The MODEL (see :func:`model_kind`).
    device : str
        Where the modules go.
    savedir : str
        Where a hub model is fetched to (default: SpeechBrain's choice); a local
        pretrained folder is always read in place.

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
    model = os.fspath(model)
    kind = model_kind(model)
    if kind == "experiment":
        hparams, checkpoint = load_experiment(model, device=device)
        return LoadedModel(
            hparams["modules"], hparams.get("sample_rate", 16000), kind, model, str(checkpoint.path)
        )
    return _load_pretrained(model, kind, device, savedir)


def _load_pretrained(model, kind, device, savedir):
    """A pretrained folder or hub id through SpeechBrain's from_hparams and fetching."""
    from speechbrain.inference.speaker import SpeakerRecognition
    from speechbrain.utils.fetching import fetch

    local = kind == "pretrained"
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
    config_path = os.path.join(model, "config.json")
    if not local:
        try:
            config_path = str(fetch("config.json", source=model, savedir=savedir))
        except Exception:  # a hub model without config.json: no stored thresholds
            config_path = ""
    config = {}
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as handle:
            try:
                config = json.load(handle)
            except json.JSONDecodeError as error:
                raise PretrainedFolderError(f"{config_path} is not valid JSON: {error}") from error
    modules = loaded.mods
    modules.eval()
    sample_rate = int(getattr(loaded.hparams, "sample_rate", config.get("sample_rate", 16000)))
    return LoadedModel(modules, sample_rate, kind, model, model, config)
