"""Reliability: bad audio and trial lists at inference, killed training and preparation,
checkpoints that do not fit, invalid overrides.

The kills are real: the recipe and the preparation run in subprocesses that get SIGKILL
(no exception handler, no ``finally`` runs), at points made deterministic by watching
the checkpoint folder or by a marker a small driver prints before it hangs.
"""

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch
import torchaudio
import yaml
from speechbrain.core import INTRA_EPOCH_CKPT_FLAG
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.utils.checkpoints import Checkpointer

from fefa_speechbrain.checkpoints import STAGING_PREFIX, AtomicCheckpointer
from fefa_speechbrain.data.audio import AudioError, load_audio
from fefa_speechbrain.data.prepare import prepare_folder_corpus
from fefa_speechbrain.data.synthetic import generate_corpus
from fefa_speechbrain.export import PretrainedFolderError
from fefa_speechbrain.lobes.features import FrameNormalization, Spectrogram
from fefa_speechbrain.inference.embedder import SpeakerEmbedder, load_experiment, pad_signals
from fefa_speechbrain.hparams import load_hparams
from fefa_speechbrain.data.trials import TrialListError
from fefa_speechbrain.evaluation.verification import evaluate_experiment
from fefa_speechbrain.lobes.wrapper import FEFAWrapper
from recipe_scripts import load_script

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb" / "FEFA"
TRAIN_SCRIPT = RECIPE / "train_speaker_embeddings.py"
HPARAMS = RECIPE / "hparams"
TAP_YAML = HPARAMS / "train_thin_resnet34_tap.yaml"
SR = 16000
KILL_TIMEOUT = 240
load_training_hparams = load_script("train_speaker_embeddings").load_training_hparams


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _noise(n, seed=0, channels=None, scale=0.1):
    rng = np.random.default_rng(seed)
    shape = (n,) if channels is None else (n, channels)
    return (scale * rng.standard_normal(shape)).astype("float32")


def _write(path, data, rate=SR, subtype=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype)
    return str(path)


# ------------------------------------------------------------------------ subprocesses


def _run_and_kill(command, log_path, ready, cwd, timeout=KILL_TIMEOUT):
    """Runs ``command``; sends SIGKILL as soon as ``ready(output)`` is true.

    Returns the output (stdout and stderr) up to the kill.
    """
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=cwd)
    deadline = time.monotonic() + timeout
    try:
        while not ready(Path(log_path).read_text(errors="replace")):
            if proc.poll() is not None:
                raise AssertionError(
                    f"{command} ended (rc={proc.returncode}) before the point to kill it at:\n"
                    + Path(log_path).read_text(errors="replace")[-4000:]
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{command} never reached the point to kill it at")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return Path(log_path).read_text(errors="replace")


def _run(command, cwd, timeout=KILL_TIMEOUT):
    """Runs ``command`` to the end; returns (returncode, output, seconds)."""
    start = time.monotonic()
    done = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
        cwd=cwd, timeout=timeout,
    )
    return done.returncode, done.stdout, time.monotonic() - start


# ------------------------------------------------------------------- experiment helpers


def _overrides(folder, **extra):
    return {
        "data_folder": str(folder / "data"),
        "verification_file": str(folder / "veri_test2.txt"),
        "output_folder": str(folder),
        "skip_prep": True,
        "n_speakers": 3,
        "width": 0.125,
        "emb_dim": 32,
        **extra,
    }


def _make_experiment(folder, yaml_path=TAP_YAML, **extra):
    """A training output folder with one checkpoint, as the recipe leaves it."""
    text = yaml.safe_dump(_overrides(folder, **extra))
    hparams = load_hparams(yaml_path, text)
    sb.create_experiment_directory(str(folder), hyperparams_to_save=str(yaml_path), overrides=text)
    hparams["checkpointer"].save_checkpoint(meta={"ErrorRate": 0.5})
    return folder


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return _make_experiment(tmp_path_factory.mktemp("tap") / "experiment")


@pytest.fixture(scope="module")
def embedder(experiment):
    hparams, _ = load_experiment(experiment)
    return SpeakerEmbedder(hparams["modules"])


@pytest.fixture
def embed_calls(monkeypatch):
    """Counts the forward passes of every SpeakerEmbedder."""
    calls = []
    real = SpeakerEmbedder.embed

    def counting(self, wavs, lengths=None):
        calls.append(wavs.shape)
        return real(self, wavs, lengths)

    monkeypatch.setattr(SpeakerEmbedder, "embed", counting)
    return calls


