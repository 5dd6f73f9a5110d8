"""An output folder belongs to one experiment: a lock, an identity check, a batch check.

The training script calls, in order: :class:`ExperimentLock` (one run per folder for the
whole run; the lock of a dead process is taken over), :func:`hparams_differences` and
:func:`corpus_differences` (a rerun into an existing folder must be the same experiment,
or it is refused before anything is written; ``--overwrite`` moves the old one aside)
and :func:`check_batches` (every stage has at least one batch). What counts as "the same
experiment" is :data:`RESUMABLE_KEYS`: every other value of the yaml is identity.
"""

import csv
import datetime
import hashlib
import json
import logging
import os
import socket
import time

import yaml
from hyperpyyaml import resolve_references

from fefa_speechbrain.atomic import atomic_write_json, atomic_write_text
from fefa_speechbrain.hparams import (
    add_override,
    parse_overrides,
    plain_hparams,
    pop_override,
    read_plain_hparams,
)

logger = logging.getLogger(__name__)

LOCK_NAME = "experiment.lock"
CORPUS_RECORD = "corpus.json"
REPLACED_PREFIX = "replaced-"
# Keys that may differ between a run and its resumption: how long and how fast it
# runs, and where files are (the data themselves are compared through the corpus).
RESUMABLE_KEYS = frozenset({
    "number_of_epochs", "num_workers", "prep_jobs", "check_audio", "skip_prep",
    "data_folder", "verification_file", "test_speakers", "prep_folder",
    "train_annotation", "valid_annotation", "output_folder", "save_folder", "train_log",
    "n_speakers",  # compared as the label set
    # objects built from the keys above, or that only log and save
    "epoch_counter", "lr_annealing", "train_logger", "checkpointer",
    "train_dataloader_options", "valid_dataloader_options",
})
CORPUS_FILES = ("train_annotation", "valid_annotation")  # the hparams naming the corpus
# Keys added to the yamls after experiments were saved without them: an experiment that
# lacks one ran with this value (so it resumes with it, and another value is a difference).
ADDED_KEYS = {"n_threshold_speakers": 0}
CORPUS_COLUMNS = ("ID", "spk_id", "duration", "start", "stop")
MAX_LISTED = 10


class ExperimentError(RuntimeError):
    """The output folder holds another experiment, or is in use by another run."""


class _AlreadyHeld(Exception):
    pass


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ExperimentLock:
    """Holds ``<folder>/experiment.lock`` (the PID and host of the run) until released.

    A second run refuses to start while the holder lives; the lock of a process that no
    longer exists (a killed run) is taken over. Only one of several runs racing for a
    stale lock gets it.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / LOCK_NAME).write(f"1 {socket.gethostname()}\\n")  # PID 1 always runs
    >>> ExperimentLock(str(tmp)).acquire()
    Traceback (most recent call last):
    ...
    fefa_speechbrain.experiment.ExperimentError: .../experiment.lock: the output folder ... is in use by another run (PID 1)...
    >>> _ = (tmp / LOCK_NAME).write(f"999999999 {socket.gethostname()}\\n")  # no such process
    >>> lock = ExperimentLock(str(tmp)).acquire()
    >>> (tmp / LOCK_NAME).read().split()[0] == str(os.getpid())
    True
    >>> lock.release()
    >>> os.path.exists(tmp / LOCK_NAME)
    False
    """

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self.held = False

    def _owner(self):
        try:
            with open(self.path, encoding="utf-8") as handle:
                fields = handle.read().split()
        except FileNotFoundError:
            return None
        pid = int(fields[0]) if fields and fields[0].isdigit() else None
        host = fields[1] if len(fields) > 1 else None
        return pid, host

    def acquire(self):
        """Takes the lock; raises :class:`ExperimentError` naming the holder's PID."""
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as error:
            raise ExperimentError(
                f"{self.folder}: cannot create the output folder: {error.strerror or error}"
            ) from error
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    self._take_over_if_stale()
                except _AlreadyHeld:
                    return self  # this process holds it already (not released by us)
                continue
            except OSError as error:
                raise ExperimentError(
                    f"{self.path}: cannot create the lock file: {error.strerror or error}"
                ) from error
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(me)
            self.held = True
            return self
        raise ExperimentError(f"{self.path}: could not take the lock (other runs raced for it)")

    def _take_over_if_stale(self):
        owner = self._owner()
        if owner is None:
            return  # released meanwhile: try again
        pid, host = owner
        same_host = host in (None, socket.gethostname())
        if same_host and pid == os.getpid():
            raise _AlreadyHeld()
        if pid is not None and (not same_host or _process_alive(pid)):
            where = "" if same_host else f" on host {host}"
            raise ExperimentError(
                f"{self.path}: the output folder {self.folder} is in use by another run "
                f"(PID {pid}{where}). Wait for it to finish, or choose another "
                "--output_folder; if that run is dead, delete the lock file."
            )
        stale = f"{self.path}.stale-{os.getpid()}"
        try:
            os.rename(self.path, stale)  # only one racer succeeds
        except FileNotFoundError:
            return
        logger.warning("Taking over the lock of PID %s, which no longer runs: %s", pid, self.path)
        os.remove(stale)

    def release(self):
        """Removes the lock file if this process holds it."""
        if self.held and self._owner() is not None and self._owner()[0] == os.getpid():
            os.remove(self.path)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _flatten(value, prefix):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if key != "!" else f"{prefix}(class)")
    else:
        yield prefix, value


