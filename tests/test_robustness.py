"""Noise-robustness evaluation (Fig. 3) on tiny untrained experiments.

The experiments are real training output folders (hyperparams.yaml + checkpoint) of a
quarter-width thin-ResNet34, built without training: FEFA's parameters are randomized
so that its attention depends on the input, then a checkpoint is saved.
"""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch
from PIL import Image

from fefa_speechbrain.inference.embedder import SpeakerEmbedder, load_experiment
from fefa_speechbrain.evaluation.metrics import compute_eer
from fefa_speechbrain.hparams import load_hparams
from fefa_speechbrain.evaluation.robustness import (
    load_babble_pool,
    ROW_KEYS,
    PerFileNoise,
    condition_scores,
    markdown_table,
    noise_robustness,
    parse_experiments,
    write_report,
)
from fefa_speechbrain.data.trials import read_trials

RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes", "VoxCeleb", "FEFA")
TRAIN_YAML = os.path.join(RECIPE, "hparams", "train_thin_resnet34_tap.yaml")
SAMPLE_RATE = 16000
# Distinct lengths (samples): a recorded batch row is identified by its valid length.
FILES = {
    "spk1/a.wav": (140.0, 7200),
    "spk1/b.wav": (145.0, 7700),
    "spk2/a.wav": (210.0, 8200),
    "spk2/b.wav": (205.0, 8700),
    "spk3/a.wav": (320.0, 9200),
    "spk3/b.wav": (310.0, 9700),
}


def write_corpus(folder):
    """Six harmonic 'voices' (three speakers) and the list of all 15 trials."""
    rng = np.random.default_rng(0)
    for name, (f0, n_samples) in FILES.items():
        t = np.arange(n_samples) / SAMPLE_RATE
        wav = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
        wav = 0.3 * wav * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        wav = wav + 0.01 * rng.standard_normal(n_samples)
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sf.write(path, wav.astype(np.float32), SAMPLE_RATE)
    names = sorted(FILES)
    lines = [
        f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}"
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    trials = os.path.join(folder, "trials.txt")
    with open(trials, "w", encoding="utf-8") as fout:
        fout.write("\n".join(lines) + "\n")
    return trials


def make_experiment(folder, fefa, seed):
    """A training output folder with a saved checkpoint, without training."""
    overrides = {
        "fefa": fefa,
        "width": 0.25,
        "emb_dim": 32,
        "n_speakers": 3,
        "seed": seed,
        "skip_prep": True,
        "data_folder": str(folder),
        "verification_file": str(os.path.join(folder, "unused.txt")),
        "output_folder": str(folder),
    }
    hparams = load_hparams(TRAIN_YAML, overrides)
    sb.create_experiment_directory(
        str(folder), hyperparams_to_save=TRAIN_YAML, overrides=overrides, save_env_desc=False
    )
    model = hparams["embedding_model"]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # Untrained head biases dominate the embeddings (all cosine scores near 1).
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d)):
                module.bias.zero_()
        # Random FEFA parameters: attention that depends on the input, far from uniform.
        for parameter in (p for module in model.fefa_modules() for p in module.parameters()):
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    hparams["checkpointer"].save_checkpoint(meta={"ErrorRate": 0.5})
    return str(folder)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("robustness")
    trials = write_corpus(str(root / "audio"))
    experiments = {
        "fefa": make_experiment(root / "fefa", "single", 1),
        "none": make_experiment(root / "none", "none", 2),
    }
    return {"root": root, "trials": trials, "experiments": experiments}


@pytest.fixture(scope="module")
def script_run(setup):
    """The recipe script on both models: clean, 100 dB and 0 dB, both kinds."""
    out = setup["root"] / "noise_out"
    experiments = ",".join(f"{name}:{folder}" for name, folder in setup["experiments"].items())
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(RECIPE, "noise_robustness.py"),
            os.path.join(RECIPE, "hparams", "noise_robustness.yaml"),
            f"--experiments={experiments}",
            f"--data_folder={os.path.dirname(setup['trials'])}",
            f"--verification_file={setup['trials']}",
            "--audio_root=null",
            "--snr_levels=[clean,100,0]",
            "--batch_size=4",
            f"--output_folder={out}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {"stdout": result.stdout, "out": out}


@pytest.fixture(scope="module")
def rows(script_run):
    with open(script_run["out"] / "noise_robustness.json", encoding="utf-8") as fin:
        return json.load(fin)["rows"]


def embedder_of(folder):
    hparams, _ = load_experiment(folder)
    return SpeakerEmbedder(hparams["modules"])


def test_rows_cover_every_model_kind_and_snr_plus_clean_once(rows):
    assert all(tuple(row) == ROW_KEYS for row in rows)
    conditions = [(row["model"], row["kind"], row["snr_db"]) for row in rows]
    expected = [
        (model, kind, snr)
        for model in ("fefa", "none")
        for kind, snr in [("none", "clean")]
        + [(k, s) for k in ("gaussian", "uniform") for s in (100, 0)]
    ]
    assert conditions == expected
    for row in rows:
        assert 0.0 <= row["eer"] <= 1.0
        assert 0.0 <= row["min_dcf_0.01"] <= 1.0 and 0.0 <= row["min_dcf_0.05"] <= 1.0


