"""The command line, ``fefa-speechbrain`` (also ``python -m fefa_speechbrain``).

``MODEL`` is a training run, a pretrained folder or a hub id (:mod:`.inference.model_source`):

- ``embed MODEL INPUT... --output FILE``: audio files, folders (searched recursively) or
  lists (``.txt``/``.lst``/``.scp``, one path a line) -> ``FILE.npy`` + ``FILE.txt``
  (the path of each row, checked against the matrix on reading:
  :func:`~fefa_speechbrain.inference.embedding_files.read_embeddings`) or ``FILE.pt``
  (dict path -> embedding);
- ``score MODEL TRIALS --audio-root DIR``: a scores file, EER and minDCF;
- ``verify MODEL A B``: same speaker or not, at a threshold stored with the model;
- ``export MODEL --format onnx|torchscript --output FILE``: the embedding graph;
- ``diarize MODEL AUDIO... --output DIR``: who spoke when, one RTTM file per recording;
- ``enroll MODEL NAME AUDIO... --gallery FILE`` and ``identify MODEL AUDIO --gallery FILE``:
  open-set identification against enrolled speakers (:mod:`.inference.gallery`).

Bad input ends with one ``fefa-speechbrain: error: ...`` message (no traceback), exit 1.
Before any work, every output is checked: it must not be (or derive an index that is)
one of the inputs (audio, lists, trial list, the model's files), and its folder must be
writable. Files of a folder that are not embedded are named in a warning on stderr.
Loading a model runs its yaml: tags naming code outside the trusted packages are refused
unless ``--trust`` (:func:`~fefa_speechbrain.hparams.check_trusted_yaml`).
"""

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
LIST_EXTENSIONS = (".txt", ".lst", ".scp")
BACKENDS = ("pytorch", "onnxruntime", "torchscript")
GRAPH_EXTENSIONS = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts")}
VERIFY_DIFFERENT = 2  # --exit-code: verify says different speakers, identify none of them (1: an error)
MAX_LISTED = 20
DEFAULT_THREADS = max(1, min(4, os.cpu_count() or 1))
PROGRESS_SECONDS = 2.0


class CommandError(Exception):
    """Bad input found by the command line itself (reported as one line)."""


class Progress:
    """``embedded N/M files`` on stderr, at most every two seconds, and at the end."""

    def __init__(self, what, stream=None, unit="files"):
        self.what, self.stream, self.last, self.unit = what, stream or sys.stderr, 0.0, unit

    def __call__(self, done, total):
        now = time.monotonic()
        if done < total and now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        print(f"{self.what}: {done}/{total} {self.unit} ({100 * done // max(total, 1)} %)", file=self.stream)


def warn(message):
    """One warning on stderr, in the command line's style."""
    print(f"fefa-speechbrain: warning: {message}", file=sys.stderr)


def _left_out_reason(path):
    """Why a file of a folder is not embedded (None: soundfile reads it, embed it)."""
    import soundfile as sf

    from fefa_speechbrain.data.audio import conversion_hint, is_unsupported
    from fefa_speechbrain.data.scan import AUDIO_EXTENSIONS as KNOWN_AUDIO

    extension = os.path.splitext(path)[1].lower()
    if extension in AUDIO_EXTENSIONS:
        return None
    if extension not in KNOWN_AUDIO:
        return f"not audio (extension {extension or 'none'})"
    if is_unsupported(path):
        return conversion_hint(path).removeprefix(f"{path}: ")
    try:
        sf.info(path)
    except Exception as error:  # libsndfile words every unreadable format differently
        first = " ".join(str(error).split())
        return (
            f"{extension} audio that soundfile cannot read ({first}); convert it to WAV "
            f"or FLAC, e.g. ffmpeg -i {path} -ac 1 -ar 16000 {os.path.splitext(path)[0]}.wav"
        )
    return None


