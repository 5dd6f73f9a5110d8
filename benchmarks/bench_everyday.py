"""Everyday audio: our models beside Resemblyzer and an MFCC baseline, on degraded copies.

Each clip is compared with a degraded copy of itself (noise, babble, reverberation, gain,
clipping, DC offset, 8-bit and mu-law samples, the telephone band, MP3 and Opus). Per
condition and model: the keep-rate (the copy still scores "same speaker" at the model's
threshold), the median self-cosine, and the rank-1 share (the copy's nearest original is
its own). The shared protocol's test EER is also computed with the test side of every
trial degraded, and the EER on the Persian sentences (``cv_persian_sentences``).

Thresholds: our folders' stored ``eer`` threshold (``config.json``), as ``verify`` uses
it; the peers, which store none, get their EER threshold on the threshold slice of the
protocol (``bench_converge.py``'s ``prepared_threshold/threshold_trials.txt``: speakers
that the everyday models never saw), computed in the same run.

Examples
--------
python benchmarks/bench_everyday.py --model shipped=pretrained/fefa-ecapa128-speechcommands
python benchmarks/bench_everyday.py --model new=benchmarks/results/runs/ecapa128_everyday --quick
"""

import argparse
import io
import os
import sys
import time

import numpy as np
import soundfile as sf
import torch

import protocol
from fefa_speechbrain.data.audio import load_audio
from fefa_speechbrain.data.rir import synthetic_rir
from fefa_speechbrain.data.trials import read_trials, trial_files
from fefa_speechbrain.evaluation.metrics import compute_eer, compute_min_dcf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
SPEECH_COMMANDS = os.path.join(DATA, "speech_commands_v002_test")
PERSIAN = os.path.join(DATA, "cv_persian_sentences")
RUNS = os.path.join(REPO, "benchmarks", "results", "runs")
RATE = 16000
N_CLIPS = 60


def _power(wav):
    return float(np.mean(wav.astype(np.float64) ** 2)) + 1e-12


def _at_snr(wav, noise, snr_db):
    return wav + noise * np.sqrt(_power(wav) / (_power(noise) * 10 ** (snr_db / 10)))


def _codec(wav, fmt, subtype):
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wav, -1, 1), RATE, format=fmt, subtype=subtype)
    buffer.seek(0)
    out = sf.read(buffer, dtype="float32")[0]
    return _fit(out, len(wav))


def _fit(out, length):
    """Trims or zero-pads a decoded signal to ``length`` samples."""
    if len(out) >= length:
        return out[:length]
    return np.concatenate([out, np.zeros(length - len(out), dtype=out.dtype)])


def _resampled(wav, low):
    import torchaudio

    x = torch.from_numpy(wav)[None]
    back = torchaudio.functional.resample(torchaudio.functional.resample(x, RATE, low), low, RATE)
    return _fit(back[0].numpy(), len(wav))


def _int16(wav):
    return (np.round(np.clip(wav, -1, 1) * 32767) / 32767).astype(np.float32)


def _babble(wav, rng, pool):
    voices = [pool[i] for i in rng.choice(len(pool), 3, replace=False)]
    noise = sum(_fit(np.resize(v, len(wav)), len(wav)) / np.sqrt(_power(v)) for v in voices)
    return _at_snr(wav, noise, 10.0)


CONDITIONS = {
    "white noise 30 dB": lambda w, rng, pool: _at_snr(w, rng.standard_normal(len(w)), 30.0),
    "white noise 20 dB": lambda w, rng, pool: _at_snr(w, rng.standard_normal(len(w)), 20.0),
    "babble 10 dB": _babble,
    "reverberation (RT60 0.6 s)": lambda w, rng, pool: _fit(
        np.convolve(w, synthetic_rir(0.6, 3.0, RATE, rng)), len(w)),
    "gain -30 dB (16-bit file)": lambda w, rng, pool: _int16(w * 10 ** (-30 / 20)),
    "gain +20 dB, clipped": lambda w, rng, pool: np.clip(w * 10.0, -1.0, 1.0),
    "DC offset 0.1": lambda w, rng, pool: w + 0.1,
    "8-bit PCM": lambda w, rng, pool: _codec(w, "WAV", "PCM_U8"),
    "mu-law": lambda w, rng, pool: _codec(w, "WAV", "ULAW"),
    "8 kHz and back": lambda w, rng, pool: _resampled(w, 8000),
    "MP3": lambda w, rng, pool: _codec(w, "MP3", "MPEG_LAYER_III"),
    "Opus": lambda w, rng, pool: _codec(w, "OGG", "OPUS"),
}
TARGETS = ("white noise 20 dB", "8-bit PCM", "8 kHz and back", "MP3")


