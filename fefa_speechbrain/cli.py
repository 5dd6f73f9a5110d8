"""The command line, ``fefa-speechbrain`` (also ``python -m fefa_speechbrain``).

``MODEL`` is a training run, a pretrained folder or a hub id (:mod:`.evaluation.model_source`):

- ``embed MODEL INPUT... --output FILE``: audio files, folders (searched recursively) or
  lists (``.txt``/``.lst``/``.scp``, one path a line) -> ``FILE.npy`` + ``FILE.txt``
  (the path of each row) or ``FILE.pt`` (dict path -> embedding);
- ``score MODEL TRIALS --audio-root DIR``: a scores file, EER and minDCF;
- ``verify MODEL A B``: same speaker or not, at a threshold stored with the model;
- ``export MODEL --format onnx|torchscript --output FILE``: the embedding graph.

Bad input ends with one ``fefa-speechbrain: error: ...`` message (no traceback), exit 1.
"""

import argparse
import os
import sys
import tempfile
import time

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
LIST_EXTENSIONS = (".txt", ".lst", ".scp")
BACKENDS = ("pytorch", "onnxruntime", "torchscript")
DEFAULT_THREADS = max(1, min(4, os.cpu_count() or 1))
PROGRESS_SECONDS = 2.0


class CommandError(Exception):
    """Bad input found by the command line itself (reported as one line)."""


class Progress:
    """``embedded N/M files`` on stderr, at most every two seconds, and at the end."""

    def __init__(self, what, stream=None):
        self.what, self.stream, self.last = what, stream or sys.stderr, 0.0

    def __call__(self, done, total):
        now = time.monotonic()
        if done < total and now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        print(f"{self.what}: {done}/{total} files ({100 * done // max(total, 1)} %)", file=self.stream)


def audio_inputs(inputs):
    """Audio files named by INPUTs: files, folders (recursive) or lists of paths.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> for name in ("a/1.wav", "a/b/2.flac", "a/notes.md"):
    ...     _ = tmp.join(name).write("", ensure=True)
    >>> _ = tmp.join("list.txt").write("a/1.wav\\n\\n")
    >>> [os.path.relpath(p, tmp) for p in audio_inputs([str(tmp / "a"), str(tmp / "list.txt")])]
    ['a/1.wav', 'a/b/2.flac']
    """
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = [
                os.path.join(folder, name)
                for folder, _, names in os.walk(item)
                for name in names
                if name.lower().endswith(AUDIO_EXTENSIONS)
            ]
            if not found:
                raise CommandError(f"{item}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
            files.extend(sorted(found))
        elif item.lower().endswith(LIST_EXTENSIONS) and os.path.isfile(item):
            root = os.path.dirname(os.path.abspath(item))
            with open(item, encoding="utf-8") as handle:
                listed = [line.strip() for line in handle if line.strip()]
            if not listed:
                raise CommandError(f"{item}: the list is empty")
            files.extend(os.path.join(root, path) for path in listed)
        else:
            files.append(item)
    return list(dict.fromkeys(os.path.abspath(path) for path in files))


def build_parser():
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fefa-speechbrain", description="Speaker embeddings, scores and decisions with FEFA models."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_model(name, text):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("model", metavar="MODEL", help="training run, pretrained folder or hub id")
        return sub

    def with_runtime(sub):
        sub.add_argument("--batch-size", type=int, default=16, help="files per forward pass (16)")
        sub.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="CPU threads (%(default)s)")
        sub.add_argument("--device", default="cpu", help="cpu or cuda:N (pytorch backend)")
        sub.add_argument("--backend", choices=BACKENDS, default="pytorch",
                         help="run the embedding model in PyTorch, ONNX Runtime or TorchScript")
        sub.add_argument("--savedir", default=None, help="where a hub model is downloaded")

    embed = with_model("embed", "Embed audio files, folders or lists of files.")
    embed.add_argument("inputs", metavar="INPUT", nargs="+", help="audio file, folder or list")
    embed.add_argument("--output", required=True, help="FILE.npy (+ FILE.txt index) or FILE.pt")
    with_runtime(embed)

    score = with_model("score", "Score a trial list ('label enrol test', or 'enrol test' "
                       "without labels); EER and minDCF when it has labels.")
    score.add_argument("trials", metavar="TRIALS", help="trial list (VoxCeleb's veri_test2.txt format)")
    score.add_argument("--audio-root", default=None, help="folder the trial paths are under")
    score.add_argument("--output", default="scores.txt", help="scores file (%(default)s)")
    with_runtime(score)

    verify = with_model("verify", "Decide whether two files have the same speaker.")
    verify.add_argument("enrol", metavar="A", help="first audio file")
    verify.add_argument("test", metavar="B", help="second audio file")
    verify.add_argument("--threshold", type=float, default=None, help="cosine threshold (overrides)")
    verify.add_argument("--threshold-name", default="eer",
                        help="stored threshold to use: eer or far_1pct (%(default)s)")
    with_runtime(verify)

    export = with_model("export", "Export the model, waveform to embedding (front-end inside), as ONNX or TorchScript.")
    export.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    export.add_argument("--output", required=True, help="the file to write (.onnx / .pt)")
    export.add_argument("--savedir", default=None, help="where a hub model is downloaded")
    return parser


def _load(args):
    import torch

    from fefa_speechbrain.evaluation.model_source import load_model

    torch.set_num_threads(args.threads)
    return load_model(args.model, device=args.device, savedir=args.savedir)