def _folder_files(folder, left_out):
    """Every audio file under ``folder`` that soundfile reads; the others into ``left_out``."""
    found = []

    def unlisted(error):
        left_out.append((error.filename, f"folder cannot be listed: {error.strerror}"))

    # links to folders are followed (speaker folders linked in, as the data preparation
    # follows them); a folder reached twice (a link loop, or two links to one folder) once
    visited = {os.path.realpath(folder)}
    for parent, folders, names in os.walk(folder, onerror=unlisted, followlinks=True):
        folders.sort()
        for name in list(folders):
            real = os.path.realpath(os.path.join(parent, name))
            if real in visited:
                folders.remove(name)
                left_out.append((os.path.join(parent, name), f"a link to {real}, listed already"))
            visited.add(real)
        for name in sorted(names):
            path = os.path.join(parent, name)
            reason = _left_out_reason(path)
            if reason is None:
                found.append(path)
            else:
                left_out.append((path, reason))
    return found


def _list_files(item):
    """The paths of a list file: one a line, relative to the list's folder or absolute.

    UTF-8 (a byte-order mark is accepted), any line ending; blank lines are skipped and
    whitespace around a path is removed unless the file's name really has it.
    """
    root = os.path.dirname(os.path.abspath(item))
    try:
        with open(item, "rb") as handle:
            lines = handle.read().splitlines()
    except OSError as error:
        raise CommandError(f"{item}: the list cannot be read: {error.strerror}") from error
    listed = []
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise CommandError(
                f"{item}: line {number} is not UTF-8 (byte 0x{raw[error.start]:02x} at column "
                f"{error.start + 1}); save the list as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
            ) from error
        if number == 1:
            line = line.removeprefix("\ufeff")
        entry = line.strip()
        if not entry:
            continue
        if entry != line and not os.path.exists(os.path.join(root, entry)) and os.path.exists(
            os.path.join(root, line)
        ):
            entry = line  # the file's name begins or ends with whitespace
        listed.append(os.path.join(root, entry))
    if not listed:
        raise CommandError(f"{item}: the list is empty")
    return listed


def audio_inputs(inputs, left_out=None):
    """Audio files named by INPUTs: files, folders (recursive) or lists of paths.

    Arguments
    ---------
    inputs : list of str
        Files, folders and lists.
    left_out : list or None
        Receives ``(path, reason)`` for every file of a folder that is not embedded
        (other formats soundfile cannot read, files that are not audio, a second link to
        one folder or a link loop, folders that cannot be listed).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> for name in ("a/1.wav", "a/b/2.flac", "a/notes.md"):
    ...     _ = tmp.join(name).write("", ensure=True)
    >>> _ = tmp.join("list.txt").write("a/1.wav\\n\\n")
    >>> skipped = []
    >>> [os.path.relpath(p, tmp) for p in audio_inputs([str(tmp / "a"), str(tmp / "list.txt")], skipped)]
    ['a/1.wav', 'a/b/2.flac']
    >>> [(os.path.relpath(p, tmp), why) for p, why in skipped]
    [('a/notes.md', 'not audio (extension .md)')]
    """
    files, left_out = [], [] if left_out is None else left_out
    for item in inputs:
        if os.path.isdir(item):
            found = _folder_files(item, left_out)
            if not found:
                raise CommandError(
                    f"{item}: no audio files that can be read in this folder ("
                    f"{', '.join(AUDIO_EXTENSIONS)}, or another format soundfile reads)"
                    + _left_out_summary(left_out, item)
                )
            files.extend(found)
        elif item.lower().endswith(LIST_EXTENSIONS) and os.path.isfile(item):
            files.extend(_list_files(item))
        else:
            files.append(item)
    return list(dict.fromkeys(os.path.abspath(path) for path in files))


def _left_out_summary(left_out, folder):
    inside = [(path, why) for path, why in left_out if path.startswith(folder)]
    if not inside:
        return ""
    shown = "; ".join(f"{path}: {why}" for path, why in inside[:3])
    return f"; left out: {shown}{' ...' if len(inside) > 3 else ''}"


def warn_left_out(left_out):
    """Names on stderr every file of the input folders that is not embedded."""
    if not left_out:
        return
    shown = "\n  ".join(f"{path}: {why}" for path, why in left_out[:MAX_LISTED])
    more = len(left_out) - MAX_LISTED
    warn(
        f"{len(left_out)} file{'s' if len(left_out) > 1 else ''} of the input folders "
        f"{'are' if len(left_out) > 1 else 'is'} left out (not embedded):\n  {shown}"
        + (f"\n  ... and {more} more" if more > 0 else "")
    )