def degrade(condition, wav, seed, pool):
    """``wav`` (float32 numpy) under ``condition``, seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    return CONDITIONS[condition](wav.astype(np.float32), rng, pool).astype(np.float32)


class OurModel:
    """A pretrained folder or training run, embedding each clip alone (SpeakerEmbedder)."""

    def __init__(self, name, path):
        from fefa_speechbrain.inference.embedder import SpeakerEmbedder
        from fefa_speechbrain.inference.model_source import load_model

        model = load_model(path)
        self.name, self.path, self.model = name, path, model
        self.embedder = SpeakerEmbedder(model.modules)
        thresholds = model.thresholds
        self.threshold = thresholds["eer"]["value"] if "eer" in thresholds else None

    def embed(self, wavs):
        return np.stack([self.embedder.embed(torch.from_numpy(w)[None])[0].numpy() for w in wavs])


class Resemblyzer:
    """Resemblyzer's pretrained GE2E encoder (``pip install resemblyzer``), used as its
    README shows: ``preprocess_wav`` (volume normalization, silence trimming), then
    ``embed_utterance``."""

    name, path, threshold = "Resemblyzer", "resemblyzer (pip)", None

    def __init__(self):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from resemblyzer import VoiceEncoder, preprocess_wav
        self.encoder, self.preprocess = VoiceEncoder("cpu", verbose=False), preprocess_wav

    def embed(self, wavs):
        out = []
        for wav in wavs:
            trimmed = self.preprocess(wav.astype(np.float32), source_sr=RATE)
            if len(trimmed) < RATE // 4:  # the trimming left (almost) nothing
                trimmed = wav.astype(np.float32)
            out.append(self.encoder.embed_utterance(trimmed))
        return np.stack(out)


class MFCCBaseline:
    """Training-free: mean and standard deviation of 19 MFCCs (c1-c19), cosine."""

    name, path, threshold = "MFCC mean+std", "torchaudio MFCC", None

    def __init__(self):
        import torchaudio

        self.mfcc = torchaudio.transforms.MFCC(
            RATE, n_mfcc=20, melkwargs={"n_fft": 512, "win_length": 400, "hop_length": 160,
                                        "n_mels": 40})

    def embed(self, wavs):
        out = []
        for wav in wavs:
            coeffs = self.mfcc(torch.from_numpy(wav.astype(np.float32)))[1:]
            out.append(torch.cat([coeffs.mean(1), coeffs.std(1)]).numpy())
        return np.stack(out)


def _unit(matrix):
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def trial_eer(model, trials, audio, test_audio=None):
    """(EER, its threshold) of ``trials``; the test side from ``test_audio`` (path -> wav)
    when given."""
    return compute_eer(*trial_scores(model, trials, audio, test_audio))


def trial_scores(model, trials, audio, test_audio=None):
    """(cosine scores, labels) of ``trials``, as :func:`trial_eer` takes them."""
    files = trial_files(trials)
    index = {path: row for row, path in enumerate(files)}
    clean = _unit(model.embed([audio[p] for p in files]))
    test = clean if test_audio is None else _unit(model.embed([test_audio[p] for p in files]))
    enrol = np.array([index[t.enrol] for t in trials])
    other = np.array([index[t.test] for t in trials])
    scores = np.sum(clean[enrol] * test[other], axis=1)
    return scores, np.array([t.label for t in trials])


def clean_results(model, trials, audio):
    """``clean_eer`` and ``clean_min_dcf`` (p_target 0.01) of ``trials``."""
    scores, labels = trial_scores(model, trials, audio)
    return {"clean_eer": compute_eer(scores, labels)[0],
            "clean_min_dcf": compute_min_dcf(scores, labels, p_target=0.01)[0]}


def choose_clips(trials, count=N_CLIPS, seed=0):
    """``count`` test clips: one per speaker first, then second clips, seeded."""
    rng = np.random.default_rng(seed)
    by_speaker = {}
    for path in trial_files(trials):
        by_speaker.setdefault(os.path.basename(os.path.dirname(path)), []).append(path)
    rounds = []
    for speaker in sorted(by_speaker):
        clips = sorted(by_speaker[speaker])
        rng.shuffle(clips)
        rounds.append(clips)
    chosen, depth = [], 0
    while len(chosen) < count:
        chosen += [clips[depth] for clips in rounds if len(clips) > depth][: count - len(chosen)]
        depth += 1
    return chosen


def self_comparison(model, clips, audio, copies, threshold):
    """Keep-rate, median self-cosine and rank-1 share of degraded copies of ``clips``."""
    originals = _unit(model.embed([audio[p] for p in clips]))
    degraded = _unit(model.embed([copies[p] for p in clips]))
    similarity = degraded @ originals.T
    own = np.diag(similarity)
    return {
        "keep": None if threshold is None else float(np.mean(own >= threshold)),
        "median_cosine": float(np.median(own)),
        "rank1": float(np.mean(np.argmax(similarity, axis=1) == np.arange(len(clips)))),
    }


def run(args, log):
    torch.set_num_threads(args.threads)
    protocol_trials = read_trials(os.path.join(args.runs_dir, "prepared", "trials.txt"),
                                  args.data_folder)
    threshold_trials = read_trials(os.path.join(args.runs_dir, "prepared_threshold",
                                                "threshold_trials.txt"), args.data_folder)
    persian = read_trials(os.path.join(PERSIAN, "trials.txt"), PERSIAN)
    if args.quick:
        protocol_trials = protocol_trials[::20]
        persian = persian[::10]
    files = sorted(set(trial_files(protocol_trials)) | set(trial_files(threshold_trials))
                   | set(trial_files(persian)))
    audio = {path: load_audio(path, sample_rate=RATE).numpy() for path in files}
    test_files = trial_files(protocol_trials)
    pool = [audio[p] for p in trial_files(threshold_trials)]  # babble voices: other speakers
    clips = choose_clips(protocol_trials)
    models = [OurModel(name, path) for name, path in args.model]
    if "resemblyzer" in args.peers:
        models.append(Resemblyzer())
    if "mfcc" in args.peers:
        models.append(MFCCBaseline())
    rows = {}
    for model in models:
        start = time.perf_counter()
        threshold_eer, peer_threshold = trial_eer(model, threshold_trials, audio)
        threshold = model.threshold if model.threshold is not None else peer_threshold
        rows[model.name] = {
            "path": model.path, "threshold": threshold,
            "threshold_source": "stored eer" if model.threshold is not None
            else "EER threshold on the threshold slice (this run)",
            "threshold_slice_eer": threshold_eer,
            **clean_results(model, protocol_trials, audio),
            "persian_eer": trial_eer(model, persian, audio)[0],
            "conditions": {},
        }
        log(f"{model.name}: clean EER {100 * rows[model.name]['clean_eer']:.2f} %, Persian "
            f"{100 * rows[model.name]['persian_eer']:.2f} % ({time.perf_counter() - start:.0f} s)")
    for number, condition in enumerate(args.conditions):
        copies = {path: degrade(condition, audio[path], 1000 * number + row, pool)
                  for row, path in enumerate(test_files)}
        for model in models:
            result = self_comparison(model, clips, audio, copies, rows[model.name]["threshold"])
            result["eer_test_side"] = (trial_eer(model, protocol_trials, audio, copies)[0]
                                       if condition in args.eer_conditions else None)
            rows[model.name]["conditions"][condition] = result
            log(f"{condition}: {model.name} {_cell(result)}")
    return {"command": protocol.command_line(), "machine": protocol.machine_info(),
            "threads": args.threads, "quick": args.quick, "n_clips": len(clips),
            "protocol_trials": len(protocol_trials), "persian_trials": len(persian),
            "models": rows}


def markdown(result):
    names = list(result["models"])
    conditions = list(next(iter(result["models"].values()))["conditions"])
    head = (f"Command: `{result['command']}`\n\nMachine: {result['machine']['cpu']}, "
            f"{result['threads']} thread(s), {result['machine']['date']}\n\n")
    summary = protocol.markdown_table(
        ["model", "threshold", "clean test EER", "Persian sentences EER"],
        [[n, f"{r['threshold']:.3f} ({r['threshold_source']})", f"{100 * r['clean_eer']:.2f} %",
          f"{100 * r['persian_eer']:.2f} %"] for n, r in result["models"].items()])
    table = protocol.markdown_table(
        ["condition"] + [f"{n}: keep / cosine / rank-1 / EER" for n in names],
        [[c] + [_cell(result["models"][n]["conditions"][c]) for n in names] for c in conditions])
    return (head + summary + f"\n\nCopies of {result['n_clips']} test clips against their "
            "originals (keep-rate at the threshold, median self-cosine, rank-1 among the "
            "originals), and the test EER with the test side of every trial degraded (- where not "
            "run):\n\n" + table)


def _cell(row):
    keep = "-" if row["keep"] is None else f"{100 * row['keep']:.0f} %"
    eer = "-" if row["eer_test_side"] is None else f"{100 * row['eer_test_side']:.2f} %"
    return f"{keep} / {row['median_cosine']:.3f} / {100 * row['rank1']:.0f} % / {eer}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=[], metavar="NAME=PATH",
                        help="our pretrained folders or training runs")
    parser.add_argument("--peers", nargs="*", default=["resemblyzer", "mfcc"],
                        choices=["resemblyzer", "mfcc"])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--eer-conditions", nargs="*", default=list(CONDITIONS),
                        choices=list(CONDITIONS),
                        help="conditions that also get the test EER with the test side degraded "
                             "(711 clips per model each; the others get the 60-clip comparison)")
    parser.add_argument("--data-folder", default=SPEECH_COMMANDS)
    parser.add_argument("--runs-dir", default=RUNS, help="bench_converge.py's runs (prepared/)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1/20 of the test trials")
    parser.add_argument("--output", default=os.path.join(REPO, "benchmarks", "results", "everyday"))
    args = parser.parse_args(argv)
    args.model = protocol.named_paths(parser, args.model, "NAME=PATH")
    result = run(args, lambda message: print(f"[everyday] {message}", flush=True))
    protocol.write_results(args.output, result, markdown(result))


if __name__ == "__main__":
    sys.exit(main())
