"""The model zoo's table: each pretrained folder beside Resemblyzer and the MFCC baseline.

One run measures every row (``pretrained/README.md`` and the README copy it):
backbone, aggregation, FEFA, parameters of the embedding model and the folder's size;
test EER and minDCF(0.01) on the shared Speech Commands protocol and the EER on
``cv_persian_sentences`` (:func:`bench_everyday.run`: each clip embedded alone); the
keep-rate of 20 dB white-noise copies of 60 test clips at the model's stored threshold
(peers: their EER threshold on the threshold slice); the real-time factor of one
10 s utterance (test clips of one speaker, joined) on one thread, in PyTorch
(``SpeakerEmbedder``) and in ONNX Runtime (the folder's ``embedding.onnx``, or one exported for the run where the folder
ships none: waveform in, front-end inside, run as docs/deployment.md runs it).

Example
-------
python benchmarks/bench_zoo.py --model ecapa=pretrained/fefa-ecapa128-speechcommands
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

import bench_everyday
import protocol
from fefa_speechbrain.data.audio import load_audio
from fefa_speechbrain.data.trials import read_trials, trial_files
from fefa_speechbrain.graph_export import export_waveform_graph, onnx_session

REPO = bench_everyday.REPO
RTF_SECONDS = 10.0
NOISE = "white noise 20 dB"
# config.json's model_name -> (backbone, aggregation)
ARCHITECTURES = {
    "ecapa_tdnn": ("ECAPA-TDNN", "attentive statistics"),
    "ecapa_tdnn_small": ("ECAPA-TDNN", "attentive statistics"),
    "vggm_tap": ("VGG-M", "TAP"),
    "thin_resnet34_tap": ("thin-ResNet34", "TAP"),
    "thin_resnet34_gvlad": ("thin-ResNet34", "GhostVLAD"),
    "thin_seresnet34_tap": ("thin-SEResNet34", "TAP"),
}
GRAPH = "embedding.onnx"


def long_utterance(trials, data_folder, seconds=RTF_SECONDS):
    """``seconds`` of real speech: the test clips of the first speaker, joined (repeated
    if they are too few)."""
    files = trial_files(trials)
    speaker = os.path.basename(os.path.dirname(files[0]))
    own = [p for p in files if os.path.basename(os.path.dirname(p)) == speaker]
    parts, total = [], 0
    while total < seconds * bench_everyday.RATE:
        wav = load_audio(own[len(parts) % len(own)], sample_rate=bench_everyday.RATE).numpy()
        parts.append(wav)
        total += len(wav)
    return np.concatenate(parts)[: int(seconds * bench_everyday.RATE)].astype(np.float32)


def median_seconds(function, repeats):
    """Median wall time of ``function()`` over ``repeats`` calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def folder_facts(model):
    """Backbone, aggregation, FEFA, parameters and size of one pretrained folder
    (:class:`bench_everyday.OurModel`)."""
    config = model.model.config
    backbone, aggregation = ARCHITECTURES.get(config.get("model_name"), (config.get("model_name", "?"), "?"))
    embedding_model = model.model.modules["embedding_model"]
    size = sum(os.path.getsize(os.path.join(root, f))
               for root, _, names in os.walk(model.path) for f in names)
    return {"backbone": backbone, "aggregation": aggregation, "fefa": config.get("fefa", "?"),
            "parameters": sum(p.numel() for p in embedding_model.parameters()),
            "size_bytes": size, "graph": os.path.isfile(os.path.join(model.path, GRAPH))}


def graph_of(model, scratch):
    """The folder's ``embedding.onnx``, or, where it ships none, the same graph exported into
    ``scratch`` (``export_waveform_graph``, as ``fefa-speechbrain export`` writes it)."""
    graph = os.path.join(model.path, GRAPH)
    if not os.path.isfile(graph):
        graph = os.path.join(scratch, os.path.basename(os.path.normpath(model.path)) + ".onnx")
        export_waveform_graph(model.model.modules, graph, "onnx", model.model.sample_rate)
    return graph