def _bad_headers(folder):
    """Files whose header shows the problem: path -> expected part of the message."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    junk, empty, m4a = folder / "junk.wav", folder / "empty.wav", folder / "vox2.m4a"
    junk.write_bytes(os.urandom(2000))
    empty.write_bytes(b"")
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    return {
        str(junk): "unreadable",
        str(empty): "empty",
        str(m4a): "convert it to WAV first, e.g. ffmpeg",
        _write(folder / "no_frames.wav", np.zeros(0)): "empty",
        _write(folder / "short.wav", _noise(399)): "too short: 399 samples at 16000 Hz < 400",
        _write(folder / "short8k.wav", _noise(150), rate=8000): "too short: 300 samples",
        str(folder / "gone.wav"): "missing (no such file)",
    }


# ----------------------------------------------------------------- inference: bad audio


def test_stereo_and_other_rates_are_converted_when_embedding(tmp_path, embedder):
    mono = _noise(20000, seed=1)
    pair = np.stack([mono + 0.05, mono - 0.05], axis=1)  # averages back to mono
    low = _noise(9000, seed=2)
    paths = {
        "mono": _write(tmp_path / "mono.wav", mono, subtype="FLOAT"),
        "stereo": _write(tmp_path / "stereo.wav", pair, subtype="FLOAT"),
        "8k": _write(tmp_path / "low.wav", low, rate=8000, subtype="FLOAT"),
        "44k": _write(tmp_path / "high.wav", _noise(44100, seed=3), rate=44100, subtype="FLOAT"),
    }
    embeddings = embedder.embed_files(list(paths.values()), batch_size=4)
    assert set(embeddings) == set(paths.values())
    close = dict(atol=1e-5, rtol=0)
    torch.testing.assert_close(embeddings[paths["stereo"]], embeddings[paths["mono"]], **close)
    upsampled = torchaudio.functional.resample(torch.from_numpy(low), 8000, SR)
    assert upsampled.shape[0] == 18000
    torch.testing.assert_close(embeddings[paths["8k"]], embedder.embed(upsampled[None])[0], **close)
    high = embeddings[paths["44k"]]
    assert high.shape == (32,) and torch.isfinite(high).all()


def test_every_bad_header_is_listed_before_any_embedding(tmp_path, embedder, embed_calls):
    good = [_write(tmp_path / f"good{i}.wav", _noise(8000, seed=i)) for i in range(3)]
    bad = _bad_headers(tmp_path / "bad")
    with pytest.raises(AudioError) as error:
        embedder.embed_files(good + list(bad), batch_size=2)
    message = str(error.value)
    assert message.startswith(f"{len(bad)} of {len(bad) + 3} audio files cannot be used")
    for path, reason in bad.items():
        line = next(line for line in message.splitlines() if line.strip().startswith(path))
        assert reason in line, (path, line)
    assert not any(good_path in message for good_path in good)
    assert embed_calls == []  # nothing computed


def test_long_lists_show_the_first_bad_files_and_count_the_rest(tmp_path, embedder, embed_calls):
    bad = [str(tmp_path / f"missing{i:02d}.wav") for i in range(25)]
    with pytest.raises(AudioError) as error:
        embedder.embed_files(bad + [_write(tmp_path / "ok.wav", _noise(8000))])
    lines = str(error.value).splitlines()
    assert lines[0].startswith("25 of 26 audio files cannot be used")
    assert [line.strip().split(":")[0] for line in lines[1:11]] == bad[:10]
    assert lines[11].strip() == "... and 15 more"
    assert embed_calls == []


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_name_the_file(tmp_path, embedder, bad_value):
    samples = np.where(np.arange(8000) == 77, bad_value, 0.1)
    path = _write(tmp_path / "bad.wav", samples, subtype="FLOAT")
    with pytest.raises(AudioError, match=re.escape(f"{path}: contains NaN or infinite samples")):
        embedder.embed_files([_write(tmp_path / "ok.wav", _noise(8000)), path])


def test_corrupt_samples_name_the_file(tmp_path, embedder):
    path = _write(tmp_path / "corrupt.flac", _noise(48000))
    raw = bytearray(Path(path).read_bytes())
    for i in range(2000, len(raw) - 100, 7):
        raw[i] ^= 0x5A  # header intact, frames garbage
    Path(path).write_bytes(bytes(raw))
    with pytest.raises(AudioError, match=re.escape(path) + ": corrupt audio"):
        embedder.embed_files([path])


def test_silent_and_clipped_audio_give_finite_embeddings(tmp_path, embedder):
    clipped = np.clip(_noise(16000, scale=2.0), -1.0, 1.0)
    paths = [
        _write(tmp_path / "silent.wav", np.zeros(16000)),
        _write(tmp_path / "clipped.wav", clipped, subtype="FLOAT"),
        _write(tmp_path / "loud.wav", 1000 * _noise(16000), subtype="FLOAT"),  # float WAV, |x| >> 1
    ]
    embeddings = embedder.embed_files(paths)
    for path in paths:
        assert torch.isfinite(embeddings[path]).all(), path


@pytest.mark.parametrize(
    "yaml_name",
    ["train_thin_resnet34_tap.yaml", "train_thin_seresnet34_tap.yaml", "train_vggm_tap.yaml"],
)
def test_files_shorter_than_the_backbone_minimum_are_padded_exactly(tmp_path, yaml_name):
    """One 25 ms frame is enough: the paper's backbones pad short inputs internally."""
    hparams = load_hparams(HPARAMS / yaml_name, _overrides(tmp_path))
    for module in hparams["modules"].values():
        module.eval()
    embedder = SpeakerEmbedder(hparams["modules"])
    lengths = (400, 1000, 6000, 16000)  # 3 frames ... 101 frames; VGG-M needs 65
    paths = [_write(tmp_path / f"n{n}.wav", _noise(n, seed=n), subtype="FLOAT") for n in lengths]
    together = embedder.embed_files(paths, batch_size=len(paths))
    for path in paths:
        alone = embedder.embed_files([path])[path]
        assert torch.isfinite(alone).all()
        torch.testing.assert_close(together[path], alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(together[paths[0]], together[paths[1]])


def test_a_model_that_cannot_take_a_short_file_names_it(tmp_path):
    """ECAPA-TDNN (reflect padding, dilation 4) needs 5 frames (640 samples): the error
    says which file."""
    ecapa = ECAPA_TDNN(257, channels=[16, 16, 16, 16, 48], attention_channels=8, lin_neurons=8)
    embedder = SpeakerEmbedder(
        {"compute_features": Spectrogram(), "mean_var_norm": FrameNormalization(),
         "embedding_model": FEFAWrapper(ecapa, 257).eval()}
    )
    short = _write(tmp_path / "short.wav", _noise(480))
    assert embedder.embed_files([_write(tmp_path / "ok.wav", _noise(3200))])  # 21 frames: fine
    with pytest.raises(RuntimeError, match=re.escape(short) + r".*480 samples = 0\.030 s"):
        embedder.embed_files([short])


# ------------------------------------------------------------- verification: trial lists


def _trial_corpus(root):
    """Three speakers' files under root; a stereo and an 8 kHz file among them."""
    files = {
        "a/1.wav": _noise(16000, seed=1),
        "a/2.wav": _noise(12000, seed=2),
        "b/1.wav": _noise(14000, seed=3, channels=2),
        "c/1.wav": _noise(20000, seed=5),
    }
    for rel, data in files.items():
        _write(root / rel, data)
    _write(root / "b" / "2.wav", _noise(7000, seed=4), rate=8000)
    return root


def _trial_list(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


GOOD_TRIALS = ["1 a/1.wav a/2.wav", "0 a/1.wav b/1.wav", "1 b/1.wav b/2.wav", "0 c/1.wav b/2.wav"]


def test_bad_trial_list_fails_before_the_model_is_even_loaded(tmp_path, embed_calls):
    root = _trial_corpus(tmp_path / "audio")
    trials = _trial_list(
        tmp_path / "trials.txt",
        GOOD_TRIALS[:2]
        + ["1 a/1.wav", "2 a/1.wav b/1.wav", "yes a/1.wav a/2.wav", "0 a/1.wav zz/9.wav"]
        + ["0 a b c d"]
        + [f"1 a/1.wav missing{i}.wav" for i in range(8)],
    )
    with pytest.raises(TrialListError) as error:
        evaluate_experiment(str(tmp_path / "no_such_experiment"), trials, str(tmp_path / "out"),
                            audio_root=str(root))
    message = str(error.value)
    assert "13 problems (first 10 shown)" in message
    assert "line 3: expected 3 fields 'label enrol test', found 2: '1 a/1.wav'" in message
    assert "line 4: label must be 0 or 1, found '2'" in message
    assert "line 5: label must be 0 or 1, found 'yes'" in message
    assert f"line 6: file not found: zz/9.wav (looked under {root})" in message
    assert "line 7: expected 3 fields 'label enrol test', found 5" in message
    assert "line 13:" not in message  # only the first 10 problems are shown
    assert embed_calls == [] and not (tmp_path / "out").exists()


def test_bad_trial_audio_is_listed_before_any_embedding(tmp_path, experiment, embed_calls):
    root = _trial_corpus(tmp_path / "audio")
    (root / "c" / "2.wav").write_bytes(b"")
    _write(root / "c" / "3.wav", _noise(100))
    extra = ["0 c/2.wav a/1.wav", "1 c/3.wav c/1.wav"]
    trials = _trial_list(tmp_path / "trials.txt", GOOD_TRIALS + extra)
    with pytest.raises(AudioError) as error:
        evaluate_experiment(str(experiment), trials, str(tmp_path / "out"), audio_root=str(root))
    lines = str(error.value).splitlines()
    assert lines[0].startswith("2 of 7 audio files cannot be used (nothing was embedded")
    assert lines[1].strip() == f"{root / 'c' / '2.wav'}: empty: 0-byte file"
    assert lines[2].strip().startswith(f"{root / 'c' / '3.wav'}: too short: 100 samples")
    assert embed_calls == [] and not (tmp_path / "out").exists()


def test_score_norm_problems_fail_before_any_embedding(tmp_path, experiment, embed_calls):
    root = _trial_corpus(tmp_path / "audio")
    trials = _trial_list(tmp_path / "trials.txt", GOOD_TRIALS)
    run = dict(experiment_folder=str(experiment), verification_file=trials,
               output_folder=str(tmp_path / "out"), audio_root=str(root))
    with pytest.raises(ValueError, match="score_norm='s-norm' needs cohort_csv"):
        evaluate_experiment(score_norm="s-norm", **run)
    valid = re.escape("score_norm='z-norm' is not valid; choose one of [None, 's-norm', 'as-norm']")
    with pytest.raises(ValueError, match=valid):
        evaluate_experiment(score_norm="z-norm", **run)
    with pytest.raises(FileNotFoundError, match="cohort_csv .*nowhere.csv does not exist"):
        evaluate_experiment(score_norm="s-norm", cohort_csv=str(tmp_path / "nowhere.csv"), **run)
    cohort = tmp_path / "train.csv"
    cohort.write_text("ID,wav,spk_id\n" + "".join(
        f"u{i},{tmp_path / f'cohort{i}.wav'},s{i % 2}\n" for i in range(4)
    ))
    for i in range(3):  # the fourth cohort file is missing
        _write(tmp_path / f"cohort{i}.wav", _noise(8000, seed=10 + i))
    with pytest.raises(AudioError, match=re.escape(f"{tmp_path / 'cohort3.wav'}: missing")):
        evaluate_experiment(score_norm="s-norm", cohort_csv=str(cohort), **run)
    assert embed_calls == []

    _write(tmp_path / "cohort3.wav", _noise(8000, seed=13))
    results = evaluate_experiment(score_norm="s-norm", cohort_csv=str(cohort), **run)
    assert results["n_files"] == 5 and results["score_norm"] == "s-norm"
    assert sum(shape[0] for shape in embed_calls) == 5 + 4  # trial and cohort files, once each


def test_verification_converts_stereo_and_8k_files_and_scores_every_trial(
    tmp_path, experiment, embedder
):
    root = _trial_corpus(tmp_path / "audio")
    trials = _trial_list(tmp_path / "trials.txt", GOOD_TRIALS)
    results = evaluate_experiment(
        str(experiment), trials, str(tmp_path / "out"), audio_root=str(root)
    )
    rows = [line.split() for line in Path(results["outputs"]["scores"]).read_text().splitlines()]
    assert [(Path(r[0]).relative_to(root).as_posix(), Path(r[1]).relative_to(root).as_posix(), r[2])
            for r in rows] == [tuple(t.split()[1:]) + (t.split()[0],) for t in GOOD_TRIALS]
    stereo = load_audio(root / "b" / "1.wav")
    upsampled = load_audio(root / "b" / "2.wav")
    assert stereo.shape == (14000,) and upsampled.shape == (14000,)
    wavs, lengths = pad_signals([stereo, upsampled])
    enrol, test = torch.nn.functional.normalize(embedder.embed(wavs, lengths), dim=-1)
    assert float(rows[2][3]) == pytest.approx(float(enrol @ test), abs=2e-6)
    assert 0.0 <= results["eer"] <= 1.0 and results["n_target"] == 2


# ----------------------------------------------------- checkpoints that do not fit the yaml


def test_checkpoint_that_does_not_fit_the_hyperparameters_is_named(tmp_path):
    folder = _make_experiment(tmp_path / "experiment")
    saved = folder / "hyperparams.yaml"
    text = saved.read_text()
    assert re.search(r"^ *width: 0\.125\b", text, flags=re.M)  # the key and its resolved use
    saved.write_text(re.sub(r"^( *)width: 0\.125\b", r"\1width: 0.25", text, flags=re.M))
    (checkpoint,) = (folder / "save").glob("CKPT+*")
    expected = (
        re.escape(f"{checkpoint / 'embedding_model.ckpt'} does not fit the ThinResNet34 that "
                  "hyperparams.yaml builds") + r".*shape mismatch: .* in the file, .* in the model"
    )
    with pytest.raises(PretrainedFolderError, match=expected):
        load_experiment(folder)

    saved.write_text(text)
    classifier = checkpoint / "classifier.ckpt"
    intact = classifier.read_bytes()
    classifier.write_bytes(intact[:100])
    with pytest.raises(PretrainedFolderError, match=re.escape(f"{classifier} cannot be read")):
        load_experiment(folder)

    classifier.unlink()
    expected = re.escape(
        f"Checkpoint {checkpoint} lacks classifier.ckpt (it holds ['counter.ckpt', "
        "'embedding_model.ckpt']): it was copied or edited incompletely"
    )
    with pytest.raises(FileNotFoundError, match=expected):
        load_experiment(folder)

    classifier.write_bytes(intact)
    (checkpoint / "counter.ckpt").write_text("not a number")
    expected = re.escape(f"Checkpoint {checkpoint} cannot be loaded into the modules of {saved}: ")
    with pytest.raises(PretrainedFolderError, match=expected):
        load_experiment(folder)

    shutil.rmtree(checkpoint)
    with pytest.raises(FileNotFoundError, match="No complete checkpoint in .*save: train first"):
        load_experiment(folder)
    saved.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{saved} is missing")):
        load_experiment(folder)


# ------------------------------------------------------------ yaml overrides fail at start


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The synthetic VoxCeleb-layout corpus (3 training, 2 test speakers) plus one
    training file with NaN samples, which only a full audio check would see."""
    folder = tmp_path_factory.mktemp("corpus")
    generate_corpus(
        str(folder), n_speakers=5, n_test_speakers=2, sessions_per_speaker=1,
        utts_per_session=8, min_duration=1.2, max_duration=1.6, progress=False,
    )
    (session,) = (folder / "wav" / "id10001").iterdir()
    nan = _noise(int(1.4 * SR), seed=9)
    nan[100] = np.nan
    _write(session / "00099.wav", nan, subtype="FLOAT")
    return folder


def _train_command(corpus, folder, *extra):
    return [
        sys.executable, str(TRAIN_SCRIPT), str(TAP_YAML),
        f"--data_folder={corpus}", f"--verification_file={corpus / 'veri_test2.txt'}",
        f"--prep_folder={folder / 'prep'}", f"--output_folder={folder / 'out'}",
        "--width=0.125", "--sentence_len=1.0", "--batch_size=2", "--num_workers=0",
        "--split_ratio=[75,25]", "--check_audio=header", *extra,
    ]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--fefa=sometimes", ["  fefa='sometimes': choose one of ['none', 'single', 'multi']"]),
        ("--fefa_typo=single", ["KeyError: \"Override 'fefa_typo' not found in: ['seed'",
                                "'fefa', 'fefa_kernel'", "'sentence_len'"]),
    ],
)
def test_training_script_refuses_bad_overrides_before_preparing(
    tmp_path, corpus, override, expected
):
    code, output, _ = _run(_train_command(corpus, tmp_path, override), cwd=tmp_path)
    assert code != 0
    for text in expected:
        assert text in output, output[-3000:]
    assert not (tmp_path / "prep").exists()
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []  # no experiment


def test_invalid_values_are_all_listed_before_preparation(tmp_path, corpus):
    overrides = {
        "data_folder": str(corpus), "verification_file": str(corpus / "veri_test2.txt"),
        "prep_folder": str(tmp_path / "prep"), "output_folder": str(tmp_path / "out"),
        "width": 0.125, "batch_size": 0, "check_audio": "yes", "corpus": "timit",
        "fefa_rescale": "maybe", "num_workers": -1, "lr": 0,
    }
    with pytest.raises(ValueError) as error:
        load_training_hparams(TAP_YAML, overrides)
    assert str(error.value).splitlines()[1:] == [
        "  fefa_rescale='maybe': must be True or False",
        "  corpus='timit': choose one of ['voxceleb', 'folder']",
        "  check_audio='yes': choose one of ['full', 'header', 'none']",
        "  batch_size=0: must be an integer >= 1",
        "  lr=0: must be a number > 0",
        "  num_workers=-1: must be an integer >= 0",
    ]
    assert not (tmp_path / "prep").exists()


def test_tagged_yaml_override_is_applied_and_speakers_are_counted(tmp_path, corpus):
    """SpeechBrain passes overrides as a yaml string; a ``!new:`` tag in it must survive."""
    overrides = "\n".join([
        f"data_folder: {corpus}", f"verification_file: {corpus / 'veri_test2.txt'}",
        f"prep_folder: {tmp_path / 'prep'}", f"output_folder: {tmp_path / 'out'}",
        "width: 0.125", "check_audio: header", "split_ratio: [75, 25]", "batch_size: 4",
        "mean_var_norm: !new:speechbrain.processing.features.InputNormalization",
    ])
    hparams, applied = load_training_hparams(TAP_YAML, overrides)
    norm = hparams["mean_var_norm"]
    assert type(norm).__name__ == "InputNormalization" and norm.norm_type == "global"
    assert hparams["n_speakers"] == 3 and hparams["classifier"].weight.shape[0] == 3
    assert applied.endswith("\nn_speakers: 3") and "!new:" in applied


# --------------------------------------------------------------- training killed, resumed


def _checkpoints(save):
    """Complete checkpoints: (unixtime, path, meta, epoch, brain step), oldest first."""
    found = []
    for path in save.glob("CKPT+*"):
        try:
            meta = yaml.safe_load((path / "CKPT.yaml").read_text())
            epoch = int((path / "counter.ckpt").read_text())
            step = yaml.safe_load((path / "brain.ckpt").read_text())["step"]
        except (OSError, ValueError, TypeError):
            continue  # deleted while we looked
        found.append((meta["unixtime"], path, meta, epoch, step))
    return sorted(found, key=lambda c: c[0])


def _has_intra_epoch_checkpoint(save, epoch):
    return any(
        INTRA_EPOCH_CKPT_FLAG in meta and e == epoch for _, _, meta, e, _ in _checkpoints(save)
    )


HALF_WRITE_DRIVER = """
import io, os, runpy, sys, time
import torch, yaml

real_save = torch.save

def half_write_then_hang(obj, f, *args, **kwargs):
    if isinstance(f, (str, os.PathLike)) and os.path.basename(f) == "embedding_model.ckpt":
        meta = yaml.safe_load(open(os.path.join(os.path.dirname(f), "CKPT.yaml")))
        if meta["end-of-epoch"]:
            buffer = io.BytesIO()
            real_save(obj, buffer)
            with open(f, "wb") as out:
                out.write(buffer.getvalue()[: buffer.tell() // 2])
            print("HALF-WRITTEN", f, flush=True)
            time.sleep(600)
    return real_save(obj, f, *args, **kwargs)

torch.save = half_write_then_hang
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _epochs(text, pattern=r"^epoch: (\d+),"):
    return [int(n) for n in re.findall(pattern, text, flags=re.M)]


def test_training_killed_mid_epoch_and_mid_checkpoint_resumes_and_finishes(tmp_path, corpus):
    """SIGKILL inside epoch 2, then SIGKILL while the end-of-epoch-2 checkpoint is half
    written, then the same command again: it resumes from the last complete checkpoint
    (mid-epoch), never loads the half-written one, and ends after exactly 3 epochs."""
    command = _train_command(corpus, tmp_path, "--number_of_epochs=3", "--ckpt_interval_steps=2")
    out, save = tmp_path / "out", tmp_path / "out" / "save"

    first = _run_and_kill(command, tmp_path / "first.log", cwd=tmp_path,
                          ready=lambda _: _has_intra_epoch_checkpoint(save, epoch=2))
    nan_file = corpus / "wav" / "id10001"
    warning = (
        rf"Skipping unreadable training audio: {re.escape(str(nan_file))}\S*00099\.wav: "
        "contains NaN or infinite samples"
    )
    assert re.search(warning, first)
    assert _epochs((out / "train_log.txt").read_text()) == [1]
    newest = _checkpoints(save)[-1]
    assert INTRA_EPOCH_CKPT_FLAG in newest[2] and newest[3] == 2 and newest[4] > 0

    driver = tmp_path / "half_write_driver.py"
    driver.write_text(HALF_WRITE_DRIVER)
    second = _run_and_kill([sys.executable, str(driver)] + command[1:], tmp_path / "second.log",
                           cwd=tmp_path, ready=lambda text: "HALF-WRITTEN" in text)
    assert f"Loading a checkpoint from {newest[1]}" in second
    assert "already prepared with the same options and files; nothing to do" in second
    (partial,) = [p for p in save.iterdir() if p.name.startswith(STAGING_PREFIX)]
    assert (partial / "CKPT.yaml").is_file()  # looks like a checkpoint, with a truncated model
    complete = {c[1] for c in _checkpoints(save)}
    assert {c.path for c in Checkpointer(save).list_checkpoints()} == complete
    resume_from = _checkpoints(save)[-1]
    assert INTRA_EPOCH_CKPT_FLAG in resume_from[2] and resume_from[3] == 2
    log_before = (out / "train_log.txt").read_text()
    assert _epochs(log_before) == [1, 2]  # epoch 2 was logged, its checkpoint never finished

    code, third, _ = _run(command, cwd=tmp_path)
    assert code == 0, third[-4000:]
    assert f"Removing incomplete checkpoint {partial}" in third
    assert re.findall(r"Loading a checkpoint from (\S+)", third) == [str(resume_from[1])]
    assert _epochs(third, r"Going into epoch (\d+)") == [2, 3]
    after_resume = third.split("Going into epoch 2", 1)[1]
    first_bar = re.search(r"\|\s*(\d+)/(\d+) \[", after_resume)
    assert int(first_bar.group(1)) == resume_from[4]  # continued mid-epoch, not from 0
    log = (out / "train_log.txt").read_text()
    assert log.startswith(log_before) and _epochs(log[len(log_before):]) == [2, 3]
    assert not any(p.name.startswith(STAGING_PREFIX) for p in save.iterdir())
    final = _checkpoints(save)
    assert final[-1][3] == 3 and final[-1][2]["end-of-epoch"] is True
    assert all(INTRA_EPOCH_CKPT_FLAG not in c[2] for c in final)


CHECKPOINT_DRIVER = """
import io, os, sys, time
import torch
from fefa_speechbrain.checkpoints import AtomicCheckpointer

folder = sys.argv[1]
torch.manual_seed(0)
model = torch.nn.Linear(256, 256)
checkpointer = AtomicCheckpointer(folder, recoverables={"model": model})
checkpointer.save_checkpoint(meta={"step": 1})
torch.save(model.state_dict(), os.path.join(folder, os.pardir, "expected.pt"))
with torch.no_grad():
    model.weight.add_(1.0)
real_save = torch.save

def half_write_then_hang(obj, f, *args, **kwargs):
    buffer = io.BytesIO()
    real_save(obj, buffer)
    with open(f, "wb") as out:
        out.write(buffer.getvalue()[: buffer.tell() // 2])
    print("HALF-WRITTEN", f, flush=True)
    time.sleep(600)

torch.save = half_write_then_hang
checkpointer.save_checkpoint(meta={"step": 2})
"""


def test_checkpoint_killed_mid_write_is_never_loaded(tmp_path):
    folder = tmp_path / "save"
    driver = tmp_path / "driver.py"
    driver.write_text(CHECKPOINT_DRIVER)
    output = _run_and_kill([sys.executable, str(driver), str(folder)], tmp_path / "log",
                           cwd=tmp_path, ready=lambda text: "HALF-WRITTEN" in text)
    half = Path(output.split("HALF-WRITTEN ", 1)[1].split()[0])
    assert half.parent.name.startswith(STAGING_PREFIX) and half.stat().st_size > 0
    good = [c.path for c in Checkpointer(folder).list_checkpoints()]
    assert len(good) == 1 and good[0] != half.parent  # SpeechBrain does not see it

    model = torch.nn.Linear(256, 256)
    recovered = AtomicCheckpointer(folder, recoverables={"model": model}).recover_if_possible()
    assert not half.parent.exists()
    assert recovered.path == good[0] and recovered.meta["step"] == 1
    expected = torch.load(tmp_path / "expected.pt", weights_only=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


# ------------------------------------------------------------ preparation killed, rerun

PREP_DRIVER = """
import sys, time
from fefa_speechbrain import atomic as atomic_io
from fefa_speechbrain.data import manifests, prepare

root, save, stage = sys.argv[1:4]

def hang(marker):
    print("KILL-ME", marker, flush=True)
    time.sleep(600)

if stage == "audio check":
    real_inspect, seen = manifests._inspect_job, []
    def inspect(job):
        seen.append(job)
        if len(seen) == 10:
            hang("in the audio check")
        return real_inspect(job)
    manifests._inspect_job = inspect
elif stage == "between two files":
    real_write = manifests.atomic_write_csv
    def write(path, rows, fieldnames):
        real_write(path, rows, fieldnames)
        hang("after writing " + path)
    manifests.atomic_write_csv = write
else:  # inside a file
    real_row = atomic_io._row_values
    def row(values, fieldnames, path, number):
        if number == 3:
            hang("while writing row 3 of " + path)
        return real_row(values, fieldnames, path, number)
    atomic_io._row_values = row
prepare.prepare_folder_corpus(root, save, test_speakers=["s4", "s5"], seg_dur=1.0, verbose=False)
"""
PREP_OUTPUTS = ("train.csv", "dev.csv", "enrol.csv", "test.csv", "trials.txt")


def _prepare(root, save, seg_dur):
    return prepare_folder_corpus(
        str(root), str(save), test_speakers=["s4", "s5"], seg_dur=seg_dur, verbose=False
    )


def _outputs(save):
    return {name: (save / name).read_text() for name in PREP_OUTPUTS}


@pytest.fixture(scope="module")
def folder_corpus(tmp_path_factory):
    """Six speakers of six 2.5 s files, and the outputs of an uninterrupted run."""
    root = tmp_path_factory.mktemp("folder_corpus")
    for speaker in range(6):
        for utt in range(6):
            noise = _noise(int(2.5 * SR), seed=10 * speaker + utt)
            _write(root / f"s{speaker}" / f"u{utt}.wav", noise)
    reference = root.parent / f"{root.name}_reference"
    _prepare(root, reference, seg_dur=1.0)
    return root, _outputs(reference)


def _rows(text):
    return list(csv.reader(text.splitlines()))


@pytest.mark.parametrize("stage", ["audio check", "between two files", "inside a file"])
def test_preparation_killed_then_rerun_gives_complete_correct_outputs(
    tmp_path, folder_corpus, stage
):
    root, reference = folder_corpus
    save = tmp_path / "prepared"
    # A complete preparation with other options is already there (a re-preparation is
    # interrupted): the kill must not leave a mix that passes for either.
    _prepare(root, save, seg_dur=0.5)
    old = _outputs(save)
    assert len(_rows(old["train.csv"])) > len(_rows(reference["train.csv"]))

    driver = tmp_path / "driver.py"
    driver.write_text(PREP_DRIVER)
    _run_and_kill([sys.executable, str(driver), str(root), str(save), stage], tmp_path / "log",
                  cwd=tmp_path, ready=lambda text: "KILL-ME" in text)
    for name, text in _outputs(save).items():  # each file is whole: the old or the new one
        assert text in (old[name], reference[name]), name
    if stage == "audio check":
        assert _outputs(save) == old and (save / "prepare_options.json").is_file()
    else:
        assert not (save / "prepare_options.json").exists()  # never taken for complete
        assert _prepare(root, save, seg_dur=0.5)["skipped"] is False  # old options: redone too
        assert _outputs(save) == old

    assert _prepare(root, save, seg_dur=1.0)["skipped"] is False
    assert _outputs(save) == reference
    stamps = {name: (save / name).stat().st_mtime_ns for name in PREP_OUTPUTS}
    assert _prepare(root, save, seg_dur=1.0)["skipped"] is True
    assert {name: (save / name).stat().st_mtime_ns for name in PREP_OUTPUTS} == stamps


# ------------------------------------------- verification: untrusted and unusual trial lists


def test_results_json_agrees_with_scores_txt(tmp_path, experiment):
    """The labels and EER written to results.json are those of scores.txt (a label flip
    before writing results would pass every other check)."""
    import json

    from fefa_speechbrain.evaluation.metrics import compute_eer

    root = _trial_corpus(tmp_path / "audio")
    lines = [*GOOD_TRIALS, "0 a/2.wav c/1.wav", "0 a/1.wav b/2.wav", "1 b/2.wav b/1.wav"]
    trials = _trial_list(tmp_path / "trials.txt", lines)
    results = evaluate_experiment(str(experiment), trials, str(tmp_path / "out"), audio_root=str(root))
    rows = [line.split() for line in Path(results["outputs"]["scores"]).read_text().splitlines()]
    labels = [int(r[2]) for r in rows]
    scores = [float(r[3]) for r in rows]
    assert labels == [int(line[0]) for line in lines]
    saved = json.loads(Path(results["outputs"]["results"]).read_text())
    assert saved["n_target"] == sum(labels) and saved["n_nontarget"] == len(labels) - sum(labels)
    assert saved["eer"] == pytest.approx(compute_eer(scores, labels)[0], abs=1e-6)
    assert saved["eer"] != pytest.approx(compute_eer(scores, [1 - x for x in labels])[0])


def test_trial_paths_outside_the_audio_root_are_refused_unless_allowed(
    tmp_path, experiment, embed_calls
):
    root = _trial_corpus(tmp_path / "audio")
    outside = tmp_path / "secret.wav"
    _write(outside, _noise(16000, seed=7))
    trials = _trial_list(tmp_path / "trials.txt", [
        "0 a/1.wav ../secret.wav", f"0 a/1.wav {outside}", "1 a/1.wav a/2.wav",
    ])
    with pytest.raises(TrialListError) as error:
        evaluate_experiment(str(experiment), trials, str(tmp_path / "out"), audio_root=str(root))
    message = str(error.value)
    assert "line 1: ../secret.wav leaves the audio root (..)" in message
    assert f"line 2: {outside} is absolute (must be relative to the audio root)" in message
    assert "allow it with allow_outside_root" in message
    assert embed_calls == []


def test_allowed_outside_paths_are_scored(tmp_path, experiment):
    root = _trial_corpus(tmp_path / "audio")
    _write(tmp_path / "secret.wav", _noise(16000, seed=7))
    trials = _trial_list(tmp_path / "trials.txt", ["0 a/1.wav ../secret.wav", "1 a/1.wav a/2.wav"])
    results = evaluate_experiment(
        str(experiment), trials, str(tmp_path / "out"), audio_root=str(root), allow_outside_root=True
    )
    assert results["n_files"] == 3


def test_bom_quotes_and_spaces_are_read_and_bad_bytes_named(tmp_path, experiment):
    root = _trial_corpus(tmp_path / "audio")
    shutil.copy(root / "a" / "2.wav", root / "a" / "zoom in_01.wav")
    path = tmp_path / "trials.txt"
    path.write_bytes(b"\xef\xbb\xbf1 a/1.wav 'a/zoom in_01.wav'\n0 \"a/zoom in_01.wav\" c/1.wav\n")
    results = evaluate_experiment(str(experiment), str(path), str(tmp_path / "out"), audio_root=str(root))
    assert results["n_target"] == 1 and results["n_files"] == 3
    first = Path(results["outputs"]["scores"]).read_text().splitlines()[0]
    assert f"'{root}/a/zoom in_01.wav'" in first  # scores.txt quotes it the same way

    path.write_bytes(b"1 a/1.wav a/2.wav\n0 a/1.wav caf\xe9/1.wav\n")
    with pytest.raises(TrialListError, match=r"line 2: not UTF-8 \(byte 0xe9 at column 14\)"):
        evaluate_experiment(str(experiment), str(path), str(tmp_path / "out"), audio_root=str(root))
    path.write_text("1 a/1.wav a/zoom in_01.wav\n")
    with pytest.raises(TrialListError, match="found 4: .*a path with spaces must be quoted"):
        evaluate_experiment(str(experiment), str(path), str(tmp_path / "out"), audio_root=str(root))


def test_self_trials_are_refused_and_duplicates_reported(tmp_path, experiment, caplog):
    root = _trial_corpus(tmp_path / "audio")
    trials = _trial_list(tmp_path / "trials.txt", ["1 a/1.wav a/1.wav", "1 a/1.wav a/2.wav"])
    with pytest.raises(TrialListError, match="line 1: enrol and test are the same file: a/1.wav"):
        evaluate_experiment(str(experiment), trials, str(tmp_path / "out"), audio_root=str(root))
    trials = _trial_list(tmp_path / "trials.txt", [*GOOD_TRIALS, "1 a/2.wav a/1.wav"])
    with caplog.at_level("WARNING"):
        results = evaluate_experiment(str(experiment), trials, str(tmp_path / "out"), audio_root=str(root))
    assert "1 duplicate trials (kept, each counts in the EER): line 5 repeats line 1" in caplog.text
    assert results["n_target"] == 3


def test_an_unwritable_output_folder_fails_before_any_embedding(tmp_path, experiment, embed_calls):
    root = _trial_corpus(tmp_path / "audio")
    trials = _trial_list(tmp_path / "trials.txt", GOOD_TRIALS)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError, match=r"output folder .*a_file/out cannot be written"):
        evaluate_experiment(str(experiment), trials, str(tmp_path / "a_file" / "out"), audio_root=str(root))
    assert embed_calls == []


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('FEFA_MARKER', '/nonexistent/x')}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    from fefa_speechbrain.checkpoints import read_state_dict

    marker = tmp_path / "ran"
    monkeypatch.setenv("FEFA_MARKER", str(marker))
    torch.save({"weight": torch.zeros(2), "payload": _RunsCode()}, tmp_path / "evil.ckpt")
    with pytest.raises(PretrainedFolderError, match="weights_only=True refuses"):
        read_state_dict(tmp_path / "evil.ckpt")
    assert not marker.exists()
