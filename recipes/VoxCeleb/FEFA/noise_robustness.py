#!/usr/bin/env python3
"""Robustness of trained models to synthetic noise: the paper's Fig. 3 (Sec. IV.C).

Adds Gaussian and uniform white noise (and, with ``babble_csv``, babble: 3 recordings of
other speakers summed) to every test waveform before the spectrogram, at
each SNR of ``snr_levels`` (defined per utterance over its own samples), with the same
noise for every model; embeds every trial file once per model and condition, scores by
cosine similarity and reports EER and normalized minDCF (p_target 0.01 and 0.05).

To run:
    python noise_robustness.py hparams/noise_robustness.yaml \
        --experiments="fefa:results/thin_resnet34_gvlad/fefa_single/1986,\
none:results/thin_resnet34_gvlad/fefa_none/1986" \
        --data_folder=/data/voxceleb1
    Each model is a training run, a pretrained folder (export_pretrained.py) or a hub id.
    Add --device=cuda:0 to run the models on a GPU; --snr_levels=[clean,100,50,20] gives
    only the paper's levels.
Outputs (in output_folder): noise_robustness.md / .csv / .json, noise_robustness.png, log.txt.
"""

import sys

import speechbrain as sb

from fefa_speechbrain.hparams import load_hparams
from fefa_speechbrain.evaluation.robustness import (
    markdown_table,
    noise_robustness,
    parse_experiments,
    write_report,
)

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    hparams = load_hparams(hparams_file, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    experiments = parse_experiments(hparams["experiments"])
    rows = noise_robustness(
        experiments=experiments,
        verification_file=hparams["verification_file"],
        audio_root=hparams["audio_root"],
        snr_levels=hparams["snr_levels"],
        kinds=hparams["kinds"],
        batch_size=hparams["batch_size"],
        seed=hparams["seed"],
        device=run_opts.get("device", "cpu"),
        babble_csv=hparams["babble_csv"],
    )
    outputs = write_report(
        rows,
        hparams["output_folder"],
        metadata={
            "experiments": experiments,
            "verification_file": hparams["verification_file"],
            "audio_root": hparams["audio_root"],
            "seed": hparams["seed"],
        },
    )
    print(markdown_table(rows))
    for name, path in outputs.items():
        print(f"{name}: {path}")
