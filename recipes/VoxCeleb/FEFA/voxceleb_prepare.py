#!/usr/bin/env python3
"""VoxCeleb data preparation, as in SpeechBrain's recipes (the logic is in the package).

``train_speaker_embeddings.py`` runs it for you; run it alone to prepare once for many
experiments (then train with ``--skip_prep=True``):

    python voxceleb_prepare.py voxceleb /data/voxceleb2/dev results/prepared/voxceleb \
        --trials /data/voxceleb1_test/veri_test2.txt
    python voxceleb_prepare.py folder /data/my_speakers results/prepared/folder --n-test-speakers 20

Writes train.csv, dev.csv, enrol.csv, test.csv, trials.txt and prepare_report.json in
SpeechBrain's CSV format (ID, duration, wav, start, stop, spk_id).
"""

import sys

from fefa_speechbrain.data.prepare import main, prepare_folder_corpus, prepare_voxceleb  # noqa: F401

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
