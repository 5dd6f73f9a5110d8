#!/usr/bin/env python3
"""Exports a trained experiment as a SpeechBrain pretrained-model folder.

The best checkpoint (lowest validation ErrorRate) of EXPERIMENT_FOLDER, the
``output_folder`` of ``train_speaker_embeddings.py``, becomes OUT_DIR with
``hyperparams.yaml``, ``embedding_model.ckpt``, ``classifier.ckpt``,
``label_encoder.ckpt``, ``config.json`` and ``README.md``; it loads offline with
``SpeakerRecognition.from_hparams(source=OUT_DIR, savedir=None)``.

To run:
    python export_pretrained.py results/thin_resnet34_gvlad/fefa_single/1986 \
        pretrained/thin_resnet34_gvlad \
        --threshold_trials=results/prepared/voxceleb/trials.txt --audio_root=/data/voxceleb1/wav
With --threshold_trials, the EER threshold and the 1 % false-accept threshold on that
list are stored in config.json (used by ``fefa-speechbrain verify``). Set them on speakers
the model never saw in training: thresholds from held-out clips of the training speakers
accept and miss more on new speakers than their figures say. Without --threshold_trials,
the experiment's ``prep_folder/threshold_trials.txt`` is used when the preparation wrote
one (``n_threshold_speakers``: speakers left out of training for this), with the corpus
the preparation read as audio root; its thresholds are described as set on "N held-out
speakers unseen in training" after checking that none of them is in the training CSV.
``--threshold_trials=none`` stores no thresholds. The descriptions name other lists
truthfully too: their speakers are compared with the training CSV's
(``--threshold_speakers`` declares them when it is gone). With --test_trials, the
false-accept and miss rates those thresholds give on the test trials go into config.json
and the card.
"""

import argparse
import errno
import json
import sys

from fefa_speechbrain.data.prepare import prepared_threshold_trials
from fefa_speechbrain.export import export_pretrained
from fefa_speechbrain.hparams import read_plain_hparams
from fefa_speechbrain.inference.embedder import find_hparams_file

LOAD_SNIPPET = """from speechbrain.inference.speaker import SpeakerRecognition
model = SpeakerRecognition.from_hparams(source="{folder}", savedir=None)
score, same_speaker = model.verify_files("enrol.wav", "test.wav")"""


def parse_args(argv):
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment_folder", help="output_folder of the training run")
    parser.add_argument("out_dir", help="pretrained-model folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export")
    parser.add_argument("--device", default="cpu", help="where to load and check the model")
    parser.add_argument(
        "--threshold_trials", default=None,
        help="trial list, best of speakers not used in training: its EER and 1%% false-accept "
        "thresholds go into config.json (default: the experiment's "
        "prep_folder/threshold_trials.txt when its preparation wrote one; none: no thresholds)",
    )
    parser.add_argument(
        "--audio_root", default=None, help="folder the paths of --threshold_trials are under"
    )
    parser.add_argument(
        "--threshold_speakers", default="auto", choices=("auto", "unseen", "training"),
        help="who the --threshold_trials speakers are: auto compares them with the training "
        "CSV's speakers; unseen / training declare it (checked when the CSV is there)",
    )
    parser.add_argument(
        "--test_trials", default=None,
        help="test trial list: the false-accept and miss rates of the stored thresholds on it "
        "go into config.json and the card",
    )
    parser.add_argument(
        "--test_audio_root", default=None, help="folder the paths of --test_trials are under"
    )
    parser.add_argument("--batch_size", type=int, default=16, help="files per forward pass")
    return parser.parse_args(argv)


def threshold_options(args):
    """The threshold arguments of ``export_pretrained``: the ones given, or the experiment's
    ``prep_folder/threshold_trials.txt`` (speakers its preparation left out of training)
    when ``--threshold_trials`` is not given, or none (``--threshold_trials=none``)."""
    given = {"threshold_trials": args.threshold_trials, "audio_root": args.audio_root,
             "threshold_speakers": args.threshold_speakers}
    if args.threshold_trials is not None:
        if args.threshold_trials.lower() == "none":
            return dict(given, threshold_trials=None)
        return given
    try:
        hparams = read_plain_hparams(find_hparams_file(args.experiment_folder))
    except FileNotFoundError:  # export_pretrained says what is missing
        return given
    prep_folder, data_folder = hparams.get("prep_folder"), hparams.get("data_folder")
    if not isinstance(prep_folder, str):
        return given
    found = prepared_threshold_trials(
        prep_folder, data_folder if isinstance(data_folder, str) else None
    )
    if found is None:
        return given
    if args.threshold_speakers == "training":
        raise SystemExit(
            f"export_pretrained.py: error: {found[0]} holds speakers the preparation left out "
            "of training, not --threshold_speakers=training; give --threshold_trials for "
            "another list"
        )
    path, root = found
    print(f"Thresholds from {path} (speakers the preparation left out of training)")
    return {"threshold_trials": path, "audio_root": args.audio_root or root,
            "threshold_speakers": "unseen", "threshold_held_out": True}


def write_failure(error, out_dir):
    """The one-line message for an export that could not be written (None: not a write error).

    The export is written into a hidden staging folder beside OUT_DIR and moved into
    place only when complete, so a failed write leaves OUT_DIR as it was.
    """
    if isinstance(error, OSError) and error.errno is not None:  # a system error, not a message
        reason = error.strerror or str(error)
        if error.errno == errno.ENOSPC:
            reason = "the disk is full"
    elif isinstance(error, RuntimeError) and "PytorchStreamWriter failed" in str(error):
        reason = f"torch.save failed ({str(error).splitlines()[0]}; a full disk?)"
    else:
        return None
    return (
        f"export_pretrained.py: error: writing the export to {out_dir} failed: {reason}. "
        f"Nothing was replaced ({out_dir} is as it was); free space or choose another "
        "OUT_DIR and run the same command again"
    )


if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    thresholds = threshold_options(args)
    try:
        folder = export_pretrained(
            args.experiment_folder, args.out_dir, overwrite=args.overwrite, device=args.device,
            batch_size=args.batch_size, test_trials=args.test_trials,
            test_audio_root=args.test_audio_root, **thresholds,
        )
    except (OSError, RuntimeError) as error:
        message = write_failure(error, args.out_dir)
        if message is None:
            raise
        sys.exit(message)
    print(f"Exported {args.experiment_folder} to {folder}. Load it with:\n")
    print(LOAD_SNIPPET.format(folder=folder))
    thresholds = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("thresholds", {})
    for name in ("eer", "far_1pct"):
        if name in thresholds:
            print(f"\nStored threshold {name}: {thresholds[name]['value']:.4f} "
                  f"({thresholds[name]['description']})", end="")
    rates = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("test_rates")
    for name, at in (rates or {}).get("at_thresholds", {}).items():
        print(f"\n  on {rates['trials']['description']}: {name} accepts "
              f"{100 * at['false_accept']:.2f} % of different-speaker pairs and misses "
              f"{100 * at['miss']:.2f} % of same-speaker pairs", end="")
    print(f"\nDecide with: fefa-speechbrain verify {folder} enrol.wav test.wav" if thresholds else "")