def hparams_differences(saved, new):
    """The identity values that differ between two experiments, as ``key: old -> new``.

    ``saved`` and ``new`` are :func:`fefa_speechbrain.hparams.plain_hparams` dicts.
    Every key counts except :data:`RESUMABLE_KEYS`; a module (a tagged object) counts
    with its class and every argument.

    Example
    -------
    >>> hparams_differences({"width": 1.0, "number_of_epochs": 10}, {"width": 0.5, "number_of_epochs": 20})
    ['width: 1.0 -> 0.5']
    >>> hparams_differences({"net": {"!": "new:A", "k": 3}}, {"net": {"!": "new:B", "k": 3}})
    ['net(class): new:A -> new:B']
    >>> hparams_differences({}, {"n_threshold_speakers": 0})  # saved before the key existed
    []
    """
    saved = {**{key: value for key, value in ADDED_KEYS.items() if key in new}, **saved}
    old_flat, new_flat = {}, {}
    for source, flat in ((saved, old_flat), (new, new_flat)):
        for key, value in source.items():
            if key not in RESUMABLE_KEYS:
                flat.update(_flatten(value, key))
    missing = "(absent)"
    return [
        f"{key}: {old_flat.get(key, missing)} -> {new_flat.get(key, missing)}"
        for key in dict.fromkeys([*old_flat, *new_flat])
        if old_flat.get(key, missing) != new_flat.get(key, missing)
    ]


def corpus_fingerprint(csv_path):
    """A digest of a SpeechBrain CSV's chunks (ID, speaker, duration, start, stop), in
    any row order and wherever the audio lives; and the sorted speakers.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "a.csv").write("ID,duration,wav,start,stop,spk_id\\nu1,1.0,/x/u1.wav,0,16000,s1\\n")
    >>> _ = (tmp / "b.csv").write("ID,duration,wav,start,stop,spk_id\\nu1,1.0,/y/u1.wav,0,16000,s1\\n")
    >>> corpus_fingerprint(str(tmp / "a.csv")) == corpus_fingerprint(str(tmp / "b.csv"))
    True
    """
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = sorted(
            "\t".join(str(row.get(column, "")) for column in CORPUS_COLUMNS)
            for row in csv.DictReader(handle)
        )
    speakers = sorted({row.split("\t")[1] for row in rows})
    digest = hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()
    return {"sha256": digest, "chunks": len(rows), "speakers": len(speakers)}, speakers


