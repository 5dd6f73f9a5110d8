"""embed on a folder whose speaker folders are links: they are followed, link loops are not."""

import os

import numpy as np
import soundfile as sf

from fefa_speechbrain.cli import audio_inputs


def test_linked_speaker_folders_are_followed_once(tmp_path):
    store = tmp_path / "store" / "spk1"
    store.mkdir(parents=True)
    sf.write(store / "a.wav", np.zeros(8000, np.float32), 16000)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    os.symlink(store, corpus / "spk1")
    os.symlink(corpus, store / "loop")  # a loop back to the top
    os.symlink(store, corpus / "again")  # a second link to the same folder
    left_out = []
    assert audio_inputs([str(corpus)], left_out) == [str(corpus / "again" / "a.wav")]
    reasons = sorted(reason for _, reason in left_out)
    assert len(reasons) == 2 and all("listed already" in reason for reason in reasons)
