"""How hard is a corpus without a neural network? Baselines that need no training loop.

For the built-in generated corpus (or any corpus in the VoxCeleb layout with a trial
list), each file is reduced to its long-term average spectrum: the mean over frames of
the 257-bin log-magnitude spectrogram (``fefa_speechbrain.lobes.features.Spectrogram``), and
the trials are scored with

- ``mean_log_spectrum``: the cosine between the two files' mean log-spectra, mean removed
  (no training at all: the channel and the voice are mixed in it);
- ``lda``: the same vectors projected by linear discriminant analysis fitted on the
  training speakers (every speaker not in the trial list), then the cosine: a linear
  system that has learned which spectral directions separate speakers and which ones
  only separate sessions.

A trained embedding network should beat the LDA baseline; a corpus on which the first
baseline is already near 0 % would be too easy to show anything.

Example
-------
python -m fefa_speechbrain.data.synthetic /tmp/corpus
python benchmarks/bench_corpus_difficulty.py /tmp/corpus --out benchmarks/results/difficulty.json
"""

import argparse
import glob
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from protocol import command_line, machine_info, write_json  # noqa: E402

from fefa_speechbrain.data.audio import load_audio  # noqa: E402
from fefa_speechbrain.lobes.features import Spectrogram  # noqa: E402
from fefa_speechbrain.evaluation.metrics import compute_eer  # noqa: E402
from fefa_speechbrain.data.trials import read_trials, trial_files  # noqa: E402


def mean_log_spectrum(path, spectrogram):
    """The file's long-term average log-magnitude spectrum, [257]."""
    with torch.no_grad():
        spec = spectrogram(load_audio(path).unsqueeze(0))[0]
    return torch.log(spec + 1e-6).mean(0).numpy().astype(np.float64)


def speaker_of(path):
    """``wav/idNNNNN/<session>/<utt>.wav`` -> ``idNNNNN``."""
    return os.path.basename(os.path.dirname(os.path.dirname(path)))


def fit_lda(vectors, speakers, shrinkage=1e-3):
    """Projection [dim, min(dim, n_speakers - 1)]: between- over within-speaker scatter.

    The within-speaker scatter is shrunk towards its mean eigenvalue (``shrinkage``)
    so that it stays invertible with few files per speaker.
    """
    labels = np.unique(speakers)
    mean = vectors.mean(0)
    within = np.zeros((vectors.shape[1],) * 2)
    between = np.zeros_like(within)
    for label in labels:
        group = vectors[speakers == label]
        centred = group - group.mean(0)
        within += centred.T @ centred
        offset = (group.mean(0) - mean)[:, None]
        between += len(group) * offset @ offset.T
    within += shrinkage * np.trace(within) / len(within) * np.eye(len(within))
    # Whiten the within-speaker scatter, then diagonalize the between-speaker scatter.
    values, vecs = np.linalg.eigh(within)
    whitening = vecs / np.sqrt(values)
    b_values, b_vecs = np.linalg.eigh(whitening.T @ between @ whitening)
    order = np.argsort(b_values)[::-1][: len(labels) - 1]
    return whitening @ b_vecs[:, order]


def cosine(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)


def difficulty(corpus):
    """EER (%) of both baselines on ``corpus``'s ``veri_test2.txt``, and the counts."""
    audio_root = os.path.join(corpus, "wav")
    trials = read_trials(os.path.join(corpus, "veri_test2.txt"), audio_root=audio_root)
    test_files = trial_files(trials)
    test_speakers = {speaker_of(p) for p in test_files}
    train_files = sorted(
        p
        for p in glob.glob(os.path.join(audio_root, "*", "*", "*.wav"))
        if speaker_of(p) not in test_speakers
    )
    spectrogram = Spectrogram()
    features = {p: mean_log_spectrum(p, spectrogram) for p in train_files + test_files}
    train = np.stack([features[p] for p in train_files])
    centre = train.mean(0)
    enrol = np.stack([features[t.enrol] for t in trials]) - centre
    test = np.stack([features[t.test] for t in trials]) - centre
    labels = np.array([t.label for t in trials])
    projection = fit_lda(train - centre, np.array([speaker_of(p) for p in train_files]))
    return {
        "mean_log_spectrum_eer": 100 * compute_eer(cosine(enrol, test), labels)[0],
        "lda_eer": 100 * compute_eer(cosine(enrol @ projection, test @ projection), labels)[0],
        "train_speakers": len({speaker_of(p) for p in train_files}),
        "train_files": len(train_files),
        "test_speakers": len(test_speakers),
        "trials": len(trials),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", nargs="+", help="corpus folders (wav/ + veri_test2.txt)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = {}
    for corpus in args.corpora:
        results[corpus] = difficulty(corpus)
        r = results[corpus]
        print(
            f"{corpus}: mean log-spectrum cosine {r['mean_log_spectrum_eer']:.2f}% EER, "
            f"LDA ({r['train_speakers']} training speakers) {r['lda_eer']:.2f}% EER, "
            f"{r['trials']} trials of {r['test_speakers']} test speakers",
            flush=True,
        )
    if args.out:
        write_json(args.out, {"command": command_line(), "machine": machine_info(), "results": results})
    return results


if __name__ == "__main__":
    main()