def saved_labels(label_file):
    """The speaker labels of a saved ``label_encoder.txt`` (None when there is none)."""
    if not os.path.isfile(label_file):
        return None
    labels = []
    with open(label_file, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("=" * 5):
                break
            if "=>" in line:
                labels.append(line.split("=>")[0].strip().strip("'\""))
    return labels


def _examples(items):
    items = sorted(items)
    more = f" and {len(items) - 3} more" if len(items) > 3 else ""
    return ", ".join(items[:3]) + more


def corpus_differences(output_folder, label_file, annotations):
    """How the prepared corpus differs from the one the experiment was trained on.

    Arguments
    ---------
    output_folder : str
        The experiment; its ``corpus.json`` (written by :func:`record_corpus`) holds the
        fingerprints of the first run's CSVs.
    label_file : str
        The experiment's ``label_encoder.txt``.
    annotations : dict
        ``{"train_annotation": path, "valid_annotation": path}`` of the new run.

    Returns
    -------
    list of str
        Empty when the corpus (or, for an experiment without ``corpus.json``, its
        speaker set) is the same.
    """
    problems = []
    fingerprints = {key: corpus_fingerprint(path) for key, path in annotations.items()}
    labels = saved_labels(label_file)
    train_speakers = fingerprints.get("train_annotation", (None, None))[1]
    if labels is not None and train_speakers is not None and set(labels) != set(train_speakers):
        gone, new = set(labels) - set(train_speakers), set(train_speakers) - set(labels)
        parts = []
        if gone:
            parts.append(f"{len(gone)} only in the saved {label_file} ({_examples(gone)})")
        if new:
            parts.append(f"{len(new)} only in the new training CSV ({_examples(new)})")
        problems.append("speakers: " + "; ".join(parts))
    record_path = os.path.join(output_folder, CORPUS_RECORD)
    if os.path.isfile(record_path):
        with open(record_path, encoding="utf-8") as handle:
            record = json.load(handle)
        for key, (fingerprint, _) in fingerprints.items():
            old = record.get(key)
            if old is not None and old["sha256"] != fingerprint["sha256"]:
                problems.append(
                    f"{key}: other chunks ({old['chunks']} chunks of {old['speakers']} "
                    f"speakers before, {fingerprint['chunks']} of {fingerprint['speakers']} now)"
                )
    return problems


def record_corpus(output_folder, annotations):
    """Writes ``<output_folder>/corpus.json``: the fingerprints of the training CSVs."""
    record = {key: corpus_fingerprint(path)[0] for key, path in annotations.items()}
    atomic_write_json(os.path.join(output_folder, CORPUS_RECORD), record)


def has_experiment(output_folder):
    """True when the folder holds a trained or started experiment."""
    save = os.path.join(output_folder, "save")
    return os.path.isfile(os.path.join(output_folder, "hyperparams.yaml")) or (
        os.path.isdir(save) and any(name != LOCK_NAME for name in os.listdir(save))
    )


def refuse_or_replace(output_folder, differences, overwrite):
    """Refuses a rerun that is another experiment, or moves the old one aside.

    With ``overwrite``, everything in the folder but the lock and earlier replaced
    experiments moves into ``<output_folder>/replaced-<time>/``: nothing is deleted.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "hyperparams.yaml").write("width: 1.0\\n")
    >>> refuse_or_replace(str(tmp), ["width: 1.0 -> 0.5"], overwrite=False)
    Traceback (most recent call last):
    ...
    fefa_speechbrain.experiment.ExperimentError: ...: holds another experiment; this run differs in:
      width: 1.0 -> 0.5
    Resume it with the same values, choose another --output_folder, or add --overwrite (moves the old experiment to .../replaced-<time>/).
    >>> moved = refuse_or_replace(str(tmp), ["width: 1.0 -> 0.5"], overwrite=True)
    >>> sorted(os.listdir(moved)), os.path.exists(tmp / "hyperparams.yaml")
    (['REPLACED.txt', 'hyperparams.yaml'], False)
    """
    if not differences:
        return None
    if not overwrite:
        shown = "\n  ".join(differences[:MAX_LISTED])
        extra = len(differences) - MAX_LISTED
        more = f"\n  ... and {extra} more" if extra > 0 else ""
        raise ExperimentError(
            f"{output_folder}: holds another experiment; this run differs in:\n  {shown}{more}\n"
            "Resume it with the same values, choose another --output_folder, or add "
            f"--overwrite (moves the old experiment to {output_folder}/{REPLACED_PREFIX}<time>/)."
        )
    target = os.path.join(output_folder, REPLACED_PREFIX + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(target)
    for name in os.listdir(output_folder):
        if name == LOCK_NAME or name.startswith(REPLACED_PREFIX):
            continue
        os.replace(os.path.join(output_folder, name), os.path.join(target, name))
    reason = "Replaced (--overwrite) because:\n" + "\n".join(differences) + "\n"
    atomic_write_text(os.path.join(target, "REPLACED.txt"), reason)
    logger.warning("--overwrite: the previous experiment moved to %s", target)
    return target


def count_chunks(csv_path):
    """Rows of a SpeechBrain CSV (its examples)."""
    with open(csv_path, newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def check_batches(stage, csv_path, loader_options, world_size=1):
    """Refuses a stage that would run no batch at all, saying how to fix it.

    Arguments
    ---------
    stage : str
        ``"train"`` or ``"valid"``, for the message.
    csv_path : str
        The stage's SpeechBrain CSV (one example a row).
    loader_options : dict
        The dataloader options (``batch_size``, ``drop_last``).
    world_size : int
        Processes sharing the data (DDP).

    Returns
    -------
    int
        Batches per epoch and process.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "train.csv").write("ID,spk_id\\n" + "".join(f"u{i},s{i % 3}\\n" for i in range(15)))
    >>> check_batches("train", str(tmp / "train.csv"), {"batch_size": 8, "drop_last": True})
    1
    >>> check_batches("train", str(tmp / "train.csv"), {"batch_size": 64, "drop_last": True})
    Traceback (most recent call last):
    ...
    ValueError: .../train.csv: 15 train chunks make no batch of batch_size=64 (drop_last drops incomplete batches): training would run 0 steps. Lower --batch_size to 15 or less, or add data (more files, a shorter --seg_dur).
    """
    n_items = count_chunks(csv_path)
    batch_size = int(loader_options.get("batch_size", 1) or 1)
    per_process = n_items // max(int(world_size), 1)
    if loader_options.get("drop_last", False):
        batches = per_process // batch_size
    else:
        batches = -(-per_process // batch_size)
    if batches > 0:
        return batches
    if per_process == 0:
        fix = (
            "give the dev split a share (e.g. --split_ratio=[90,10]) and check the "
            "preparation report (prepare_report.json)"
            if stage == "valid"
            else "check the preparation report (prepare_report.json): were files skipped?"
        )
        processes = f" for {world_size} processes" if world_size > 1 else ""
        raise ValueError(
            f"{csv_path}: {n_items} {stage} chunks{processes}: the {stage} stage would run "
            f"0 batches; {fix}"
        )
    processes = f" over {world_size} processes" if world_size > 1 else ""
    raise ValueError(
        f"{csv_path}: {n_items} {stage} chunks{processes} make no batch of batch_size="
        f"{batch_size} (drop_last drops incomplete batches): training would run 0 steps. "
        f"Lower --batch_size to {per_process} or less, or add data (more files, a "
        "shorter --seg_dur)."
    )


def _with_values(overrides, values):
    """``overrides`` with ``values`` set (replacing any earlier value of those keys)."""
    for key, value in values.items():
        _, overrides = pop_override(overrides, key)
        overrides = add_override(overrides, key, value)
    return overrides


def rerun_differences(output_folder, hparams_file, overrides=None, annotations=None,
                      label_file=None):
    """Every way a run differs from the experiment already in ``output_folder``.

    The run's yaml is resolved with the experiment's values of the resumable keys, so
    that what they feed (``epoch_counter``, the classifier's ``n_speakers`` ...) does not
    count, and compared value by value with the saved ``hyperparams.yaml``.

    Arguments
    ---------
    output_folder : str
        The run's output folder.
    hparams_file : str
        The run's yaml.
    overrides : str or dict or None
        The run's overrides.
    annotations : dict or None
        ``{"train_annotation": path, "valid_annotation": path}`` once prepared; None
        compares the hyperparameters only (before the preparation).
    label_file : str or None
        The experiment's ``label_encoder.txt``.

    Returns
    -------
    list of str
        Empty for a new folder or a compatible rerun (which resumes).
    """
    if not has_experiment(output_folder):
        return []
    saved_file = os.path.join(output_folder, "hyperparams.yaml")
    differences = []
    saved = _read_saved_hparams(saved_file) if os.path.isfile(saved_file) else None
    if saved is not None:
        known = plain_hparams(hparams_file, overrides)
        same = {
            key: saved[key]
            for key in RESUMABLE_KEYS
            if key in saved and key in known and not isinstance(saved[key], dict)
        }
        if "n_speakers" in parse_overrides(overrides):  # given: it must fit the checkpoint
            same.pop("n_speakers", None)
        new = plain_hparams(hparams_file, _with_values(overrides, same))
        differences += hparams_differences(saved, new)
    if annotations is not None:
        differences += corpus_differences(output_folder, label_file, annotations)
    return differences


def save_hyperparams(hparams_file, output_folder, overrides=None):
    """Writes ``<output_folder>/hyperparams.yaml`` atomically, as SpeechBrain would.

    The same content as ``speechbrain.create_experiment_directory`` writes (a header
    naming the source yaml, then the yaml with the overrides applied), but through a
    temporary file renamed when complete: a disk full or a kill at a training's start
    leaves the previous copy (or none), never a truncated one that every rerun would
    fail to parse. The training script calls it, then ``create_experiment_directory``
    with ``hyperparams_to_save=None``.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "train.yaml").write("seed: 1\\nlr: 0.1\\n")
    >>> path = save_hyperparams(str(tmp / "train.yaml"), str(tmp / "out"), {"lr": 0.5})
    >>> read_plain_hparams(path)
    {'seed': 1, 'lr': 0.5}
    """
    with open(hparams_file, encoding="utf-8") as fin:
        resolved = resolve_references(fin, overrides or {}).getvalue()
    header = (
        f"# Generated {datetime.date.today()} from:\n# {os.path.abspath(hparams_file)}\n"
        "# yamllint disable\n"
    )
    path = os.path.join(output_folder, "hyperparams.yaml")
    atomic_write_text(path, header + resolved)
    return path


def _has_checkpoints(output_folder):
    save = os.path.join(output_folder, "save")
    return os.path.isdir(save) and any(name.startswith("CKPT+") for name in os.listdir(save))


def _read_saved_hparams(saved_file):
    """The saved hyperparams of an experiment; a damaged copy is replaced or explained.

    A copy that cannot be parsed (truncated by a disk full or a kill while it was
    written by an older version) identifies nothing. Without checkpoints nothing was
    trained: it is removed with a warning (None: the run starts afresh and writes it
    again). With checkpoints, the experiment's identity is unknown: a clear error.
    """
    try:
        return read_plain_hparams(saved_file)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as error:
        reason = " ".join(str(error).split())[:300]
        output_folder = os.path.dirname(saved_file)
        if not _has_checkpoints(output_folder):
            logger.warning(
                "%s is damaged (%s) and no checkpoint was saved yet: removed, this run "
                "writes it again", saved_file, reason,
            )
            os.remove(saved_file)
            return None
        raise ExperimentError(
            f"{saved_file} is damaged (truncated by a disk full or a kill?), so this run "
            f"cannot be compared with the experiment whose checkpoints are in "
            f"{output_folder}/save: {reason}. If this run uses the same values as that "
            "one, delete the file and run again (it is rewritten); otherwise choose "
            "another --output_folder, or add --overwrite"
        ) from error
