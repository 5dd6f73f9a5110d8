"""Recipe tests: the VoxCeleb/FEFA scripts run as a user runs them, on a generated corpus.

Every script is started as a subprocess (``python train_speaker_embeddings.py
hparams/<name>.yaml --key=value ...``) on a tiny deterministic corpus in the VoxCeleb
layout (:func:`fefa_speechbrain.data.synthetic.generate_corpus`):

- the whole recipe: preparation -> training (2 epochs) -> verification -> export ->
  ``SpeakerRecognition.from_hparams`` -> ``verify_files``;
- one debug step of every row of ``tests/recipes/VoxCeleb.csv`` (every training yaml
  with every FEFA setting, and the verification, noise and attention scripts), with the
  row's ``test_debug_checks``; ECAPA's yaml refuses ``--fefa=multi``;
- CSVs written the way SpeechBrain's own ``voxceleb_prepare.py`` writes them, used
  unchanged through ``--skip_prep=True``;
- resume after a run killed with SIGKILL (slow: about 30 s).

The slow tests (resume here, DDP in test_ddp.py) have ``slow`` in their names:
``-k "not slow"`` leaves them out while iterating.

``test_debug_flags`` of the CSV point at ``tests/tmp/fefa/{corpus,prep,experiment}``
(what SpeechBrain's runner makes through ``tests/recipes/setup``); here they are replaced
by the generated corpus, the prepared CSVs and the 2-epoch training run of this module,
and the runner adds ``--output_folder``. The debug runs
go two at a time (the machine has two cores); every subprocess gets ``OMP_NUM_THREADS=1``.
"""

import csv
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from fefa_speechbrain.data.synthetic import generate_corpus

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb" / "FEFA"
RECIPE_CSV = REPO / "tests" / "recipes" / "VoxCeleb.csv"
CSV_COLUMNS = ["ID", "duration", "wav", "start", "stop", "spk_id"]
SAMPLE_RATE = 16000
CORPUS_CONFIG = dict(
    n_speakers=6,
    n_test_speakers=2,
    sessions_per_speaker=2,
    utts_per_session=3,  # 6 files per speaker: the default 90/10 split keeps one for dev
    min_duration=1.5,
    max_duration=2.5,
    seed=0,
)
TINY = ["--width=0.125", "--sentence_len=1.0", "--batch_size=4", "--num_workers=0"]
RUN_TIMEOUT = 600
TRAIN_LOG_LINE = re.compile(r"^epoch: (\d+), lr: (\S+) - train loss: (\S+) - valid loss: (\S+)")
LOADED = re.compile(r"Loading a checkpoint from (\S+)")


# --------------------------------------------------------------------------- helpers


def run(args, cwd=RECIPE, timeout=RUN_TIMEOUT):
    """Runs ``python <args>`` with one thread per process; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def subprocess_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("RANK", None)
    env.pop("LOCAL_RANK", None)
    return env


def check_ok(result, what):
    """Asserts a zero exit status, showing the end of the output otherwise."""
    assert result.returncode == 0, (
        f"{what} exited with {result.returncode}\n--- stdout ---\n{result.stdout[-3000:]}"
        f"\n--- stderr ---\n{result.stderr[-5000:]}"
    )


def train_log_epochs(path):
    """[(epoch, lr string, train loss)] of a train_log.txt, in file order."""
    rows = []
    for line in Path(path).read_text().splitlines():
        match = TRAIN_LOG_LINE.match(line)
        assert match, f"unexpected line in {path}: {line!r}"
        rows.append((int(match.group(1)), match.group(2), float(match.group(3))))
    return rows


def checkpoints(save_folder):
    """Complete checkpoint folders (CKPT+...) of a save folder, as {path: epoch}."""
    found = {}
    for path in Path(save_folder).glob("CKPT+*"):
        found[path] = int((path / "counter.ckpt").read_text().strip())
    return found


def checkpoint_meta(path):
    """The meta data SpeechBrain saved with a checkpoint (CKPT.yaml)."""
    return yaml.safe_load((Path(path) / "CKPT.yaml").read_text())


def read_csv_rows(path):
    with open(path, newline="", encoding="utf-8") as fin:
        return list(csv.DictReader(fin))


def read_trial_list(path):
    return [line.split() for line in Path(path).read_text().splitlines() if line.strip()]


def row_id(row):
    stem = Path(row["Hparam_file"]).stem
    fefa = re.search(r"--fefa=(\w+)", row["test_debug_flags"])
    return f"{stem}-fefa_{fefa.group(1)}" if fefa else stem


def parse_debug_checks(text):
    """``file_exists=[a,b] performance_check=[file, metric, <bound, epoch: N]`` -> dict."""
    checks = {}
    for name, body in re.findall(r"(\w+)=\[([^\]]*)\]", text):
        checks[name] = [item.strip() for item in body.split(",") if item.strip()]
    unknown = set(checks) - {"file_exists", "performance_check"}
    assert not unknown, f"unknown test_debug_checks {unknown} in {text!r}"
    return checks


def check_performance(output_folder, check):
    """SpeechBrain's performance_check: ``[file, metric, <bound or >bound, epoch: N]``."""
    file_name, metric, condition, epoch = check
    prefix = epoch.replace(" ", "") + ","
    lines = [
        line
        for line in (output_folder / file_name).read_text().splitlines()
        if line.replace(" ", "").startswith(prefix)
    ]
    assert lines, f"no line for {epoch} in {output_folder / file_name}"
    value = float(re.search(re.escape(metric) + r": ([^\s,]+)", lines[-1]).group(1))
    bound = float(condition[1:])
    ok = value < bound if condition[0] == "<" else value > bound
    assert math.isfinite(value) and ok, f"{metric} = {value} fails {condition} ({lines[-1]})"


