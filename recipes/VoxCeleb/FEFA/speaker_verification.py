#!/usr/bin/env python3
"""Speaker verification with a trained FEFA model: cosine scoring of a trial list.

Embeds every file of the trial list once (batched), scores each trial by cosine
similarity (optionally s-norm / adaptive s-norm against training speakers), and reports
EER and normalized minDCF (p_target 0.01 and 0.05), computed by sorting.

To run:
    python speaker_verification.py hparams/verification.yaml \
        --experiment_folder=results/thin_resnet34_gvlad/fefa_single/1986 \
        --data_folder=/data/voxceleb1
or, for any trial list (e.g. corpus=folder's <prep_folder>/trials.txt), instead of
--data_folder: --verification_file=LIST --audio_root=FOLDER_OF_ITS_PATHS.
experiment_folder is any MODEL: a training run, a pretrained folder written by
export_pretrained.py, or a hub id (fetched by SpeechBrain); give --output_folder for the
last two. Outputs (in <experiment_folder>/verification by default): scores.txt,
results.json, det.png.
"""

import sys

import speechbrain as sb

from fefa_speechbrain.hparams import load_hparams
from fefa_speechbrain.evaluation.verification import evaluate_experiment

def check_data_paths(hparams):
    """Refuses paths built from an unset ``data_folder`` (the yaml's default is null).

    Example
    -------
    >>> check_data_paths({"data_folder": None, "verification_file": "None/veri_test2.txt",
    ...                   "audio_root": "/data"})
    Traceback (most recent call last):
    ...
    SystemExit: speaker_verification.py: error: verification_file comes from data_folder, which is not set: give --data_folder=<VoxCeleb1 test folder>, or --verification_file=<trial list> and --audio_root=<folder of its paths>
    """
    if hparams.get("data_folder") is not None:
        return
    unset = [key for key in ("verification_file", "audio_root")
             if str(hparams.get(key)).startswith("None/")]
    if unset:
        raise SystemExit(
            f"speaker_verification.py: error: {' and '.join(unset)} "
            f"{'comes' if len(unset) == 1 else 'come'} from data_folder, "
            "which is not set: give --data_folder=<VoxCeleb1 test folder>, or "
            "--verification_file=<trial list> and --audio_root=<folder of its paths>"
        )


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    hparams = load_hparams(hparams_file, overrides)
    check_data_paths(hparams)
    results = evaluate_experiment(
        experiment_folder=hparams["experiment_folder"],
        verification_file=hparams["verification_file"],
        output_folder=hparams["output_folder"],
        audio_root=hparams["audio_root"],
        batch_size=hparams["batch_size"],
        score_norm=hparams["score_norm"],
        cohort_csv=hparams["cohort_csv"],
        cohort_utts_per_speaker=hparams["cohort_utts_per_speaker"],
        cohort_size=hparams["cohort_size"],
        device=run_opts.get("device", "cpu"),
        seed=hparams["seed"],
        allow_outside_root=hparams["allow_outside_root"],
    )
    print(
        f"EER {100 * results['eer']:.2f}%  minDCF(0.01) {results['min_dcf_0.01']:.4f}  "
        f"minDCF(0.05) {results['min_dcf_0.05']:.4f}  ({results['n_target']} target / "
        f"{results['n_nontarget']} non-target trials)"
    )
    for name, path in results["outputs"].items():
        print(f"{name}: {path}")
