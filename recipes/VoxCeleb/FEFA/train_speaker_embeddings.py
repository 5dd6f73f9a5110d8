#!/usr/bin/env python3
"""Recipe for training speaker embeddings with FEFA (Hajavi & Etemad) on VoxCeleb.

One FEFA before the input (``--fefa=single``, default), FEFA at every depth where the
time-frequency map changes size (``--fefa=multi``), or none (``--fefa=none``); softmax
loss, Adam, initial learning rate 1e-4, batch 64, as in the paper.

To run:
    python train_speaker_embeddings.py hparams/train_thin_resnet34_gvlad.yaml \
        --data_folder=/data/voxceleb2,/data/voxceleb1 --verification_file=/data/veri_test2.txt
    torchrun --nproc_per_node=4 train_speaker_embeddings.py hparams/train_thin_resnet34_gvlad.yaml \
        --data_folder=... --precision=bf16
Your own data (<root>/<speaker>/[<session>/]<utt>.<ext>):
    python train_speaker_embeddings.py hparams/train_thin_resnet34_gvlad.yaml \
        --corpus=folder --data_folder=/data/my_speakers --verification_file=null
"""

import sys

import speechbrain as sb

from fefa_speechbrain.dataio import dataio_prep
from fefa_speechbrain.recipe import load_recipe_hparams
from fefa_speechbrain.training import SpeakerBrain

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    sb.utils.distributed.ddp_init_group(run_opts)

    # Data preparation (main process), then the classifier sized to the training speakers
    hparams, overrides = load_recipe_hparams(hparams_file, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    train_data, valid_data, label_encoder = dataio_prep(hparams)

    speaker_brain = SpeakerBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    speaker_brain.fit(
        speaker_brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=hparams["train_dataloader_options"],
        valid_loader_kwargs=hparams["valid_dataloader_options"],
    )