RECIPE_ROWS = read_csv_rows(RECIPE_CSV)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The generated VoxCeleb-layout corpus (6 speakers, the last 2 in the trial list)."""
    folder = tmp_path_factory.getbasetemp() / "synthetic_voxceleb"
    generate_corpus(str(folder), progress=False, **CORPUS_CONFIG)
    return folder


@pytest.fixture(scope="module")
def prep_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("prepared")


@pytest.fixture(scope="module")
def trained(corpus, prep_folder, tmp_path_factory):
    """Preparation + 2 epochs of thin-ResNet34 + TAP with FEFA(S), run from the recipe folder."""
    output = tmp_path_factory.mktemp("experiment") / "thin_resnet34_tap"
    result = run(
        [
            "train_speaker_embeddings.py",
            "hparams/train_thin_resnet34_tap.yaml",
            f"--data_folder={corpus}",
            f"--verification_file={corpus}/veri_test2.txt",
            f"--output_folder={output}",
            f"--prep_folder={prep_folder}",
            "--number_of_epochs=2",
            *TINY,
        ]
    )
    check_ok(result, "train_speaker_embeddings.py")
    return output


@pytest.fixture(scope="module")
def verified(trained, corpus):
    """speaker_verification.py on the trained model (plain cosine, default output folder)."""
    result = run(
        [
            "speaker_verification.py",
            "hparams/verification.yaml",
            f"--data_folder={corpus}",
            f"--experiment_folder={trained}",
            f"--verification_file={corpus}/veri_test2.txt",
            f"--audio_root={corpus}/wav",
            "--batch_size=4",
        ]
    )
    check_ok(result, "speaker_verification.py")
    return trained / "verification", result.stdout


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "thin_resnet34_tap_fefa_single"
    result = run(["export_pretrained.py", trained, folder])
    check_ok(result, "export_pretrained.py")
    return folder, result.stdout


@pytest.fixture(scope="module")
def debug_runs(corpus, prep_folder, trained, tmp_path_factory):
    """Starts every row of tests/recipes/VoxCeleb.csv, two at a time: {row id: Future}.

    Depends on ``trained``: the data are prepared (each run finds them up to date and only
    reads them) and ``{experiment}`` exists.
    """
    places = {"corpus": corpus, "prep": prep_folder, "experiment": trained}
    base = tmp_path_factory.mktemp("debug_runs")

    def start(row):
        output = base / row_id(row)
        text = row["test_debug_flags"]
        for name, path in places.items():
            text = text.replace(f"tests/tmp/fefa/{name}", str(path))
        flags = shlex.split(text)
        args = [row["Script_file"], row["Hparam_file"], *flags, f"--output_folder={output}"]
        return output, run(args, cwd=REPO)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {row_id(row): pool.submit(start, row) for row in RECIPE_ROWS}
        yield futures
        for future in futures.values():
            future.cancel()


# --------------------------------------------------------------------------- end to end


def test_prepare_and_train_two_epochs(trained, corpus, prep_folder):
    """Preparation writes SpeechBrain's CSV columns; 2 epochs are logged, checkpointed once."""
    train_rows = read_csv_rows(prep_folder / "train.csv")
    with open(prep_folder / "train.csv", encoding="utf-8") as fin:
        assert fin.readline().strip().split(",") == CSV_COLUMNS
    test_speakers = {line[1].split("/")[0] for line in read_trial_list(corpus / "veri_test2.txt")}
    train_speakers = {row["spk_id"] for row in train_rows}
    assert train_speakers == {"id10001", "id10002", "id10003", "id10004"}
    assert not train_speakers & test_speakers
    assert all(os.path.isabs(row["wav"]) and os.path.isfile(row["wav"]) for row in train_rows)

    epochs = train_log_epochs(trained / "train_log.txt")
    assert [epoch for epoch, _, _ in epochs] == [1, 2]
    # LinearScheduler from lr=1e-4 to lr_final=1e-5 over number_of_epochs=2
    assert [lr for _, lr, _ in epochs] == ["1.00e-04", "1.00e-05"]
    assert all(math.isfinite(loss) for _, _, loss in epochs)

    # kept: the latest checkpoint (epoch 2) and the best by ErrorRate, if it is another one
    saved = checkpoints(trained / "save")
    error_rates = {epoch: checkpoint_meta(path)["ErrorRate"] for path, epoch in saved.items()}
    assert sorted(saved.values()) in ([2], [1, 2]), saved
    if 1 in error_rates:
        assert error_rates[1] < error_rates[2]
    latest = next(path for path, epoch in saved.items() if epoch == 2)
    for name in ("embedding_model", "classifier", "counter", "optimizer", "brain"):
        assert (latest / f"{name}.ckpt").is_file()
    assert not list((trained / "save").glob("partial-*"))

    # the classifier is sized from the training CSV, and the saved yaml says so
    assert re.search(r"^n_speakers: 4\b", (trained / "hyperparams.yaml").read_text(), re.M)
    labels = (trained / "save" / "label_encoder.txt").read_text()
    assert sorted(re.findall(r"'(id\d+)' => \d+", labels)) == sorted(train_speakers)