def speeds(models, wav, repeats, scratch):
    """RTF of ``wav`` per model: PyTorch (or the peer's own code) and, for our folders
    (:class:`bench_everyday.OurModel`), ONNX Runtime."""
    out = {}
    seconds = len(wav) / bench_everyday.RATE
    for model in models:
        row = {"pytorch": median_seconds(lambda: model.embed([wav]), repeats) / seconds}
        if isinstance(model, bench_everyday.OurModel):
            session, _ = onnx_session(graph_of(model, scratch))
            feed = {"wavs": wav[None], "lengths": np.ones(1, np.float32)}
            row["onnxruntime"] = median_seconds(lambda: session.run(None, feed), repeats) / seconds
        out[model.name] = row
    return out


def run(args, log):
    torch.set_num_threads(1)
    everyday_args = argparse.Namespace(
        model=args.model, peers=args.peers, conditions=[NOISE], eer_conditions=[],
        data_folder=args.data_folder, runs_dir=args.runs_dir, threads=1, quick=args.quick)
    quality = bench_everyday.run(everyday_args, log)
    models = [bench_everyday.OurModel(name, path) for name, path in args.model]
    if "resemblyzer" in args.peers:
        models.append(bench_everyday.Resemblyzer())
    if "mfcc" in args.peers:
        models.append(bench_everyday.MFCCBaseline())
    trials = read_trials(os.path.join(args.runs_dir, "prepared", "trials.txt"), args.data_folder)
    with tempfile.TemporaryDirectory() as scratch:
        rtf = speeds(models, long_utterance(trials, args.data_folder), args.repeats, scratch)
    ours = {model.name: model for model in models if isinstance(model, bench_everyday.OurModel)}
    rows = {}
    for name, row in quality["models"].items():
        facts = folder_facts(ours[name]) if name in ours else {}
        rows[name] = dict(facts, path=row["path"], threshold=row["threshold"],
                          threshold_source=row["threshold_source"],
                          test_eer=row["clean_eer"], test_min_dcf=row["clean_min_dcf"],
                          persian_eer=row["persian_eer"],
                          keep_noise20=row["conditions"][NOISE]["keep"],
                          rtf=rtf[name])
        log(f"{name}: {rows[name]}")
    return {"command": protocol.command_line(), "machine": protocol.machine_info(),
            "threads": 1, "quick": args.quick, "rtf_seconds": RTF_SECONDS,
            "repeats": args.repeats, "models": rows}


def _size(n_bytes):
    return f"{n_bytes / 10 ** 6:.1f} MB"


def markdown(result):
    """The zoo table: one row per model, then the peers."""
    rows = []
    for name, r in result["models"].items():
        ours = "backbone" in r
        ort = r["rtf"].get("onnxruntime")
        rows.append([
            f"`{os.path.basename(os.path.normpath(r['path']))}`" if ours else name,
            r.get("backbone", "-"), r.get("aggregation", "-"),
            {"single": "FEFA(S)", "multi": "FEFA(M)", "none": "none"}.get(r.get("fefa"), "-"),
            f"{r['parameters'] / 1e6:.2f} M" if ours else "-",
            _size(r["size_bytes"]) if ours else "-",
            f"{100 * r['test_eer']:.2f} %", f"{r['test_min_dcf']:.3f}",
            f"{100 * r['persian_eer']:.2f} %", f"{100 * r['keep_noise20']:.0f} %",
            f"{r['rtf']['pytorch']:.4f}", "-" if ort is None else f"{ort:.4f}",
        ])
    table = protocol.markdown_table(
        ["model", "backbone", "aggregation", "FEFA", "parameters", "size",
         "test EER", "minDCF(0.01)", "Persian EER", "keep at 20 dB", "RTF PyTorch",
         "RTF ONNX Runtime"], rows)
    machine = result["machine"]
    return (f"Command: `{result['command']}`\n\nMachine: {machine['cpu']}, one thread, "
            f"{machine['date']}\n\n" + table)


