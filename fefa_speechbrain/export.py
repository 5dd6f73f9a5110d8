"""Export a trained experiment to a SpeechBrain pretrained-model folder.

:func:`export_pretrained` turns the output folder of ``train_speaker_embeddings.py``
into a folder laid out like SpeechBrain's hub models (``hyperparams.yaml``, the module
checkpoints, ``label_encoder.ckpt``, ``config.json``, ``README.md``), checked by loading it
back and comparing embeddings before it is moved into place.

Details: ``docs/reference.md`` (fefa_speechbrain.export).
"""

import json
import os
import re
import hashlib
import shutil
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np
import speechbrain
import torch
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, TaggedScalar
from speechbrain.dataio.encoder import CategoricalEncoder

import fefa_speechbrain
from fefa_speechbrain.atomic import fsync_path

# load_checked_state_dict, load_label_encoder: named here by folders exported before 0.2
from fefa_speechbrain.checkpoints import (  # noqa: F401
    PretrainedFolderError,
    load_checked_state_dict,
    load_label_encoder,
)
from fefa_speechbrain.data.trials import read_trials, trial_files
from fefa_speechbrain.inference.embedder import SpeakerEmbedder, find_hparams_file, load_experiment
from fefa_speechbrain.evaluation.metrics import (
    between_scores,
    false_accept_threshold,
    verification_report,
)
from fefa_speechbrain.evaluation.thresholds import (
    csv_speakers,
    rates_at_thresholds,
    threshold_source,
    trial_list_speakers,
)
from fefa_speechbrain.evaluation.verification import cosine_scores
from fefa_speechbrain.hparams import load_hparams

INTERFACE = "SpeakerRecognition"
README_TEMPLATE = "templates/pretrained_README.md"
MODULE_KEYS = ("compute_features", "mean_var_norm", "embedding_model", "classifier")
LOADABLES = ("embedding_model", "classifier", "label_encoder")
REQUIRED_FILES = ("hyperparams.yaml",) + tuple(f"{name}.ckpt" for name in LOADABLES)
GENERATED_KEYS = ("audio_normalizer", "modules", "label_encoder", "pretrainer")
REFERENCE_TAGS = ("!ref", "!copy")
REFERENCE = re.compile(r"<([^<>]*)>")
EMBEDDING_ATOL = 1e-5

INFERENCE_BLOCK = """
# Inference interface (SpeechBrain's EncoderClassifier / SpeakerRecognition)
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

# No `paths`: each loadable is read from <source>/<name>.ckpt, where source is the folder
# given to from_hparams. The hooks refuse missing or mismatching files instead of
# SpeechBrain's default transfer, which only warns.
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    custom_hooks:
        embedding_model: !name:fefa_speechbrain.checkpoints.load_checked_state_dict
        classifier: !name:fefa_speechbrain.checkpoints.load_checked_state_dict
        label_encoder: !name:fefa_speechbrain.checkpoints.load_label_encoder
"""

AUDIO_NORMALIZER_BLOCK = """
# Resampling and down-mixing of the files given to verify_files / classify_file
audio_normalizer: !new:speechbrain.dataio.preprocess.AudioNormalizer
    sample_rate: !ref <sample_rate>
"""