def test_clean_row_matches_a_direct_evaluation(setup, rows):
    trials = read_trials(setup["trials"])
    labels = [trial.label for trial in trials]
    for model, folder in setup["experiments"].items():
        scores = condition_scores(embedder_of(folder), trials)
        clean = next(r for r in rows if r["model"] == model and r["snr_db"] == "clean")
        assert clean["eer"] == pytest.approx(compute_eer(scores, labels)[0], abs=1e-12)


def test_100_db_equals_clean_and_0_db_changes_the_scores(setup, rows):
    trials = read_trials(setup["trials"])
    embedder = embedder_of(setup["experiments"]["fefa"])
    clean = condition_scores(embedder, trials)
    for kind in ("gaussian", "uniform"):
        quiet = condition_scores(embedder, trials, 100, kind)
        loud = condition_scores(embedder, trials, 0, kind)
        assert np.abs(quiet - clean).max() < 1e-3
        assert np.abs(loud - clean).max() > 1e-2
    for model in ("fefa", "none"):
        by_condition = {(r["kind"], r["snr_db"]): r for r in rows if r["model"] == model}
        for kind in ("gaussian", "uniform"):
            assert by_condition[(kind, 100)]["eer"] == by_condition[("none", "clean")]["eer"]


def _record_embedder_inputs(monkeypatch):
    """Records, per file (identified by its valid length), the waveform the model saw."""
    seen = {}
    original = SpeakerEmbedder.embed

    def recording(self, wavs, lengths=None):
        if lengths is None:
            lengths = torch.ones(wavs.shape[0])
        counts = torch.round(lengths * wavs.shape[1]).long()
        for row, count in enumerate(counts.tolist()):
            seen[count] = wavs[row, :count].clone()
            assert torch.all(wavs[row, count:] == 0)  # padding untouched
        return original(self, wavs, lengths)

    monkeypatch.setattr(SpeakerEmbedder, "embed", recording)
    return seen


def test_noise_is_identical_across_models_and_batch_sizes(setup, monkeypatch):
    runs = []
    for model, batch_size in (("fefa", 2), ("none", 5)):
        seen = _record_embedder_inputs(monkeypatch)
        noise_robustness(
            {model: setup["experiments"][model]},
            setup["trials"],
            snr_levels=(0,),
            kinds=("uniform",),
            batch_size=batch_size,
            seed=7,
        )
        runs.append(seen)
    assert sorted(runs[0]) == sorted(n for _, n in FILES.values())
    for count, noisy in runs[0].items():
        assert torch.equal(noisy, runs[1][count])
    # The model saw the file at exactly 0 dB SNR (per utterance, over its samples).
    for name, (_, count) in FILES.items():
        clean = sf.read(os.path.join(setup["root"], "audio", name), dtype="float32")[0]
        clean = torch.from_numpy(clean).double()
        noise = runs[0][count].double() - clean
        snr = 10 * math.log10(clean.pow(2).mean() / noise.pow(2).mean())
        assert snr == pytest.approx(0.0, abs=1e-3)


def test_per_file_noise_ignores_batch_order_and_padding():
    g = torch.Generator().manual_seed(0)
    signals = [torch.randn(n, generator=g) for n in (300, 500, 400)]

    def batch(order):
        longest = max(signals[i].shape[0] for i in order)
        wavs = torch.zeros(len(order), longest)
        for row, i in enumerate(order):
            wavs[row, : signals[i].shape[0]] = signals[i]
        return wavs, torch.tensor([signals[i].shape[0] / longest for i in order])

    noise = PerFileNoise(5, "gaussian", seed=3)
    first = noise(*batch([0, 1, 2]))
    second = noise(*batch([2, 0]))
    assert torch.equal(first[0, :300], second[1, :300])
    assert torch.equal(first[2, :400], second[0, :400])
    assert torch.equal(second[1, 300:], torch.zeros(100))
    # Another seed, kind or SNR gives other noise.
    for snr, kind, seed in ((5, "gaussian", 4), (5, "uniform", 3), (6, "gaussian", 3)):
        other = PerFileNoise(snr, kind, seed)
        assert not torch.allclose(other(*batch([0]))[0], first[0, :300])