SYSTEMS = {
    "vggm_tap": ("The VGG-M system", "VGG-M (the VoxCeleb CNN of Nagrani et al.) with "
                 "temporal average pooling (TAP)"),
    "thin_resnet34_tap": ("The thin-ResNet34 system", "Xie et al.'s thin-ResNet34 with "
                          "temporal average pooling (TAP)"),
    "thin_resnet34_gvlad": ("The best system", "Xie et al.'s thin-ResNet34 with GhostVLAD "
                            "aggregation"),
    "thin_seresnet34_tap": ("The thin-SEResNet34 system", "thin-ResNet34 with "
                            "squeeze-and-excitation blocks and temporal average pooling (TAP)"),
}
BANDS = ((0, 300), (300, 1000), (1000, 2000), (2000, 4000), (4000, 8000))
CARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo_card.md")


def attention_text(mean, sample_rate=16000):
    """The card's sentence on a mean attention curve ([bins]): extremes and band means."""
    freqs = np.linspace(0, sample_rate / 2, len(mean))
    high, low = int(np.argmax(mean)), int(np.argmin(mean))
    bands = ", ".join(f"{lo / 1000:g}-{hi / 1000:g} kHz {mean[(freqs >= lo) & (freqs < hi)].mean():.2f}"
                      for lo, hi in BANDS)
    return (f"highest {mean[high]:.2f} at {freqs[high]:.0f} Hz, lowest {mean[low]:.2f} at "
            f"{freqs[low]:.0f} Hz; band means {bands}.")


def _wrapped(command, width=92):
    """A shell command over several lines (`` \\`` continuations)."""
    import textwrap

    lines = textwrap.wrap(command, width - 2, break_on_hyphens=False, break_long_words=False)
    return " \\\n    ".join(lines)


ECAPA_NAME = "ecapa"  # the --model name of the shipped ECAPA-TDNN folder
# (label, key of a row, True where lower is better)
MEASURES = (("test EER", "test_eer", True), ("minDCF", "test_min_dcf", True),
            ("Persian EER", "persian_eer", True), ("keep at 20 dB", "keep_noise20", False))


def versus(row, ecapa):
    """The card's sentence comparing a zoo row with the ECAPA-TDNN row of the same run."""
    if ecapa is None:
        return ""
    worse = [label for label, key, lower in MEASURES
             if (row[key] > ecapa[key]) == lower and f"{row[key]:.4f}" != f"{ecapa[key]:.4f}"]
    if len(worse) == len(MEASURES):
        return ("For deployment, the ECAPA-TDNN model `fefa-ecapa128-speechcommands` is better "
                "on every quality measure below.")
    equal = [label for label, key, _ in MEASURES if f"{row[key]:.4f}" == f"{ecapa[key]:.4f}"]
    better = [label for label, _, _ in MEASURES if label not in worse and label not in equal]
    said = [f"{word} on {', '.join(labels)}" for word, labels in
            (("better", better), ("equal", equal), ("worse", worse)) if labels]
    return ("Against the ECAPA-TDNN model `fefa-ecapa128-speechcommands`, measured in the same "
            f"run: {'; '.join(said)}.")


EXAMPLE_PAIRS = ((0, 1, True), (0, 2, False), (1, 2, False))  # (clip, clip, same speaker)
EXAMPLES = ("speaker1_down", "speaker1_go", "speaker2_left")


def examples_text(emb, threshold, test_eer):
    """The card's sentences on the example pairs (``emb``: unit embeddings of EXAMPLES) at
    the stored EER threshold, wrong decisions named as such."""
    parts = []
    for a, b, same in EXAMPLE_PAIRS:
        score = float(emb[a] @ emb[b])
        said = score > threshold
        verdict = "right" if said == same else ("a false accept" if said else "a miss")
        parts.append(f"`{EXAMPLES[a]}`/`{EXAMPLES[b]}` ({'same' if same else 'different'} "
                     f"speakers) cosine {score:.2f}, decided \"{'same' if said else 'different'} "
                     f"speaker\": {verdict}")
    wrong = sum("right" not in part for part in parts)
    tail = ("" if not wrong else
            f" On the test trials this threshold is wrong about as often as the EER says "
            f"({100 * test_eer:.1f} %); the example pairs were not chosen for this model.")
    return (f"At the stored EER threshold ({threshold:.3f}): " + "; ".join(parts) + "." + tail)