def test_speaker_verification(verified, corpus):
    """Scores every trial once, in list order; results.json matches the list; DET plot."""
    folder, stdout = verified
    trials = read_trial_list(corpus / "veri_test2.txt")
    results = json.loads((folder / "results.json").read_text())
    expected_keys = {
        "eer", "eer_threshold", "min_dcf_0.01", "min_dcf_0.05", "n_target", "n_nontarget",
        "checkpoint", "verification_file", "score_norm", "n_files", "outputs",
    }
    assert expected_keys <= set(results)
    assert results["n_target"] == sum(label == "1" for label, _, _ in trials)
    assert results["n_nontarget"] == sum(label == "0" for label, _, _ in trials)
    assert results["n_files"] == len({path for _, *paths in trials for path in paths})
    assert results["score_norm"] is None
    assert 0.0 <= results["eer"] <= 1.0
    assert 0.0 <= results["min_dcf_0.01"] <= 1.0 and 0.0 <= results["min_dcf_0.05"] <= 1.0
    assert f"EER {100 * results['eer']:.2f}%" in stdout

    lines = (folder / "scores.txt").read_text().splitlines()
    assert len(lines) == len(trials)
    for (label, enrol, test), line in zip(trials, lines):
        fields = line.split()
        assert fields[:3] == [str(corpus / "wav" / enrol), str(corpus / "wav" / test), label]
        assert math.isfinite(float(fields[3])) and -1.0 - 1e-6 <= float(fields[3]) <= 1.0 + 1e-6
    assert (folder / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_and_load_with_speechbrain(exported, verified, corpus):
    """The exported folder loads offline with SpeakerRecognition and scores like the recipe."""
    from speechbrain.inference.speaker import SpeakerRecognition

    folder, stdout = exported
    assert f"SpeakerRecognition.from_hparams(source=\"{folder}\"" in stdout
    for name in ("hyperparams.yaml", "embedding_model.ckpt", "classifier.ckpt",
                 "label_encoder.ckpt", "config.json", "README.md"):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert config["speechbrain_interface"] == "SpeakerRecognition"
    assert (config["fefa"], config["embedding_dim"], config["n_speakers"]) == ("single", 512, 4)

    model = SpeakerRecognition.from_hparams(
        source=str(folder), savedir=None, run_opts={"device": "cpu"}
    )
    recipe_scores = {}
    for line in (verified[0] / "scores.txt").read_text().splitlines():
        enrol, test, label, score = line.split()
        recipe_scores.setdefault(label, (enrol, test, float(score)))
    for label in ("1", "0"):  # one same-speaker and one different-speaker trial
        enrol, test, expected = recipe_scores[label]
        score, decision = model.verify_files(enrol, test)
        assert score.shape == (1,) and decision.dtype == torch.bool
        assert torch.isfinite(score).all()
        assert float(score) == pytest.approx(expected, abs=1e-5)


# --------------------------------------------------------------------------- debug matrix


@pytest.mark.parametrize("row", RECIPE_ROWS, ids=row_id)
def test_recipe_csv_debug_run(row, debug_runs):
    """One debug step of a row of tests/recipes/VoxCeleb.csv, then its test_debug_checks."""
    output, result = debug_runs[row_id(row)].result()
    check_ok(result, f"{row['Script_file']} {row['Hparam_file']}")
    checks = parse_debug_checks(row["test_debug_checks"])
    missing = [name for name in checks.get("file_exists", []) if not (output / name).exists()]
    assert not missing, f"missing outputs {missing} in {output}"
    if "performance_check" in checks:
        check_performance(output, checks["performance_check"])
    if "--fefa=" in row["test_debug_flags"]:
        fefa = re.search(r"--fefa=(\w+)", row["test_debug_flags"]).group(1)
        assert re.search(rf"^fefa: {fefa}\b", (output / "hyperparams.yaml").read_text(), re.M)


def test_ecapa_refuses_multi(corpus, prep_folder, tmp_path):
    """FEFA(M) needs hidden time-frequency maps: ECAPA's yaml fails at load, clearly."""
    result = run(
        [
            "train_speaker_embeddings.py",
            "hparams/train_ecapa_fefa.yaml",
            f"--data_folder={corpus}",
            f"--verification_file={corpus}/veri_test2.txt",
            f"--output_folder={tmp_path / 'out'}",
            f"--prep_folder={prep_folder}",
            "--ecapa_channels=16",
            "--fefa=multi",
            "--debug",
        ]
    )
    assert result.returncode != 0
    assert "fefa='multi' needs a backbone with hidden time-frequency maps" in result.stderr
    assert "FEFAWrapper supports 'none' and 'single'" in result.stderr
    assert not (tmp_path / "out" / "save").exists()


# --------------------------------------------------------------------------- SpeechBrain CSVs


def speechbrain_style_rows(corpus, speakers, seg_dur=1.0):
    """Rows as SpeechBrain's voxceleb_prepare.py writes them: fixed chunks, the rest dropped.

    ID ``<spk>--<video>--<utt>_<start s>_<stop s>``, duration of the whole file in
    seconds, absolute path, start/stop in samples.
    """
    rows = []
    for speaker in speakers:
        for wav in sorted((corpus / "wav" / speaker).glob("*/*.wav")):
            duration = sf.info(str(wav)).frames / SAMPLE_RATE
            video, utt = wav.parent.name, wav.stem
            for index in range(int(duration / seg_dur)):
                start, stop = index * seg_dur, index * seg_dur + seg_dur
                rows.append(
                    {
                        "ID": f"{speaker}--{video}--{utt}_{start}_{stop}",
                        "duration": duration,
                        "wav": str(wav),
                        "start": int(start * SAMPLE_RATE),
                        "stop": int(stop * SAMPLE_RATE),
                        "spk_id": speaker,
                    }
                )
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.DictWriter(fout, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def test_speechbrain_prepared_csvs_train_unchanged(corpus, tmp_path):
    """CSVs in the format of SpeechBrain's own VoxCeleb preparation train with skip_prep."""
    speakers = ["id10001", "id10002", "id10003"]
    rows = speechbrain_style_rows(corpus, speakers)
    assert rows[0]["ID"].endswith("_0.0_1.0")
    dev = [next(row for row in rows if row["spk_id"] == speaker) for speaker in speakers]
    train = [row for row in rows if row not in dev]
    write_csv(tmp_path / "train.csv", train)
    write_csv(tmp_path / "dev.csv", dev)
    output, unused_prep = tmp_path / "out", tmp_path / "never_written"
    result = run(
        [
            "train_speaker_embeddings.py",
            "hparams/train_thin_resnet34_gvlad.yaml",
            f"--data_folder={corpus}",
            f"--verification_file={corpus}/veri_test2.txt",
            "--skip_prep=True",
            f"--train_annotation={tmp_path / 'train.csv'}",
            f"--valid_annotation={tmp_path / 'dev.csv'}",
            f"--prep_folder={unused_prep}",
            f"--output_folder={output}",
            *TINY,
            "--debug",
            "--debug_batches=1",
            "--debug_epochs=1",
        ]
    )
    check_ok(result, "train_speaker_embeddings.py with SpeechBrain's CSVs")
    assert not unused_prep.exists()
    assert re.search(r"^n_speakers: 3\b", (output / "hyperparams.yaml").read_text(), re.M)
    labels = (output / "save" / "label_encoder.txt").read_text()
    assert sorted(re.findall(r"'(id\d+)' => \d+", labels)) == speakers
    assert [epoch for epoch, _, _ in train_log_epochs(output / "train_log.txt")] == [1]


# --------------------------------------------------------------------------- resume (slow)


def test_slow_resume_after_kill(corpus, prep_folder, trained, tmp_path):
    """Slow (about 30 s). SIGKILL after the first checkpoint, restart: no epoch is redone.

    Whatever the moment of the kill, the restarted run must start at the epoch after the
    newest complete checkpoint (K), log epochs K+1..3 once each with the scheduled
    learning rates, and leave no partial checkpoint. ``trained`` makes sure the data are
    prepared, so the run spends its time in epochs.
    """
    output = tmp_path / "resume"
    command = [
        "train_speaker_embeddings.py",
        "hparams/train_thin_resnet34_tap.yaml",
        f"--data_folder={corpus}",
        f"--verification_file={corpus}/veri_test2.txt",
        f"--output_folder={output}",
        f"--prep_folder={prep_folder}",
        "--number_of_epochs=3",
        "--width=0.125",
        "--sentence_len=1.0",
        "--batch_size=2",  # 10 steps per epoch: a long window for the kill
        "--num_workers=0",
    ]
    log_path = tmp_path / "first_run.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, *command], cwd=RECIPE, env=subprocess_env(),
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + RUN_TIMEOUT
            while not list((output / "save").glob("CKPT+*")):
                assert process.poll() is None, (
                    f"the first run ended ({process.returncode}) before any checkpoint:\n"
                    + log_path.read_text()[-3000:]
                )
                assert time.monotonic() < deadline, "no checkpoint before the timeout"
                time.sleep(0.01)
            assert process.poll() is None, "the first run finished before it was interrupted"
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.wait()
    assert process.returncode == -signal.SIGKILL

    at_kill = checkpoints(output / "save")
    completed = max(at_kill.values())  # K, the epoch to resume after
    before = (output / "train_log.txt").read_text().splitlines()
    second = run(command)
    check_ok(second, "the restarted training")

    after = (output / "train_log.txt").read_text().splitlines()
    assert after[: len(before)] == before  # the log is appended to, never rewritten
    resumed = [int(TRAIN_LOG_LINE.match(line).group(1)) for line in after[len(before):]]
    assert resumed == list(range(completed + 1, 4)), (completed, before, resumed)
    first = [int(TRAIN_LOG_LINE.match(line).group(1)) for line in before]
    assert first == list(range(1, len(first) + 1)) and len(first) in (completed, completed + 1)
    loaded = LOADED.search(second.stdout + second.stderr)
    assert loaded, "the restart did not report loading a checkpoint"
    assert at_kill.get(Path(loaded.group(1))) == completed

    final = {epoch: lr for epoch, lr, _ in train_log_epochs(output / "train_log.txt")}
    assert final == {1: "1.00e-04", 2: "5.50e-05", 3: "1.00e-05"}  # the schedule continued
    assert max(checkpoints(output / "save").values()) == 3
    assert not list((output / "save").glob("partial-*"))