def model_files(model):
    """The files of a local MODEL folder (none for a hub id): outputs must not replace them."""
    if not os.path.isdir(model):
        return []
    return [os.path.join(parent, name) for parent, _, names in os.walk(model) for name in names]


def check_outputs(outputs, inputs):
    """Refuses, before any work, an output that is an input or cannot be written.

    Every input (audio, list, trial list, model file) is compared with every output by
    identity (device and inode: links and different spellings of one path count), and
    each output's folder is proven writable (:func:`~fefa_speechbrain.atomic.check_writable_folder`).

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> _ = (tmp / "list.txt").write("a.wav\\n")
    >>> check_outputs([str(tmp / "list.npy"), str(tmp / "." / "list.txt")], [str(tmp / "list.txt")])
    Traceback (most recent call last):
    ...
    fefa_speechbrain.cli.CommandError: .../list.txt is an input of this command (.../list.txt): writing it would replace it; choose another --output
    """
    from fefa_speechbrain.atomic import check_writable_folder

    identities = {}
    for path in inputs:
        try:
            status = os.stat(path)
        except OSError:
            continue
        identities.setdefault((status.st_dev, status.st_ino), path)
    for output in outputs:
        if os.path.isdir(output):
            raise CommandError(f"{output} is a folder: give the name of a file to write")
        try:
            status = os.stat(output)
        except OSError:
            status = None
        if status is not None and (status.st_dev, status.st_ino) in identities:
            raise CommandError(
                f"{output} is an input of this command "
                f"({identities[(status.st_dev, status.st_ino)]}): writing it would "
                "replace it; choose another --output"
            )
    for folder in dict.fromkeys(os.path.dirname(os.path.abspath(path)) for path in outputs):
        check_writable_folder(folder)


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def cosine_threshold(text):
    """argparse type: a finite cosine threshold in [-1, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not -1 <= value <= 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a cosine threshold: give a number in [-1, 1]"
        )
    return value


def positive_float(text):
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a number above 0")
    return value


def add_threshold_options(sub, what):
    sub.add_argument("--threshold", type=cosine_threshold, default=None,
                     help=f"cosine threshold in [-1, 1] of the {what} (overrides the stored one)")
    sub.add_argument("--threshold-name", default="eer",
                     help="stored threshold to use: eer or far_1pct (%(default)s)")


def build_parser():
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fefa-speechbrain", description="Speaker embeddings, scores and decisions with FEFA models."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_model(name, text):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("model", metavar="MODEL", help="training run, pretrained folder or hub id")
        sub.add_argument("--trust", action="store_true",
                         help="load MODEL's yaml even if its tags name code outside speechbrain, "
                         "fefa_speechbrain, torch and torchaudio (only for folders you trust)")
        sub.add_argument("--savedir", default=None, help="where a hub model is downloaded")
        return sub

    def with_runtime(sub):
        sub.add_argument("--batch-size", type=positive_int, default=16,
                         help="files per forward pass (16)")
        sub.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS,
                         help="CPU threads (%(default)s)")
        sub.add_argument("--device", default="cpu", help="cpu or cuda:N (pytorch backend)")
        sub.add_argument("--backend", choices=BACKENDS, default="pytorch",
                         help="run the embedding model in PyTorch, ONNX Runtime or TorchScript")
        sub.add_argument("--no-speech-check", dest="speech_check", action="store_false",
                         help="do not run voice activity on clips (files without speech are "
                              "then not flagged; recordings over 30 s still use it)")

    embed = with_model("embed", "Embed audio files, folders or lists of files.")
    embed.add_argument("inputs", metavar="INPUT", nargs="+", help="audio file, folder or list")
    embed.add_argument("--output", required=True, help="FILE.npy (+ FILE.txt index) or FILE.pt")
    with_runtime(embed)

    score = with_model("score", "Score a trial list ('label enrol test', or 'enrol test' "
                       "without labels); EER and minDCF when it has labels.")
    score.add_argument("trials", metavar="TRIALS", help="trial list (VoxCeleb's veri_test2.txt format)")
    score.add_argument("--audio-root", default=None, help="folder the trial paths are under")
    score.add_argument("--allow-outside-root", action="store_true",
                       help="accept absolute trial paths and paths with .. above the audio root "
                       "(only for a list you trust)")
    score.add_argument("--output", default="scores.txt", help="scores file (%(default)s)")
    score.add_argument("--json", action="store_true",
                       help="print one JSON object (counts, output, EER and minDCF) instead of text")
    with_runtime(score)

    verify = with_model("verify", "Decide whether two files have the same speaker.")
    verify.add_argument("enrol", metavar="A", help="first audio file")
    verify.add_argument("test", metavar="B", help="second audio file")
    add_threshold_options(verify, "decision")
    verify.add_argument("--json", action="store_true",
                        help="print one JSON object (score, threshold, its name and description, "
                        "decision) instead of the sentence")
    verify.add_argument("--exit-code", action="store_true",
                        help="exit 0 for the same speaker, 2 for different speakers (1: an error)")
    with_runtime(verify)

    diarize = with_model("diarize", "Who spoke when: one RTTM file per recording (voice activity, "
                         "windows, embeddings, spectral clustering).")
    diarize.add_argument("inputs", metavar="AUDIO", nargs="+", help="recording, folder or list")
    diarize.add_argument("--output", required=True, help="folder for AUDIO-NAME.rttm files")
    count = diarize.add_mutually_exclusive_group()
    count.add_argument("--num-speakers", type=positive_int, default=None,
                       help="the number of speakers, if known (else estimated)")
    count.add_argument("--max-speakers", type=positive_int, default=None,
                       help="the most speakers to estimate (8)")
    diarize.add_argument("--window", type=positive_float, default=None,
                         help="window length in seconds (2.0)")
    diarize.add_argument("--shift", type=positive_float, default=None,
                         help="window shift in seconds (1.0)")
    with_runtime(diarize)

    enroll = with_model("enroll", "Enrol a speaker in a gallery from audio files (the mean of "
                        "their embeddings); the gallery file is created if missing.")
    enroll.add_argument("name", metavar="NAME", help="the speaker's name")
    enroll.add_argument("inputs", metavar="AUDIO", nargs="+", help="audio file, folder or list")
    enroll.add_argument("--gallery", required=True, help="gallery file (JSON), written atomically")
    enroll.add_argument("--replace", action="store_true", help="enrol NAME again if it is there")
    with_runtime(enroll)

    identify = with_model("identify", "Which enrolled speaker is this: the best matches, or "
                          "none of them below the threshold (open-set).")
    identify.add_argument("audio", metavar="AUDIO", help="audio file")
    identify.add_argument("--gallery", required=True, help="gallery file written by enroll")
    identify.add_argument("--top-k", type=positive_int, default=3, help="matches shown (3)")
    add_threshold_options(identify, "identification")
    identify.add_argument("--json", action="store_true",
                          help="print one JSON object (decision, threshold, top-k) instead of text")
    identify.add_argument("--exit-code", action="store_true",
                          help="exit 0 when a speaker is identified, 2 for none of them (1: an error)")
    with_runtime(identify)

    export = with_model("export", "Export the model, waveform to embedding (front-end inside), as ONNX or TorchScript.")
    export.add_argument("--format", required=True, choices=tuple(GRAPH_EXTENSIONS))
    export.add_argument("--output", required=True, help="the file to write (.onnx / .pt)")
    return parser


def _load(args):
    import torch

    from fefa_speechbrain.inference.model_source import load_model

    torch.set_num_threads(args.threads)
    return load_model(args.model, device=args.device, savedir=args.savedir, trust=args.trust)


def _embedder(model, args, workdir):
    """A SpeakerEmbedder on the chosen backend (graphs are exported into ``workdir``)."""
    from fefa_speechbrain.inference.embedder import SpeakerEmbedder
    from fefa_speechbrain.graph_export import export_graph, front_end_bins, graph_embedder

    if args.backend == "pytorch":
        return SpeakerEmbedder(model.modules, device=args.device)
    fmt = "onnx" if args.backend == "onnxruntime" else "torchscript"
    path = os.path.join(workdir, "embedding_model.onnx" if fmt == "onnx" else "embedding_model.pt")
    n_bins = front_end_bins(model.modules, model.sample_rate)
    export_graph(model.modules["embedding_model"], path, fmt, n_bins)
    return graph_embedder(model.modules, path, threads=args.threads)


def _check_lengths(embedder, files, sample_rate):
    """Every header, against the shortest input this model and backend can embed.

    One error lists every file that is missing, unreadable or too short (with the
    model's minimum duration) before anything is embedded.
    """
    from fefa_speechbrain.inference.embedder import check_audio_files
    from fefa_speechbrain.inference.input_length import minimum_input_samples

    check_audio_files(files, sample_rate, min_samples=minimum_input_samples(embedder, sample_rate))


def run_embed(args, workdir):
    import numpy as np
    import torch

    from fefa_speechbrain.atomic import atomic_open
    from fefa_speechbrain.inference.embedding_files import (
        index_path,
        unwritable_names,
        write_embeddings,
    )

    if not args.output.endswith((".npy", ".pt")):
        raise CommandError(f"--output {args.output}: give a .npy or .pt file")
    left_out = []
    files = audio_inputs(args.inputs, left_out)
    outputs = [args.output] + ([index_path(args.output)] if args.output.endswith(".npy") else [])
    if args.output.endswith(".npy"):
        bad = unwritable_names(files)
        if bad:
            shown = "; ".join(f"{name!r}: {why}" for name, why in bad[:3])
            raise CommandError(
                f"{len(bad)} input file name{'s' if len(bad) > 1 else ''} cannot be one line "
                f"of the index {outputs[1]} ({shown}{' ...' if len(bad) > 3 else ''}): "
                "rename the files, or write --output FILE.pt (keyed by path)"
            )
    check_outputs(outputs, [*args.inputs, *files, *model_files(args.model)])
    model = _load(args)
    embedder = _embedder(model, args, workdir)
    _check_lengths(embedder, files, model.sample_rate)
    warn_left_out(left_out)  # before any embedding, after every check that can fail
    embeddings = embedder.embed_files(
        files, args.batch_size, model.sample_rate, progress=Progress("embedding"),
        check_speech=args.speech_check,
    )
    warn_no_speech(embeddings.no_speech, "embedding describes no voice")
    files = [path for path in files if path in embeddings]
    if not files:
        raise CommandError("no file holds speech: nothing to embed")
    matrix = torch.stack([embeddings[path] for path in files]).numpy().astype(np.float32)
    skipped = f"; {len(left_out)} files of the folders left out (see the warning)" if left_out else ""
    if args.output.endswith(".pt"):
        with atomic_open(args.output, "wb") as handle:
            torch.save({path: torch.from_numpy(row) for path, row in zip(files, matrix)}, handle)
        print(f"{len(files)} embeddings of {matrix.shape[1]} dimensions: {args.output}{skipped}")
        return 0
    index = write_embeddings(args.output, files, matrix)
    print(f"{len(files)} embeddings of {matrix.shape[1]} dimensions: {args.output} "
          f"(rows: {index}){skipped}")
    return 0


def warn_no_speech(paths, consequence):
    """One warning on stderr naming the files in which voice activity found no speech."""
    if paths:
        shown = "\n  ".join(paths[:10]) + (f"\n  ... and {len(paths) - 10} more" if len(paths) > 10 else "")
        print(f"fefa-speechbrain: warning: no speech found in {len(paths)} file"
              f"{'s' if len(paths) > 1 else ''} (silence or noise only; a recording without "
              f"speech gets no embedding, a clip's {consequence}):\n  {shown}", file=sys.stderr)


OUTSIDE_HINT = ("give an --audio-root they are under, or pass --allow-outside-root for a "
                "list you trust")


def run_score(args, workdir):
    import numpy as np

    from fefa_speechbrain.data.trials import read_trials, trial_files
    from fefa_speechbrain.evaluation.metrics import verification_report
    from fefa_speechbrain.evaluation.verification import cosine_scores, write_scores

    trials = read_trials(args.trials, args.audio_root, require_labels=False,
                         allow_outside_root=args.allow_outside_root, outside_hint=OUTSIDE_HINT)
    files = trial_files(trials)
    check_outputs([args.output], [args.trials, *files, *model_files(args.model)])
    model = _load(args)
    embedder = _embedder(model, args, workdir)
    _check_lengths(embedder, files, model.sample_rate)
    embeddings = embedder.embed_files(
        files, args.batch_size, model.sample_rate, progress=Progress("embedding"),
        check_speech=args.speech_check,
    )
    silent = set(embeddings.no_speech)
    warn_no_speech(embeddings.no_speech, "trials are scored nan and left out of the EER")
    scored = [t for t in trials if t.enrol not in silent and t.test not in silent]
    scores = np.full(len(trials), np.nan)
    if scored:
        keep = np.array([t.enrol not in silent and t.test not in silent for t in trials])
        scores[keep] = cosine_scores(embeddings, scored)
    write_scores(args.output, trials, scores)
    summary = {"trials": len(trials), "scored": len(scored), "output": os.path.abspath(args.output),
               "no_speech": sorted(silent), "eer": None, "eer_threshold": None,
               "min_dcf_0.01": None, "min_dcf_0.05": None, "n_target": None, "n_nontarget": None}
    say = (lambda text: None) if args.json else print
    say(f"{len(trials)} trials scored: {args.output}"
        + (f" ({len(trials) - len(scored)} with a file without speech: nan)" if silent else ""))
    labels = np.array([trial.label for trial in scored]) if trials[0].label is not None else None
    if labels is None:
        say("no labels in the list: scores only, no EER")
    elif 0 < labels.sum() < len(labels):
        report = verification_report(scores[np.isfinite(scores)], labels)
        for key in ("eer", "eer_threshold", "min_dcf_0.01", "min_dcf_0.05"):
            summary[key] = float(report[key])
        summary["n_target"], summary["n_nontarget"] = int(report["n_target"]), int(report["n_nontarget"])
        say(
            f"EER {100 * report['eer']:.2f} % (threshold {report['eer_threshold']:.4f})  "
            f"minDCF(0.01) {report['min_dcf_0.01']:.4f}  minDCF(0.05) {report['min_dcf_0.05']:.4f}  "
            f"({report['n_target']} target / {report['n_nontarget']} non-target trials)"
        )
    if args.json:
        print(json.dumps(summary))
    return 0


def decision_threshold(args, model):
    """(value, description, stored name or None): ``--threshold``, else the model's stored
    threshold ``--threshold-name``."""
    if args.threshold is not None:
        return args.threshold, "given with --threshold", None
    stored = model.thresholds
    if args.threshold_name not in stored:
        names = ", ".join(name for name in stored if name != "trials") or "none"
        raise CommandError(
            f"{args.model} stores no threshold '{args.threshold_name}' (stored: {names}): pass "
            "--threshold, or export with export_pretrained.py --threshold_trials"
        )
    entry = stored[args.threshold_name]
    return entry["value"], entry.get("description", f"stored threshold {args.threshold_name}"), \
        args.threshold_name


def run_verify(args, workdir):
    from fefa_speechbrain.data.trials import Trial
    from fefa_speechbrain.evaluation.verification import cosine_scores

    model = _load(args)
    threshold, why, name = decision_threshold(args, model)
    embedder = _embedder(model, args, workdir)
    files = [os.path.abspath(args.enrol), os.path.abspath(args.test)]
    _check_lengths(embedder, files, model.sample_rate)
    embeddings = embedder.embed_files(files, 2, model.sample_rate, check_speech=args.speech_check)
    if embeddings.no_speech:
        raise CommandError(
            f"no speech found in {' and '.join(embeddings.no_speech)} (silence or noise only, "
            "by voice activity detection): no decision")
    score = float(cosine_scores(embeddings, [Trial(1, *files)])[0])
    same = score >= threshold
    verdict = "same speaker" if same else "different speakers"
    relation = ">=" if same else "<"
    if args.json:
        print(json.dumps({"enrol": files[0], "test": files[1], "score": score,
                          "threshold": float(threshold), "threshold_name": name,
                          "threshold_description": why, "same_speaker": bool(same),
                          "decision": verdict}))
    else:
        print(f"{verdict}: cosine {score:.4f} {relation} threshold {threshold:.4f} ({why})")
    return VERIFY_DIFFERENT if args.exit_code and not same else 0


def run_diarize(args, workdir):
    from fefa_speechbrain.inference.diarization import (
        MAX_SPEAKERS,
        SHIFT_SECONDS,
        WINDOW_SECONDS,
        Diarizer,
        rttm_uri,
    )

    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise CommandError(f"--output {args.output} is a file: give a folder for the RTTM files")
    window = args.window or WINDOW_SECONDS
    shift = args.shift or (SHIFT_SECONDS if args.window is None else window / 2)
    if shift > window:
        raise CommandError(f"--shift {shift} is longer than --window {window}: windows would "
                           "leave speech out")
    left_out = []
    files = audio_inputs(args.inputs, left_out)
    outputs, by_uri = [], {}
    for path in files:
        uri = rttm_uri(path)
        if uri in by_uri:
            raise CommandError(f"{by_uri[uri]} and {path} would both be written to {uri}.rttm: "
                               "diarize them into different --output folders")
        by_uri[uri] = path
        outputs.append(os.path.join(args.output, f"{uri}.rttm"))
    os.makedirs(args.output, exist_ok=True)
    check_outputs(outputs, [*args.inputs, *files, *model_files(args.model)])
    model = _load(args)
    embedder = _embedder(model, args, workdir)
    _check_lengths(embedder, files, model.sample_rate)
    warn_left_out(left_out)
    diarizer = Diarizer(embedder, window=window, shift=shift,
                        vad_backend="onnxruntime" if args.backend == "onnxruntime" else "pytorch",
                        sample_rate=model.sample_rate)
    for path, output in zip(files, outputs):
        name = os.path.basename(path)
        result = diarizer(path, num_speakers=args.num_speakers,
                          max_speakers=args.max_speakers or MAX_SPEAKERS,
                          progress=Progress(f"{name}: embedding", unit="windows"))
        result.write_rttm(output)
        speakers = len(result.speakers)
        note = "" if result else " (no speech found: the RTTM file is empty)"
        print(f"{name}: {speakers} speaker{'s' if speakers != 1 else ''}, {len(result)} segments, "
              f"{result.speech_seconds:.1f} s of speech -> {output}{note}")
    return 0


def _embed_speech(embedder, files, args, model):
    """Embeddings of files with speech (the others named in a warning); an error if none."""
    _check_lengths(embedder, files, model.sample_rate)
    embeddings = embedder.embed_files(files, args.batch_size, model.sample_rate,
                                      check_speech=args.speech_check)
    warn_no_speech(embeddings.no_speech, "file is left out")
    kept = [path for path in files if path in embeddings and path not in embeddings.no_speech]
    if not kept:
        raise CommandError(f"no speech found in {', '.join(files[:3])}"
                           f"{' ...' if len(files) > 3 else ''} (silence or noise only)")
    return kept, embeddings


def run_enroll(args, workdir):
    from fefa_speechbrain.inference.gallery import Gallery, check_name, model_fingerprint

    name = check_name(args.name)
    left_out = []
    files = audio_inputs(args.inputs, left_out)
    check_outputs([args.gallery], [*args.inputs, *files, *model_files(args.model)])
    model = _load(args)
    fingerprint = model_fingerprint(model.modules)
    gallery = Gallery.open_or_create(args.gallery, fingerprint, args.model)
    if name in gallery.speakers and not args.replace:
        raise CommandError(f"{name!r} is already enrolled in {args.gallery} (from "
                           f"{len(gallery.speakers[name]['clips'])} files): pass --replace to enrol "
                           "again")
    embedder = _embedder(model, args, workdir)
    warn_left_out(left_out)
    kept, embeddings = _embed_speech(embedder, files, args, model)
    gallery.enrol(name, [embeddings[path].numpy() for path in kept], kept)
    gallery.save(args.gallery)
    print(f"enrolled {name} from {len(kept)} file{'s' if len(kept) > 1 else ''}: {args.gallery} "
          f"({len(gallery)} speaker{'s' if len(gallery) > 1 else ''})")
    return 0


def run_identify(args, workdir):
    from fefa_speechbrain.inference.gallery import Gallery, model_fingerprint

    if not os.path.isfile(args.gallery):
        raise CommandError(f"no gallery file {args.gallery}: enrol speakers first "
                           "(fefa-speechbrain enroll MODEL NAME AUDIO... --gallery FILE)")
    model = _load(args)
    gallery = Gallery.load(args.gallery, model_fingerprint(model.modules))
    threshold, why, name = decision_threshold(args, model)
    embedder = _embedder(model, args, workdir)
    path = os.path.abspath(args.audio)
    _, embeddings = _embed_speech(embedder, [path], args, model)
    who, ranking = gallery.identify(embeddings[path].numpy(), threshold, args.top_k)
    if args.json:
        print(json.dumps({"audio": path, "speaker": who, "threshold": float(threshold),
                          "threshold_name": name, "threshold_description": why,
                          "top": [{"speaker": n, "score": score} for n, score in ranking]}))
    else:
        best, score = ranking[0]
        if who is None:
            print(f"none of them: the best match, {best}, scores {score:.4f} < threshold "
                  f"{threshold:.4f} ({why})")
        else:
            print(f"{who}: cosine {score:.4f} >= threshold {threshold:.4f} ({why})")
        for rank, (speaker, value) in enumerate(ranking, 1):
            print(f"  {rank}. {speaker} {value:.4f}")
    return VERIFY_DIFFERENT if args.exit_code and who is None else 0


def run_export(args, workdir):
    from fefa_speechbrain.inference.model_source import load_model
    from fefa_speechbrain.graph_export import export_waveform_graph
    from fefa_speechbrain.graph_front_end import FrontEndError

    extensions = GRAPH_EXTENSIONS[args.format]
    if not args.output.lower().endswith(extensions):
        others = [fmt for fmt, ends in GRAPH_EXTENSIONS.items() if args.output.lower().endswith(ends)]
        hint = f" (a {others[0]} file name: pass --format {others[0]})" if others else ""
        raise CommandError(
            f"--output {args.output}: a {args.format} graph is written to a "
            f"{' / '.join(extensions)} file{hint}"
        )
    check_outputs([args.output], model_files(args.model))
    model = load_model(args.model, savedir=args.savedir, trust=args.trust)
    try:
        metadata = export_waveform_graph(model.modules, args.output, args.format, model.sample_rate)
    except FrontEndError as error:
        raise CommandError(f"{args.model}: {error}") from error
    print(
        f"{args.format} graph of {args.model}: {args.output}\n  inputs: wavs [batch, samples] "
        f"float32 at {metadata['sample_rate']} Hz and relative lengths [batch]; output: "
        f"embedding [batch, dim], {metadata['embedding']}\n  inside the graph: "
        f"{metadata['preprocessing']} -> {metadata['embedding_model']}\n  parity with "
        f"PyTorch: max abs difference {metadata['parity_max_rel_diff']:.1e} of the largest "
        "embedding value (docs/deployment.md runs it with onnxruntime and numpy only)"
    )
    return 0


COMMANDS = {"embed": run_embed, "score": run_score, "verify": run_verify, "export": run_export,
            "diarize": run_diarize, "enroll": run_enroll, "identify": run_identify}


class _Once(logging.Filter):
    """Lets each warning through once per command (the headers are read twice)."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def filter(self, record):
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def main(argv=None):
    """Runs the command line; returns the exit status (0 ok, 1 bad input, 130 interrupted;
    ``verify --exit-code``: 2 for different speakers; ``identify --exit-code``: 2 for none)."""
    from fefa_speechbrain.checkpoints import PretrainedFolderError
    from fefa_speechbrain.data.audio import AudioError
    from fefa_speechbrain.data.trials import TrialListError
    from fefa_speechbrain.inference.gallery import GalleryError

    args = build_parser().parse_args(argv)
    expected = (CommandError, AudioError, TrialListError, PretrainedFolderError, GalleryError,
                OSError, ValueError, ImportError)
    package_logger = logging.getLogger("fefa_speechbrain")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("fefa-speechbrain: warning: %(message)s"))
    handler.addFilter(_Once())
    package_logger.addHandler(handler)
    propagate, package_logger.propagate = package_logger.propagate, False  # stderr only, once
    try:
        with tempfile.TemporaryDirectory(prefix="fefa-speechbrain-") as workdir:
            return COMMANDS[args.command](args, workdir)
    except expected as error:
        print(f"fefa-speechbrain: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fefa-speechbrain: interrupted", file=sys.stderr)
        return 130
    finally:
        package_logger.removeHandler(handler)
        package_logger.propagate = propagate