def make_inference_yaml(training_yaml, source="hyperparams.yaml"):
    """The text of an inference ``hyperparams.yaml`` built from a training yaml's text.

    Keeps ``compute_features``, ``mean_var_norm``, ``embedding_model``, ``classifier``
    (and ``sample_rate`` when present) with every top-level key they reach through
    ``!ref``/``!copy`` strings or YAML aliases, in the training yaml's order, then adds
    ``modules``, ``label_encoder`` and a ``pretrainer``.

    Arguments
    ---------
    training_yaml : str
        Text of the training yaml (tags such as ``!new:`` and ``!ref`` are kept as written).
    source : str
        Name of that yaml, for error messages.

    Returns
    -------
    str : the inference yaml.

    Example
    -------
    >>> text = '''
    ... data_folder: /data
    ... width: 4
    ... lin: !new:torch.nn.Linear
    ...     in_features: !ref <width>
    ...     out_features: 2
    ... compute_features: !new:fefa_speechbrain.lobes.features.Spectrogram
    ... mean_var_norm: !new:fefa_speechbrain.lobes.features.FrameNormalization
    ... embedding_model: !new:torch.nn.Sequential [!ref <lin>]
    ... classifier: !new:torch.nn.Linear [2, 3]
    ... '''
    >>> inference = make_inference_yaml(text)
    >>> "data_folder" in inference, "width: 4" in inference
    (False, True)
    >>> hparams = load_hyperpyyaml(inference)
    >>> sorted(hparams["modules"]), hparams["embedding_model"][0] is hparams["lin"]
    (['classifier', 'compute_features', 'embedding_model', 'mean_var_norm'], True)
    """
    yaml = _round_trip_yaml()
    tree = yaml.load(training_yaml)
    if not isinstance(tree, Mapping):
        raise PretrainedFolderError(f"{source} is not a yaml mapping of hyperparameters")
    missing = [key for key in MODULE_KEYS if key not in tree]
    if missing:
        raise PretrainedFolderError(
            f"{source} defines no {missing}: SpeechBrain's speaker interfaces need "
            f"{list(MODULE_KEYS)}"
        )
    roots = list(MODULE_KEYS) + (["sample_rate"] if "sample_rate" in tree else [])
    kept = _closure(tree, roots, source)
    clashes = sorted(set(kept) & set(GENERATED_KEYS))
    if clashes:
        raise PretrainedFolderError(
            f"{source}: the modules use the keys {clashes}, which the pretrained yaml "
            "needs for SpeechBrain's interface; rename them in the training yaml"
        )
    subset = CommentedMap((key, tree[key]) for key in kept)
    with tempfile.SpooledTemporaryFile(mode="w+", encoding="utf-8") as stream:
        yaml.dump(subset, stream)
        stream.seek(0)
        definitions = stream.read()
    blocks = [definitions.rstrip("\n") + "\n", INFERENCE_BLOCK]
    if "sample_rate" in kept:
        blocks.insert(1, AUDIO_NORMALIZER_BLOCK)
    return "".join(blocks)