def _flag(command, key, default=None):
    """The value of ``--key=value`` in a command line (``default`` without one)."""
    return next((part.split("=", 1)[1] for part in command.split()
                 if part.startswith(f"--{key}=")), default)


def _reflow(text, width=92):
    """Markdown with its plain paragraphs refilled to ``width`` (code, tables, headings,
    lists and the front-matter as they are)."""
    import textwrap

    out, paragraph, fenced = [], [], False

    def flush():
        if paragraph:
            out.extend(textwrap.wrap(" ".join(paragraph), width, break_on_hyphens=False,
                                     break_long_words=False))
            paragraph.clear()

    lines = text.split("\n")
    if lines[0] == "---":  # the front-matter, up to its closing line, as it is
        end = lines.index("---", 1) + 1
        out, lines = lines[:end], lines[end:]
    for line in lines:
        plain = (not fenced and line.strip() and not line.startswith(("#", "|", "-", "!", "`" * 3, " "))
                 and not re.match(r"\d+\. ", line))
        if plain:
            paragraph.append(line.strip())
            continue
        flush()
        if line.startswith("`" * 3):
            fenced = not fenced
        out.append(line)
    flush()
    return "\n".join(out)


def write_card(name, result, args, log):
    """README.md of one zoo folder, from ``zoo_card.md`` and this run's measurements."""
    from fefa_speechbrain.atomic import atomic_write_text
    from fefa_speechbrain.export import threshold_rates_table

    folder = dict(args.model)[name]
    ours = bench_everyday.OurModel(name, folder)
    config = ours.model.config
    run = os.path.join(args.runs_dir, config["source_experiment"])
    with open(os.path.join(run, "converge_run.json"), encoding="utf-8") as fin:
        record = json.load(fin)
    epochs = record["epochs"]
    best = min(epochs, key=lambda e: (e[3], e[0]))
    row = result["models"][name]
    others = {n: r for n, r in result["models"].items() if "backbone" not in r or n == ECAPA_NAME}
    table = markdown(dict(result, models={name: row, **others})).split("\n\n", 2)[2]
    examples = os.path.join(folder, "example")
    wavs = [load_audio(os.path.join(examples, f"{clip}.flac"), sample_rate=bench_everyday.RATE).numpy()
            for clip in EXAMPLES]
    emb = bench_everyday._unit(ours.embed(wavs))
    example_text = examples_text(emb, config["thresholds"]["eer"]["value"], row["test_eer"])
    mean = np.load(os.path.join(folder, "attention_mean.npy"))
    thresholds = config["thresholds"]
    train = record["train_command"].replace(args.data_folder, "DATA").replace(args.runs_dir, "RUNS")
    prepared = os.path.join(args.runs_dir, "prepared_threshold")
    with open(os.path.join(prepared, "dev.csv"), encoding="utf-8") as fin:
        n_dev = sum(1 for _ in fin) - 1
    with open(os.path.join(prepared, "train.csv"), encoding="utf-8") as fin:
        n_steps = -(-(sum(1 for _ in fin) - 1) // int(_flag(record["train_command"], "batch_size")))
    augmented = _flag(record["train_command"], "augment", "False") == "True"
    if augmented:
        augmentation_text = (
            "SpeechBrain's Augmenter adds an augmented copy of every batch, made by 1-2 of the "
            "everyday-audio augmentations of the shipped ECAPA-TDNN model: reverberation, "
            "babble, coloured noise, the telephone band, bit depth, codecs and clipping "
            "(`bench_converge.py`'s `EVERYDAY`).")
        noise_limit = ("Trained with noise, codecs and the telephone band, but on 1 s words of "
                       "under 200 speakers: the keep-rate at 20 dB above is what that gives.")
    else:
        augmentation_text = ("No augmentation (the zoo's `_everyday` models are the same "
                             "training with it).")
        noise_limit = "Not trained with noise or codecs: the keep-rate at 20 dB above is what that gives."
    graph_text = ("the same model as one ONNX graph, waveform in (16 kHz mono float32, `wavs "
                  "[batch, samples]`, `lengths [batch]`), front-end inside, raw embedding out "
                  "(score with cosine similarity); it runs with onnxruntime and numpy only "
                  "(docs/deployment.md)")
    if os.path.isfile(os.path.join(folder, GRAPH)):
        onnx_text = f"`{GRAPH}` is {graph_text}."
    else:
        onnx_text = (f"This folder ships no ONNX graph (it would take pretrained/ over its 25 MB); "
                     f"`fefa-speechbrain export pretrained/{os.path.basename(os.path.normpath(folder))} "
                     f"--format onnx --output {GRAPH}` writes {graph_text}.")
    versus_ecapa = versus(row, result["models"].get(ECAPA_NAME))
    backbone = ARCHITECTURES[config["model_name"]][0]
    system, backbone_text = SYSTEMS[config["model_name"]]
    text = open(CARD, encoding="utf-8").read().format(
        name=os.path.basename(os.path.normpath(folder)), backbone=backbone,
        aggregation=ARCHITECTURES[config["model_name"]][1], system=system,
        backbone_text=backbone_text, parameters=row["parameters"] / 1e6,
        embedding_dim=config["embedding_dim"], n_speakers=config["n_speakers"],
        test_eer=100 * row["test_eer"], test_min_dcf=row["test_min_dcf"],
        machine=result["machine"]["cpu"], date=result["machine"]["date"][:10],
        results_table=table, valid_error=100 * best[3], n_dev=n_dev, best_epoch=best[0],
        n_epochs=len(epochs),
        threshold_text="; ".join(f"`{k}` cosine {v['value']:.3f} ({v['description']})"
                                 for k, v in thresholds.items() if k in ("eer", "far_1pct")) + ".",
        rates_table="\n".join(threshold_rates_table(config)), attention_png="attention.png",
        n_attention=n_dev, attention_text=attention_text(mean),
        eer_threshold=thresholds["eer"]["value"], example_text=example_text, experiment=config["source_experiment"],
        train_command=_wrapped(train),
        versus_ecapa=versus_ecapa, onnx_text=onnx_text, augmentation_text=augmentation_text, noise_limit=noise_limit, n_steps=n_steps)
    atomic_write_text(os.path.join(folder, "README.md"), _reflow(text))
    log(f"{name}: card written ({os.path.join(folder, 'README.md')})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=[], metavar="NAME=FOLDER",
                        help="pretrained folders")
    parser.add_argument("--peers", nargs="*", default=["resemblyzer", "mfcc"],
                        choices=["resemblyzer", "mfcc"])
    parser.add_argument("--data-folder", default=bench_everyday.SPEECH_COMMANDS)
    parser.add_argument("--runs-dir", default=bench_everyday.RUNS,
                        help="bench_converge.py's runs (prepared/, prepared_threshold/)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per RTF")
    parser.add_argument("--quick", action="store_true", help="1/20 of the test trials")
    parser.add_argument("--output", default=os.path.join(REPO, "benchmarks", "results", "zoo"))
    parser.add_argument("--cards", nargs="*", default=[], metavar="NAME",
                        help="write these models' README.md (their folders hold "
                             "attention.png and attention_mean.npy)")
    args = parser.parse_args(argv)
    args.model = protocol.named_paths(parser, args.model, "NAME=FOLDER")
    result = run(args, lambda message: print(f"[zoo] {message}", flush=True))
    protocol.write_results(args.output, result, markdown(result))
    for name in args.cards:
        write_card(name, result, args, lambda message: print(f"[zoo] {message}", flush=True))


if __name__ == "__main__":
    sys.exit(main())
