#!/usr/bin/env python3
"""Data for the rows of tests/recipes/VoxCeleb.csv, made where their flags point.

SpeechBrain's recipe runner (``run_recipe_tests``) runs ``tests/recipes/setup/<script>/
<hparams>`` before a row, if it exists; those files call this one. ``corpus``: a tiny
generated corpus in the VoxCeleb layout (``tests/tmp/fefa/corpus``); ``experiment``: the
corpus, prepared (``tests/tmp/fefa/prep``), and one epoch of thin-ResNet34 + TAP with
FEFA(S) (``tests/tmp/fefa/experiment``). Both are made once and kept.
"""

import os
import subprocess
import sys

from fefa_speechbrain.data.synthetic import generate_corpus

ROOT = os.path.join("tests", "tmp", "fefa")
CORPUS = os.path.join(ROOT, "corpus")
PREP = os.path.join(ROOT, "prep")
EXPERIMENT = os.path.join(ROOT, "experiment")
CORPUS_CONFIG = dict(
    n_speakers=6, n_test_speakers=2, sessions_per_speaker=2, utts_per_session=3,
    min_duration=1.5, max_duration=2.5, seed=0,
)


def make_corpus():
    if not os.path.isfile(os.path.join(CORPUS, "veri_test2.txt")):
        generate_corpus(CORPUS, progress=False, **CORPUS_CONFIG)


def make_experiment():
    make_corpus()
    save = os.path.join(EXPERIMENT, "save")
    if os.path.isdir(save) and any(name.startswith("CKPT+") for name in os.listdir(save)):
        return
    subprocess.run(
        [sys.executable, "recipes/VoxCeleb/FEFA/train_speaker_embeddings.py",
         "recipes/VoxCeleb/FEFA/hparams/train_thin_resnet34_tap.yaml",
         f"--data_folder={CORPUS}", f"--prep_folder={PREP}", f"--output_folder={EXPERIMENT}",
         "--number_of_epochs=1", "--width=0.125", "--sentence_len=1.0", "--batch_size=4",
         "--num_workers=0", "--noprogressbar"],
        check=True,
    )


if __name__ == "__main__":
    {"corpus": make_corpus, "experiment": make_experiment}[sys.argv[1]]()
