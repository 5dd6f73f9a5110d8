"""Slow (about 30 s): the training recipe under torchrun with two CPU processes (gloo).

``python -m torch.distributed.run --standalone --nproc_per_node=2
train_speaker_embeddings.py ... --distributed_backend=gloo --device=cpu`` on a tiny
generated corpus, one epoch: the data preparation, the label file, the train log and the
checkpoint are written once (by the main process), and each process trains on its half
of the data.
"""

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fefa_speechbrain.data.synthetic import generate_corpus

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "VoxCeleb" / "FEFA"
N_PROCESSES = 2
BATCH_SIZE = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "synthetic_voxceleb_ddp"
    generate_corpus(
        str(folder), n_speakers=6, n_test_speakers=2, sessions_per_speaker=2,
        utts_per_session=3, min_duration=1.5, max_duration=2.5, seed=1, progress=False,
    )
    return folder


def test_slow_torchrun_two_cpu_processes(corpus, tmp_path):
    output, prep = tmp_path / "ddp", tmp_path / "prepared"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={N_PROCESSES}",
        "train_speaker_embeddings.py", "hparams/train_thin_resnet34_tap.yaml",
        f"--data_folder={corpus}", f"--verification_file={corpus}/veri_test2.txt",
        f"--output_folder={output}", f"--prep_folder={prep}",
        "--number_of_epochs=1", "--width=0.125", "--sentence_len=1.0",
        f"--batch_size={BATCH_SIZE}", "--num_workers=0",
        "--distributed_backend=gloo", "--device=cpu",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(
        command, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=600
    )
    output_text = result.stdout + result.stderr
    assert result.returncode == 0, output_text[-6000:]

    # the main process prepared the data once and wrote one log line and one checkpoint
    assert output_text.count("train.csv:") == 1, "the preparation ran more than once"
    log = (output / "train_log.txt").read_text().splitlines()
    assert len(log) == 1 and log[0].startswith("epoch: 1, ")
    checkpoints = list((output / "save").glob("CKPT+*"))
    assert len(checkpoints) == 1, checkpoints
    assert not list((output / "save").glob("partial-*"))
    assert (checkpoints[0] / "counter.ckpt").read_text().strip() == "1"
    assert len(re.findall(r"Saved an end-of-epoch checkpoint", output_text)) == 1

    # each process saw half of the training chunks: the optimizer stepped accordingly
    with open(prep / "train.csv", newline="", encoding="utf-8") as fin:
        n_train = sum(1 for _ in csv.DictReader(fin))
    steps = math.ceil(n_train / N_PROCESSES) // BATCH_SIZE  # drop_last=True
    brain = (checkpoints[0] / "brain.ckpt").read_text()
    assert re.search(rf"^optimizer_step: {steps}$", brain, re.M), (n_train, brain)