def _embedder(model, args, workdir):
    """A SpeakerEmbedder on the chosen backend (graphs are exported into ``workdir``)."""
    from fefa_speechbrain.evaluation.inference import SpeakerEmbedder
    from fefa_speechbrain.graph_export import export_graph, front_end_bins, graph_embedder

    if args.backend == "pytorch":
        return SpeakerEmbedder(model.modules, device=args.device)
    fmt = "onnx" if args.backend == "onnxruntime" else "torchscript"
    path = os.path.join(workdir, "embedding_model.onnx" if fmt == "onnx" else "embedding_model.pt")
    n_bins = front_end_bins(model.modules, model.sample_rate)
    export_graph(model.modules["embedding_model"], path, fmt, n_bins)
    return graph_embedder(model.modules, path, threads=args.threads)


def run_embed(args, workdir):
    import numpy as np
    import torch

    from fefa_speechbrain.atomic import atomic_open, atomic_write_text

    if not args.output.endswith((".npy", ".pt")):
        raise CommandError(f"--output {args.output}: give a .npy or .pt file")
    files = audio_inputs(args.inputs)
    model = _load(args)
    embedder = _embedder(model, args, workdir)
    embeddings = embedder.embed_files(
        files, args.batch_size, model.sample_rate, progress=Progress("embedding")
    )
    matrix = torch.stack([embeddings[path] for path in files]).numpy().astype(np.float32)
    if args.output.endswith(".pt"):
        with atomic_open(args.output, "wb") as handle:
            torch.save({path: torch.from_numpy(row) for path, row in zip(files, matrix)}, handle)
        print(f"{len(files)} embeddings of {matrix.shape[1]} dimensions: {args.output}")
        return 0
    index = args.output[: -len(".npy")] + ".txt"
    with atomic_open(args.output, "wb") as handle:
        np.save(handle, matrix)
    atomic_write_text(index, "".join(f"{path}\n" for path in files))
    print(f"{len(files)} embeddings of {matrix.shape[1]} dimensions: {args.output} (rows: {index})")
    return 0


def run_score(args, workdir):
    import numpy as np

    from fefa_speechbrain.data.trials import read_trials, trial_files
    from fefa_speechbrain.evaluation.metrics import verification_report
    from fefa_speechbrain.evaluation.verification import cosine_scores, write_scores

    trials = read_trials(args.trials, args.audio_root, require_labels=False)
    model = _load(args)
    embedder = _embedder(model, args, workdir)
    embeddings = embedder.embed_files(
        trial_files(trials), args.batch_size, model.sample_rate, progress=Progress("embedding")
    )
    scores = cosine_scores(embeddings, trials)
    write_scores(args.output, trials, scores)
    print(f"{len(trials)} trials scored: {args.output}")
    if trials[0].label is None:
        print("no labels in the list: scores only, no EER")
        return 0
    labels = np.array([trial.label for trial in trials])
    if 0 < labels.sum() < len(labels):
        report = verification_report(scores, labels)
        print(
            f"EER {100 * report['eer']:.2f} % (threshold {report['eer_threshold']:.4f})  "
            f"minDCF(0.01) {report['min_dcf_0.01']:.4f}  minDCF(0.05) {report['min_dcf_0.05']:.4f}  "
            f"({report['n_target']} target / {report['n_nontarget']} non-target trials)"
        )
    return 0


def run_verify(args, workdir):
    from fefa_speechbrain.data.trials import Trial
    from fefa_speechbrain.evaluation.verification import cosine_scores

    model = _load(args)
    if args.threshold is not None:
        threshold, why = args.threshold, "given with --threshold"
    else:
        stored = model.thresholds
        if args.threshold_name not in stored:
            names = ", ".join(name for name in stored if name != "trials") or "none"
            raise CommandError(
                f"{args.model} stores no threshold '{args.threshold_name}' (stored: {names}): pass "
                "--threshold, or export with export_pretrained.py --threshold_trials"
            )
        threshold, why = stored[args.threshold_name]["value"], stored[args.threshold_name]["description"]
    embedder = _embedder(model, args, workdir)
    files = [os.path.abspath(args.enrol), os.path.abspath(args.test)]
    embeddings = embedder.embed_files(files, 2, model.sample_rate)
    score = float(cosine_scores(embeddings, [Trial(1, *files)])[0])
    same = score >= threshold
    verdict = "same speaker" if same else "different speakers"
    relation = ">=" if same else "<"
    print(f"{verdict}: cosine {score:.4f} {relation} threshold {threshold:.4f} ({why})")
    return 0


def run_export(args, workdir):
    from fefa_speechbrain.evaluation.model_source import load_model
    from fefa_speechbrain.graph_export import export_waveform_graph
    from fefa_speechbrain.graph_front_end import FrontEndError

    model = load_model(args.model, savedir=args.savedir)
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


COMMANDS = {"embed": run_embed, "score": run_score, "verify": run_verify, "export": run_export}


def main(argv=None):
    """Runs the command line; returns the exit status (0 ok, 1 bad input, 130 interrupted)."""
    from fefa_speechbrain.checkpoints import PretrainedFolderError
    from fefa_speechbrain.data.audio import AudioError
    from fefa_speechbrain.data.trials import TrialListError

    args = build_parser().parse_args(argv)
    expected = (CommandError, AudioError, TrialListError, PretrainedFolderError, OSError,
                ValueError, ImportError)
    try:
        with tempfile.TemporaryDirectory(prefix="fefa-speechbrain-") as workdir:
            return COMMANDS[args.command](args, workdir)
    except expected as error:
        print(f"fefa-speechbrain: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fefa-speechbrain: interrupted", file=sys.stderr)
        return 130
