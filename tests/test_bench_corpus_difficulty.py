"""benchmarks/bench_corpus_difficulty.py: the LDA baseline and the counts it reports."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_corpus_difficulty as bench  # noqa: E402

from fefa_speechbrain.data.synthetic import generate_corpus  # noqa: E402


def test_lda_keeps_the_speaker_direction_and_drops_the_session_one():
    # Speakers differ along axis 0 only; axis 1 carries a large per-file nuisance.
    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(4), 20)
    vectors = np.stack(
        [speakers * 1.0 + 0.05 * rng.standard_normal(80), 10.0 * rng.standard_normal(80)], 1
    )
    projection = bench.fit_lda(vectors, speakers)
    assert projection.shape == (2, 2)  # min(dim, n_speakers - 1) directions
    leading = projection[:, 0] / np.linalg.norm(projection[:, 0])
    assert abs(leading[0]) > 0.999


def test_difficulty_on_a_generated_corpus(tmp_path):
    generate_corpus(
        str(tmp_path), n_speakers=6, n_test_speakers=2, sessions_per_speaker=2,
        utts_per_session=2, min_duration=1.0, max_duration=1.5, progress=False,
    )
    result = bench.difficulty(str(tmp_path))
    assert (result["train_speakers"], result["train_files"], result["test_speakers"]) == (4, 16, 2)
    assert result["trials"] == sum(1 for _ in open(tmp_path / "veri_test2.txt"))
    assert all(0.0 <= result[k] <= 100.0 for k in ("mean_log_spectrum_eer", "lda_eer"))
