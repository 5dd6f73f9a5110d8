"""Figures: FEFA attention overlays and means (Fig. 2), EER-vs-SNR curves (Fig. 3)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from test_robustness import FILES, RECIPE, embedder_of, make_experiment, write_corpus

from fefa_speechbrain import plotting
from fefa_speechbrain.data.audio import load_audio
from fefa_speechbrain.lobes.features import FrameNormalization, Spectrogram
from fefa_speechbrain.inference.embedder import SpeakerEmbedder
from fefa_speechbrain.evaluation.attention import attention_figures, collect_attention, spectrogram_of
from fefa_speechbrain.evaluation.robustness import noise_curves, snr_order
from fefa_speechbrain.plotting import plot_attention_overlay, plot_mean_attention, plot_noise_curves
from fefa_speechbrain.lobes.thin_resnet import ThinResNet34


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("plotting")
    trials = write_corpus(str(root / "audio"))
    files = [str(root / "audio" / name) for name in sorted(FILES)]
    return {"root": root, "trials": trials, "files": files,
            "experiment": make_experiment(root / "fefa", "single", 1)}


def png_size(path):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.format, image.size


def reference_attention(experiment, paths):
    """``input_fefa.last_attention`` after the full embedding pass on each file alone."""
    embedder = embedder_of(experiment)
    attention = {}
    for path in paths:
        embedder.embed(load_audio(path).unsqueeze(0))
        attention[path] = embedder.modules["embedding_model"].input_fefa.last_attention[0].numpy()
    return attention


def test_overlays_and_mean_show_the_models_own_fefa_weights(setup, tmp_path, monkeypatch):
    drawn = {}
    original = plotting.plot_attention_overlay

    def capture(spectrogram, attention, path, **kwargs):
        drawn[path] = original(spectrogram, attention, path, **kwargs)
        return drawn[path]

    monkeypatch.setattr(plotting, "plot_attention_overlay", capture)
    files = setup["files"]
    outputs = attention_figures(
        setup["experiment"], files[1:3], str(tmp_path), mean_files=files, batch_size=4
    )
    assert sorted(os.listdir(tmp_path)) == [
        "attention_mean.npy", "attention_mean.png", "attention_spk1_b.png", "attention_spk2_a.png"
    ]
    reference = reference_attention(setup["experiment"], files)
    for path, png in outputs["overlays"].items():
        assert png_size(png) == ("PNG", (900, 450))
        attention = drawn[png]["attention"]
        assert attention.shape == (257,)
        np.testing.assert_allclose(attention, reference[path], rtol=1e-5, atol=1e-6)
        assert attention.std() > 0.1  # randomized FEFA: far from uniform (all ones)
        assert drawn[png]["uniform_level"] == pytest.approx(1.0)  # rescaled softmax
        expected_image = 20 * np.log10(spectrogram_of(path, 257) + 1e-8).T
        np.testing.assert_allclose(drawn[png]["image"], expected_image, rtol=1e-5, atol=1e-4)
    mean = np.load(outputs["mean_array"])
    np.testing.assert_allclose(mean, np.mean([reference[p] for p in files], axis=0), rtol=1e-5)
    assert png_size(outputs["mean_plot"]) == ("PNG", (800, 400))
    assert outputs["n_mean_files"] == len(files)


def test_batched_attention_is_the_embedding_pass_attention(setup):
    embedder = embedder_of(setup["experiment"])
    files = setup["files"]
    weights = collect_attention(embedder, files, batch_size=3)
    # Each file alone through the full network, then FEFA's own record of it.
    for path in files[3:]:
        embedder.embed(load_audio(path)[None])
        recorded = embedder.modules["embedding_model"].input_fefa.last_attention.numpy()
        np.testing.assert_allclose(weights[path], recorded[0], rtol=1e-5, atol=1e-6)
    assert np.abs(weights[files[0]] - weights[files[-1]]).max() > 1e-2  # input-dependent


def test_attention_does_not_depend_on_batch_padding(setup):
    embedder = embedder_of(setup["experiment"])
    shortest = setup["files"][0]
    together = collect_attention(embedder, setup["files"], batch_size=6)[shortest]
    alone = collect_attention(embedder, [shortest])[shortest]
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_collect_attention_needs_an_input_fefa(setup):
    modules = {
        "compute_features": Spectrogram(),
        "mean_var_norm": FrameNormalization(),
        "embedding_model": ThinResNet34(fefa="none", aggregation="tap", emb_dim=8, width=0.125),
    }
    with pytest.raises(ValueError, match="no input FEFA"):
        collect_attention(SpeakerEmbedder(modules), setup["files"][:1])


def test_overlay_plots_the_given_data_and_checks_shapes(tmp_path):
    spec = np.abs(np.random.default_rng(0).standard_normal((40, 65))) + 0.1
    weights = np.linspace(0.2, 1.8, 65)
    path = str(tmp_path / "o.png")
    drawn = plot_attention_overlay(torch.from_numpy(spec), torch.from_numpy(weights), path,
                                   title="t", figsize=(4, 3), dpi=50)
    assert png_size(path) == ("PNG", (200, 150))
    np.testing.assert_allclose(drawn["image"], 20 * np.log10(spec + 1e-8).T)
    np.testing.assert_array_equal(drawn["attention"], weights)
    assert drawn["frequencies_hz"][[0, 32, 64]].tolist() == [0.0, 4000.0, 8000.0]
    linear = plot_attention_overlay(spec, weights, path, log_scale=False, sample_rate=8000)
    np.testing.assert_array_equal(linear["image"], spec.T)
    assert linear["frequencies_hz"][-1] == 4000.0
    with pytest.raises(ValueError, match="65 frequency bins but attention has 64"):
        plot_attention_overlay(spec, weights[:64], path)
    with pytest.raises(ValueError, match="NaN"):
        plot_attention_overlay(spec, np.full(65, np.nan), path)
    assert os.listdir(tmp_path) == ["o.png"]  # no temporary file left behind


def test_mean_attention_of_several_models(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.random((5, 9)), rng.random((3, 9))
    path = str(tmp_path / "m.png")
    drawn = plot_mean_attention({"fefa": a, "other": torch.from_numpy(b)}, path, sample_rate=16000)
    for name, values in (("fefa", a), ("other", b)):
        for f in range(9):
            column = values[:, f]
            assert drawn[name]["mean"][f] == pytest.approx(sum(column) / len(column))
            var = sum((x - column.mean()) ** 2 for x in column) / len(column)
            assert drawn[name]["std"][f] == pytest.approx(var**0.5)
    assert drawn["frequencies_hz"].tolist() == [1000.0 * k for k in range(9)]
    assert png_size(path) == ("PNG", (800, 400))
    with pytest.raises(ValueError, match="different numbers of bins"):
        plot_mean_attention({"a": a, "b": b[:, :5]}, path)


def test_noise_curves_run_from_clean_to_the_lowest_snr(tmp_path):
    rows = [{"model": "none", "kind": "none", "snr_db": "clean", "eer": 0.10}]
    rows += [{"model": "fefa", "kind": "none", "snr_db": "clean", "eer": 0.05}]
    for model, base in (("none", 0.10), ("fefa", 0.05)):
        for kind, step in (("gaussian", 0.02), ("uniform", 0.01)):
            for snr in (0, 100, 20):
                rows.append({"model": model, "kind": kind, "snr_db": snr,
                             "eer": base + step * {100: 0, 20: 1, 0: 3}[snr]})
    path = str(tmp_path / "curves.png")
    drawn = plot_noise_curves(noise_curves(rows), snr_order(rows), path, figsize=(5, 3), dpi=80)
    assert png_size(path) == ("PNG", (400, 240))
    assert list(drawn) == [(m, k) for m in ("none", "fefa") for k in ("gaussian", "uniform")]
    labels, values = drawn[("fefa", "uniform")]
    assert labels == ["clean", "100", "20", "0"]
    assert values == pytest.approx([5.0, 5.0, 6.0, 8.0])
    assert drawn[("none", "gaussian")][1] == pytest.approx([10.0, 10.0, 12.0, 16.0])
    with pytest.raises(ValueError, match="no noisy condition"):
        plot_noise_curves(noise_curves(rows[:2]), snr_order(rows[:2]), path)


def test_failed_render_keeps_the_previous_png(tmp_path, monkeypatch):
    path = str(tmp_path / "keep.png")
    plot_mean_attention(np.ones((2, 5)), path)
    before = open(path, "rb").read()

    def broken(self, handle, **kwargs):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_mean_attention(np.zeros((2, 5)), path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["keep.png"]


def test_plot_attention_script(setup, tmp_path):
    yaml_path = os.path.join(RECIPE, "hparams", "plot_attention.yaml")
    script_path = os.path.join(RECIPE, "plot_attention.py")

    files = setup["files"]
    result = subprocess.run(
        [sys.executable, script_path, yaml_path, f"--experiment_folder={setup['experiment']}",
         f"--files={files[0]},{files[5]}", f"--verification_file={setup['trials']}",
         f"--data_folder={os.path.dirname(setup['trials'])}", "--audio_root=null",
         "--max_mean_files=4", f"--output_folder={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = ("attention_spk1_a.png", "attention_spk3_b.png", "attention_mean.png")
    for name in names + ("attention_mean.npy",):
        assert str(tmp_path / name) in result.stdout
    assert "mean attention over 4 files" in result.stdout
    mean_files = [files[i] for i in (0, 2, 3, 5)]  # 4 of the 6, evenly spread
    weights = collect_attention(embedder_of(setup["experiment"]), mean_files, batch_size=16)
    expected = np.mean([weights[p] for p in mean_files], axis=0)
    np.testing.assert_allclose(np.load(tmp_path / "attention_mean.npy"), expected, rtol=1e-5)
