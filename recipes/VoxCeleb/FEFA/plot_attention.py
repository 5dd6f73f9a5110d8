#!/usr/bin/env python3
"""FEFA's frequency attention of a trained model: the paper's Fig. 2, right column.

For each file of ``files``: the log spectrogram with FEFA's per-bin weights overlaid
(``attention_<file>.png``). Over ``verification_file`` (a SpeechBrain CSV or a trial list; or
over ``files`` when there is no list): the mean and spread of the weights per frequency
bin (``attention_mean.png``) and the mean itself (``attention_mean.npy``, [bins]).

To run:
    python plot_attention.py hparams/plot_attention.yaml \
        --data_folder=/data/voxceleb1 --verification_file=null --files=a.wav,b.wav
    python plot_attention.py hparams/plot_attention.yaml \
        --experiment_folder=results/thin_resnet34_gvlad/fefa_single/1986 \
        --data_folder=/data/voxceleb1
experiment_folder may also be a pretrained folder (export_pretrained.py) or a hub id.
"""

import sys

import speechbrain as sb

from fefa_speechbrain.evaluation.attention import attention_figures, evenly_spaced, list_audio_files
from fefa_speechbrain.hparams import load_hparams


def as_list(files):
    """``files`` from the yaml: a list, or a comma-separated string from the command line."""
    if isinstance(files, str):
        return [item.strip() for item in files.split(",") if item.strip()]
    return list(files or [])


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    hparams = load_hparams(hparams_file, overrides)
    overlay_files = as_list(hparams["files"])
    mean_files = None
    if hparams["verification_file"] is not None:
        listed = list_audio_files(hparams["verification_file"], hparams["audio_root"])
        mean_files = evenly_spaced(listed, hparams["max_mean_files"])
        if not overlay_files:
            overlay_files = evenly_spaced(listed, hparams["n_overlays"])
    if not overlay_files and mean_files is None:
        sys.exit("plot_attention.py: give --files=a.wav,b.wav and/or --verification_file=<csv or trials>")
    outputs = attention_figures(
        hparams["experiment_folder"],
        overlay_files,
        hparams["output_folder"],
        mean_files=mean_files,
        batch_size=hparams["batch_size"],
        device=run_opts.get("device", "cpu"),
    )
    for path, png in outputs["overlays"].items():
        print(f"overlay of {path}: {png}")
    if "mean_plot" in outputs:
        print(f"mean attention over {outputs['n_mean_files']} files: {outputs['mean_plot']}")
        print(f"mean attention per bin (numpy): {outputs['mean_array']}")