def test_babble_is_other_recordings_at_the_snr_and_the_same_in_any_batch():
    g = torch.Generator().manual_seed(1)
    t = torch.arange(1600) / 16000.0
    pool = [torch.sin(2 * math.pi * f * t) for f in (300.0, 700.0, 1100.0, 1900.0)]
    signals = [torch.randn(n, generator=g) * 0.1 for n in (1200, 800)]
    noise = PerFileNoise(10, "babble", seed=0, babble_pool=pool)
    padded = torch.zeros(2, 1200)
    padded[0], padded[1, :800] = signals[0], signals[1]
    both = noise(padded, torch.tensor([1.0, 800 / 1200]))
    alone = noise(signals[1].unsqueeze(0), torch.tensor([1.0]))
    assert torch.equal(both[1, :800], alone[0]) and torch.equal(both[1, 800:], torch.zeros(400))
    added = (both[0] - signals[0]).double()
    snr = 10 * torch.log10(signals[0].double().pow(2).mean() / added.pow(2).mean())
    assert float(snr) == pytest.approx(10.0, abs=1e-3)
    # The babble is 3 of the 4 pool tones: its spectrum has energy at exactly 3 of them.
    spectrum = torch.fft.rfft(added).abs()
    present = [float(spectrum[round(f * 1200 / 16000)]) > 0.2 * float(spectrum.max())
               for f in (300.0, 700.0, 1100.0, 1900.0)]
    assert sum(present) == 3
    with pytest.raises(ValueError, match="babble_pool"):
        PerFileNoise(10, "babble", seed=0, babble_pool=pool[:2])


def test_babble_pool_is_one_file_per_speaker_and_bad_csvs_are_named(tmp_path):
    rows = []
    for i in range(6):
        for take in range(2):  # two files per speaker, distinguishable by level
            path = tmp_path / f"s{i}_{take}.wav"
            sf.write(str(path), np.full(400 + 10 * i, 0.1 * (i + 1) + 0.01 * take,
                                        dtype=np.float32), 16000)
            rows.append(f"utt{i}_{take},{path},spk{i}\n")
    (tmp_path / "train.csv").write_text("ID,wav,spk_id\n" + "".join(reversed(rows)))
    pool = load_babble_pool(str(tmp_path / "train.csv"), max_files=3)
    # one file of every 2nd speaker (spk0, spk2, spk4), whichever of its two files
    assert [w.numel() for w in pool] == [400, 420, 440]
    assert [round(float(w[0]), 1) for w in pool] == [0.1, 0.3, 0.5]
    again = load_babble_pool(str(tmp_path / "train.csv"), max_files=3)
    assert all(torch.equal(a, b) for a, b in zip(pool, again))  # seeded: the same pool
    with pytest.raises(FileNotFoundError, match="babble_csv .*nothing.csv"):
        load_babble_pool(str(tmp_path / "nothing.csv"))
    (tmp_path / "bad.csv").write_text("ID,wav\nu,x.wav\n")
    with pytest.raises(ValueError, match="babble_csv .*bad.csv lacks the columns \\['spk_id'\\]"):
        load_babble_pool(str(tmp_path / "bad.csv"))


def test_report_files_round_trip(tmp_path, rows):
    files = write_report(rows, str(tmp_path), metadata={"seed": 0})
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in files.values())
    with open(files["csv"], newline="", encoding="utf-8") as fin:
        read = list(csv.DictReader(fin))
    assert [r["model"] for r in read] == [r["model"] for r in rows]
    assert [float(r["eer"]) for r in read] == pytest.approx([r["eer"] for r in rows])
    assert [r["snr_db"] for r in read] == [str(r["snr_db"]) for r in rows]
    document = json.load(open(files["json"], encoding="utf-8"))
    assert document["rows"] == rows and document["seed"] == 0
    markdown = open(files["markdown"], encoding="utf-8").read()
    assert markdown == markdown_table(rows) + "\n"
    fefa_clean = next(r for r in rows if r["model"] == "fefa" and r["snr_db"] == "clean")
    assert f"| fefa | none | clean | {100 * fefa_clean['eer']:.2f} |" in markdown
    with Image.open(files["plot"]) as image:
        assert image.format == "PNG" and image.size == (700, 450)


def test_bad_inputs_fail_before_any_embedding(setup, tmp_path):
    experiments, trials = setup["experiments"], setup["trials"]
    with pytest.raises(ValueError, match="kinds"):
        noise_robustness(experiments, trials, kinds=("pink",))
    with pytest.raises(ValueError, match="'loud'"):
        noise_robustness(experiments, trials, snr_levels=("clean", "loud"))
    with pytest.raises(ValueError, match="babble_csv"):
        noise_robustness(experiments, trials, kinds=("gaussian", "babble"))
    with pytest.raises(FileNotFoundError, match="hyperparams.yaml"):
        noise_robustness({"x": str(tmp_path)}, trials)
    with pytest.raises(ValueError, match="name:folder"):
        parse_experiments("results/a")


def test_recipe_script_prints_its_outputs(script_run):
    out = script_run["out"]
    for name in ("noise_robustness." + ext for ext in ("md", "csv", "json", "png")):
        assert f"{out / name}" in script_run["stdout"]
        assert os.path.isfile(out / name)
    assert os.path.isfile(out / "log.txt") and os.path.isfile(out / "hyperparams.yaml")