def _round_trip_yaml():
    yaml = YAML(typ="rt")
    yaml.indent(mapping=4, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def _closure(tree, roots, source):
    """Top-level keys reached from ``roots`` by references and aliases, in file order."""
    owners = {
        id(value): key
        for key, value in tree.items()
        if isinstance(value, (Mapping, list, TaggedScalar))
    }
    kept, pending = set(), list(roots)
    while pending:
        key = pending.pop()
        if key in kept:
            continue
        if key not in tree:
            raise PretrainedFolderError(
                f"{source}: a module refers to <{key}>, which is not defined"
            )
        kept.add(key)
        for node in _walk(tree[key]):
            if node is not tree[key] and id(node) in owners:
                pending.append(owners[id(node)])
            pending.extend(_references(node, key, source))
    return [key for key in tree if key in kept]


def _walk(node):
    """Every node of a ruamel tree once (aliases are the same object)."""
    seen, stack = set(), [node]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _references(node, key, source):
    """Top-level keys named by a ``!ref``/``!copy`` scalar (``<a[b]>``, ``<a.c>`` -> a)."""
    if not isinstance(node, TaggedScalar):
        return []
    tag = node.tag.value
    if tag == "!PLACEHOLDER":
        raise PretrainedFolderError(
            f"{source}: {key} holds a !PLACEHOLDER that was never set; the modules need it"
        )
    if tag not in REFERENCE_TAGS:
        return []
    return [re.split(r"[.\[]", name, maxsplit=1)[0] for name in REFERENCE.findall(str(node.value))]


def check_pretrained_folder(path, device="cpu"):
    """Validates a pretrained folder and returns its loaded hparams.

    Checks that the files are present, that ``hyperparams.yaml`` builds the modules and
    the pretrainer, that every checkpoint fits the modules (keys and shapes), that the
    label file has one label per classifier output, and that a forward pass on a short
    noise signal gives finite embeddings. Raises ``FileNotFoundError`` or
    :class:`PretrainedFolderError` naming the file and the problem.

    Arguments
    ---------
    path : str or Path
        The folder (as written by :func:`export_pretrained`).
    device : str
        Where to run the check.

    Returns
    -------
    dict : the hparams of ``hyperparams.yaml``, parameters loaded, modules in eval mode.

    Example
    -------
    >>> check_pretrained_folder(getfixture("tmpdir"))
    Traceback (most recent call last):
    ...
    FileNotFoundError: ... is not a complete pretrained-model folder: hyperparams.yaml,
    embedding_model.ckpt, classifier.ckpt, label_encoder.ckpt missing
    """
    return _load_and_check(Path(path), device)[0]


def _load_and_check(folder, device):
    """check_pretrained_folder's work; also returns the embeddings of :func:`probe_batch`."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a directory (expected a pretrained-model folder)")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a complete pretrained-model folder: {', '.join(missing)} missing"
        )
    hparams = _load_inference_hparams(folder / "hyperparams.yaml")
    pretrainer = hparams["pretrainer"]
    pretrainer.collect_files(default_source=str(folder))
    pretrainer.load_collected()
    for module in hparams["modules"].values():
        module.to(device).eval()
    return hparams, _check_forward(folder, hparams, device)


def _load_inference_hparams(yaml_path):
    try:
        with open(yaml_path, encoding="utf-8") as fin:
            hparams = load_hyperpyyaml(fin)
    except Exception as error:
        raise PretrainedFolderError(
            f"{yaml_path} cannot be loaded: {type(error).__name__}: {error}"
        ) from error
    absent = [key for key in ("modules", "pretrainer", "label_encoder") if key not in hparams]
    absent += [f"modules.{key}" for key in MODULE_KEYS if key not in hparams.get("modules", {})]
    if absent:
        raise PretrainedFolderError(f"{yaml_path} lacks {absent}")
    return hparams


def _check_forward(folder, hparams, device):
    """One forward pass: finite embeddings, one label per classifier output.

    Returns the embeddings of :func:`probe_batch`.
    """
    wavs, lengths = probe_batch(hparams.get("sample_rate", 16000))
    embeddings = SpeakerEmbedder(hparams["modules"], device).embed(wavs, lengths)
    if not torch.isfinite(embeddings).all():
        raise PretrainedFolderError(
            f"{folder / 'embedding_model.ckpt'} gives non-finite embeddings (NaN/inf weights?)"
        )
    with torch.no_grad():
        logits = hparams["modules"]["classifier"](embeddings.unsqueeze(1).to(device))
    n_labels = len(hparams["label_encoder"])
    if logits.shape[-1] != n_labels:
        raise PretrainedFolderError(
            f"{folder / 'label_encoder.ckpt'} holds {n_labels} speakers but "
            f"{folder / 'classifier.ckpt'} scores {logits.shape[-1]}"
        )
    return embeddings


def probe_batch(sample_rate=16000):
    """A fixed padded batch of two noise signals (1.0 s and 0.7 s) with relative lengths.

    Example
    -------
    >>> wavs, lengths = probe_batch(100)
    >>> wavs.shape, (lengths * 100).round().tolist(), bool(wavs[1, 70:].abs().sum() == 0)
    (torch.Size([2, 100]), [100.0, 70.0], True)
    """
    generator = torch.Generator().manual_seed(0)
    wavs = 0.1 * torch.randn(2, sample_rate, generator=generator)
    short = int(0.7 * sample_rate)
    wavs[1, short:] = 0.0
    return wavs, torch.tensor([1.0, short / sample_rate])


def export_pretrained(
    experiment_folder,
    out_dir,
    overwrite=False,
    device="cpu",
    threshold_trials=None,
    audio_root=None,
    batch_size=16,
    threshold_speakers="auto",
    test_trials=None,
    test_audio_root=None,
    threshold_held_out=False,
):
    """Writes the best checkpoint of a training run as a SpeechBrain pretrained folder.

    Arguments
    ---------
    experiment_folder : str or Path
        The ``output_folder`` of ``train_speaker_embeddings.py`` (``hyperparams.yaml``,
        ``save/CKPT+*``, ``save/label_encoder.txt``).
    out_dir : str or Path
        The folder to create. Built next to it under a hidden name and renamed when
        complete and checked: an interrupted export leaves no ``out_dir``.
    overwrite : bool
        Replace an existing ``out_dir`` (only an earlier export or an empty folder).
    device : str
        Where to load and check the model.
    threshold_trials : str
        Optional trial list (``label enrol test``), best of speakers not used in
        training (the recipe's ``threshold_trials.txt``): the EER threshold and the 1 %
        false-accept threshold of the model on it are stored in ``config.json``
        (``thresholds``, see :func:`decision_thresholds`), for ``fefa-speechbrain verify``.
        Their descriptions say which speakers the trials are of.
    audio_root : str
        Folder the paths of ``threshold_trials`` are relative to (default: its folder).
    batch_size : int
        Files per forward pass when embedding trial lists.
    threshold_speakers : str
        ``"auto"``: the speakers of ``threshold_trials`` (first folder of each path) are
        compared with the training CSV's (``train_annotation``); ``"unseen"`` or
        ``"training"``: as declared (checked against the CSV when it is there).
    test_trials : str
        Optional test trial list: the false-accept and miss rates the stored
        thresholds give on it (and its EER) go into ``config.json`` (``test_rates``)
        and the card.
    test_audio_root : str
        Folder the paths of ``test_trials`` are relative to (default: its folder).
    threshold_held_out : bool
        ``threshold_trials`` is a preparation's ``threshold_trials.txt``: speakers held
        out of training on purpose (``n_threshold_speakers``). Checked as ``"unseen"``
        against the training CSV (a stale list is refused), and described as "trials of
        N held-out speakers unseen in training".

    Returns
    -------
    Path : ``out_dir``.

    Example
    -------
    >>> exp = getfixture("tmpdir").mkdir("exp")
    >>> _ = exp.join("hyperparams.yaml").write(f'''
    ... save_folder: {exp}/save
    ... emb_dim: 8
    ... compute_features: !new:fefa_speechbrain.lobes.features.Spectrogram
    ... mean_var_norm: !new:fefa_speechbrain.lobes.features.FrameNormalization
    ... ecapa: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    ...     input_size: 257
    ...     channels: [8, 8, 8, 8, 24]
    ...     attention_channels: 4
    ...     lin_neurons: !ref <emb_dim>
    ... embedding_model: !new:fefa_speechbrain.lobes.wrapper.FEFAWrapper
    ...     model: !ref <ecapa>
    ...     n_bins: 257
    ... classifier: !new:fefa_speechbrain.lobes.classifier.SpeakerClassifier
    ...     input_size: !ref <emb_dim>
    ...     n_speakers: 2
    ... modules:
    ...     compute_features: !ref <compute_features>
    ...     mean_var_norm: !ref <mean_var_norm>
    ...     embedding_model: !ref <embedding_model>
    ...     classifier: !ref <classifier>
    ... checkpointer: !new:speechbrain.utils.checkpoints.Checkpointer
    ...     checkpoints_dir: !ref <save_folder>
    ...     recoverables: {{embedding_model: !ref <embedding_model>, classifier: !ref <classifier>}}
    ... ''')
    >>> hparams = load_hparams(f"{exp}/hyperparams.yaml")
    >>> _ = hparams["checkpointer"].save_checkpoint(meta={"ErrorRate": 0.1})
    >>> labels = CategoricalEncoder()
    >>> labels.update_from_iterable(["spk1", "spk2"])
    >>> labels.save(f"{exp}/save/label_encoder.txt")
    >>> folder = export_pretrained(exp, exp.dirpath("pretrained"))
    >>> sorted(p.name for p in folder.iterdir())
    ['README.md', 'classifier.ckpt', 'config.json', 'embedding_model.ckpt',
     'hyperparams.yaml', 'label_encoder.ckpt']
    >>> from speechbrain.inference.speaker import SpeakerRecognition
    >>> model = SpeakerRecognition.from_hparams(source=str(folder), savedir=None)
    >>> model.encode_batch(torch.randn(1, 16000)).shape
    torch.Size([1, 1, 8])
    """
    out_dir = Path(out_dir).absolute()
    _check_destination(out_dir, overwrite)
    hparams_file = find_hparams_file(experiment_folder)
    trials = read_trials(threshold_trials, audio_root) if threshold_trials else None
    tests = read_trials(test_trials, test_audio_root) if test_trials else None
    with open(hparams_file, encoding="utf-8") as fin:
        inference_yaml = make_inference_yaml(fin.read(), source=hparams_file)
    hparams, checkpoint = load_experiment(experiment_folder, device=device)
    label_file = _label_file(hparams, hparams_file)
    probe = probe_batch(hparams.get("sample_rate", 16000))
    expected = SpeakerEmbedder(hparams["modules"], device).embed(*probe)
    config = _config(experiment_folder, hparams, checkpoint, expected.shape[-1])
    embedder = SpeakerEmbedder(hparams["modules"], device)
    training = csv_speakers(hparams.get("train_annotation"))
    if trials is not None:
        root = audio_root or os.path.dirname(os.path.abspath(threshold_trials))
        name = os.path.basename(threshold_trials)
        declared = "unseen" if threshold_held_out else threshold_speakers
        source = threshold_source(name, trial_list_speakers(trials, root), training, declared)
        if threshold_held_out:
            source["phrase"] = (
                f"trials of {source['n_speakers']} held-out speakers unseen in training: {name}"
            )
        config["thresholds"] = decision_thresholds(
            embedder, trials, os.path.basename(threshold_trials), batch_size,
            hparams.get("sample_rate", 16000), source=source,
        )
    if tests is not None:
        root = test_audio_root or os.path.dirname(os.path.abspath(test_trials))
        source = threshold_source(os.path.basename(test_trials), trial_list_speakers(tests, root),
                                  training)
        config["test_rates"] = measure_test_rates(
            embedder, tests, source, config.get("thresholds", {}), batch_size,
            hparams.get("sample_rate", 16000),
        )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        staging.chmod(_default_dir_mode())
        _write_folder(staging, inference_yaml, hparams["modules"], label_file, config)
        _, actual = _load_and_check(staging, device)
        _check_same_embeddings(expected, actual, staging)
        for path in [*staging.iterdir(), staging]:
            fsync_path(path)
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _check_destination(out_dir, overwrite):
    if not out_dir.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    is_export = (out_dir / "hyperparams.yaml").is_file() and (out_dir / "config.json").is_file()
    if not out_dir.is_dir() or not (is_export or not any(out_dir.iterdir())):
        raise FileExistsError(
            f"{out_dir} exists and is not an earlier export (no hyperparams.yaml and "
            "config.json): refusing to replace it"
        )


def _label_file(hparams, hparams_file):
    if "save_folder" not in hparams:
        raise PretrainedFolderError(
            f"{hparams_file} has no save_folder: where is label_encoder.txt?"
        )
    path = Path(hparams["save_folder"]) / "label_encoder.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the training run writes the speaker labels there "
            "(needed for classify_batch)"
        )
    return path


def _config(experiment_folder, hparams, checkpoint, embedding_dim):
    """config.json: SpeechBrain's interface name plus what the model is and where from."""
    meta = {
        key: value
        for key, value in checkpoint.meta.items()
        if isinstance(value, (str, int, float, bool)) or value is None
    }
    return {
        "speechbrain_interface": INTERFACE,
        "model_name": hparams.get("model_name", "speaker_embeddings"),
        "embedding_model": type(hparams["modules"]["embedding_model"]).__name__,
        "fefa": hparams.get("fefa"),
        "dataset": hparams.get("corpus") or "custom",
        "embedding_dim": int(embedding_dim),
        "n_speakers": hparams.get("n_speakers"),
        "sample_rate": hparams.get("sample_rate", 16000),
        "fefa_rescale": hparams.get("fefa_rescale"),
        "source_experiment": Path(experiment_folder).absolute().name,
        "checkpoint": checkpoint.path.name,
        "checkpoint_meta": meta,
        "fefa_speechbrain_version": fefa_speechbrain.__version__,
        "speechbrain_version": speechbrain.__version__,
    }


def decision_thresholds(embedder, trials, name, batch_size=16, sample_rate=16000, source=None):
    """The EER and 1 % false-accept thresholds of cosine scores on a trial list.

    Arguments
    ---------
    embedder : SpeakerEmbedder
        The model.
    trials : list of Trial
        With absolute paths (:func:`~fefa_speechbrain.data.trials.read_trials`).
    name : str
        How the list is named in the descriptions (no local path).
    batch_size, sample_rate : int
        As for :meth:`SpeakerEmbedder.embed_files`.
    source : dict
        Which speakers the trials are of (:func:`~fefa_speechbrain.evaluation.thresholds.threshold_source`);
        None: "trials {name} (speakers not checked)".

    Returns
    -------
    dict : ``eer`` and ``far_1pct`` -> ``{"value", "description"}``, plus ``trials``
    (name, counts, the kind of speakers and their number).
    """
    phrase = source["phrase"] if source else f"trials {name} (speakers not checked)"
    embeddings = embedder.embed_files(trial_files(trials), batch_size, sample_rate)
    scores = cosine_scores(embeddings, trials)
    labels = np.array([trial.label for trial in trials])
    report = verification_report(scores, labels)
    far_threshold, far = false_accept_threshold(scores, labels, 0.01)
    counts = f"{report['n_target']} target / {report['n_nontarget']} non-target trials"
    return {
        "eer": {
            "value": between_scores(scores, report["eer_threshold"]),
            "description": f"EER threshold on {phrase} ({counts}; "
            f"EER {100 * report['eer']:.2f} %)",
        },
        "far_1pct": {
            "value": between_scores(scores, far_threshold),
            "description": f"1 % false-accept threshold on {phrase} "
            f"({counts}; false accepts {100 * far:.2f} %)",
        },
        "trials": {"name": name, "n_target": report["n_target"], "n_nontarget": report["n_nontarget"],
                   "speakers": source["kind"] if source else "unchecked",
                   "n_speakers": source["n_speakers"] if source else None},
    }


def measure_test_rates(embedder, trials, source, thresholds, batch_size=16, sample_rate=16000):
    """What the stored thresholds give on test trials: false-accept and miss rates, and the EER.

    Returns
    -------
    dict : ``trials`` (name, counts, speakers), ``eer`` (fraction) and
    ``at_thresholds``: per stored threshold ``{"false_accept", "miss"}`` (fractions).
    """
    embeddings = embedder.embed_files(trial_files(trials), batch_size, sample_rate)
    scores = cosine_scores(embeddings, trials)
    labels = np.array([trial.label for trial in trials])
    report = verification_report(scores, labels)
    values = {key: entry["value"] for key, entry in thresholds.items() if key in ("eer", "far_1pct")}
    name = source["phrase"].rsplit(": ", 1)[-1]
    return {
        "trials": {"name": name, "n_target": report["n_target"], "n_nontarget": report["n_nontarget"],
                   "speakers": source["kind"], "n_speakers": source["n_speakers"],
                   "description": source["phrase"]},
        "eer": float(report["eer"]),
        "at_thresholds": rates_at_thresholds(scores, labels, values),
    }


def _write_folder(folder, inference_yaml, modules, label_file, config):
    header = _yaml_header(config)
    (folder / "hyperparams.yaml").write_text(header + inference_yaml, encoding="utf-8")
    # lets a loader tell an edited yaml (model_source.check_against_config)
    config["hyperparams_sha256"] = hashlib.sha256((header + inference_yaml).encode("utf-8")).hexdigest()
    for key in ("embedding_model", "classifier"):
        state = {name: tensor.detach().cpu() for name, tensor in modules[key].state_dict().items()}
        torch.save(state, folder / f"{key}.ckpt")
    shutil.copyfile(label_file, folder / "label_encoder.ckpt")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(_readme(config), encoding="utf-8")


def _yaml_header(config):
    return (
        "# ############################################################################\n"
        f"# Pretrained {config['model_name']} ({config['embedding_model']}, FEFA: "
        f"{config['fefa']}), {config['embedding_dim']}-d speaker embeddings\n"
        f"# Exported by fefa_speechbrain.export from {config['source_experiment']}\n"
        f"# checkpoint {config['checkpoint']}, "
        f"ErrorRate {config['checkpoint_meta'].get('ErrorRate')}\n"
        "# Load: SpeakerRecognition.from_hparams(source=<this folder>, savedir=None)\n"
        "# ############################################################################\n\n"
    )


def _readme(config):
    """The exported folder's README.md, from ``templates/pretrained_README.md``."""
    template = resources.files("fefa_speechbrain").joinpath(README_TEMPLATE).read_text("utf-8")
    error_rate = config["checkpoint_meta"].get("ErrorRate")
    lines = [
        "| measure | value |",
        "|---|---|",
        f"| validation classification error (training speakers) | {error_rate} |",
    ]
    for threshold in ("eer", "far_1pct"):
        if threshold in config.get("thresholds", {}):
            entry = config["thresholds"][threshold]
            lines.append(f"| {entry['description']} | cosine {entry['value']:.4f} |")
    if "thresholds" not in config:
        lines.append("| decision thresholds | not stored (export with `--threshold_trials`) |")
    lines += ["", *threshold_rates_table(config)]
    dataset = config.get("dataset") or "custom"
    return template.format(config=config, results="\n".join(lines), dataset=dataset)


def threshold_rates_table(config):
    """The card's lines on what the stored thresholds give on the test trials.

    Example
    -------
    >>> config = {"thresholds": {"far_1pct": {"value": 0.403}}, "test_rates": {
    ...     "trials": {"description": "trials of 40 speakers not used in training: t.txt",
    ...                "n_target": 10, "n_nontarget": 10},
    ...     "eer": 0.078, "at_thresholds": {"far_1pct": {"false_accept": 0.0166, "miss": 0.2}}}}
    >>> print("\\n".join(threshold_rates_table(config)))
    What the stored thresholds give on the test trials (trials of 40 speakers not used in
    training: t.txt; 10 target / 10 non-target; EER there 7.80 %):
    <BLANKLINE>
    | stored threshold | false accepts | misses |
    |---|---|---|
    | far_1pct (cosine 0.4030) | 1.66 % | 20.00 % |
    """
    rates, thresholds = config.get("test_rates"), config.get("thresholds", {})
    if not thresholds:
        return []
    if not rates:
        return ["False-accept and miss rates of these thresholds on test speakers: not measured "
                "(export with `--test_trials`)."]
    trials = rates["trials"]
    lines = [
        f"What the stored thresholds give on the test trials ({trials['description']}; "
        f"{trials['n_target']} target / {trials['n_nontarget']} non-target; EER there "
        f"{100 * rates['eer']:.2f} %):",
        "",
        "| stored threshold | false accepts | misses |",
        "|---|---|---|",
    ]
    for name, at in rates["at_thresholds"].items():
        value = thresholds[name]["value"]
        lines.append(f"| {name} (cosine {value:.4f}) | {100 * at['false_accept']:.2f} % | "
                     f"{100 * at['miss']:.2f} % |")
    return lines


def _check_same_embeddings(expected, actual, folder):
    """The exported modules must embed exactly as the experiment's own."""
    if actual.shape != expected.shape or not torch.allclose(actual, expected, atol=EMBEDDING_ATOL):
        raise PretrainedFolderError(
            f"{folder / 'hyperparams.yaml'} rebuilds a model whose embeddings differ from "
            "the experiment's: a hyperparameter of the modules was not carried over"
        )


def _default_dir_mode():
    """The mode os.mkdir would give (mkdtemp makes private 0o700 folders)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o777 & ~umask


def _move_into_place(staging, out_dir):
    """Renames staging to out_dir, replacing an earlier export only once the new one is whole."""
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    previous = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.previous-", dir=out_dir.parent))
    os.rename(out_dir, previous / out_dir.name)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        os.rename(previous / out_dir.name, out_dir)
        raise
    finally:
        if out_dir.exists():
            shutil.rmtree(previous, ignore_errors=True)
