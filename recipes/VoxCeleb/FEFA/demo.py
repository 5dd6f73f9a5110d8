#!/usr/bin/env python3
"""The whole recipe, end to end, on the built-in generated corpus (no data needed).

Steps, each one a recipe command printed before it runs, exactly as you would type it:

1. generate a seeded multi-speaker corpus in the VoxCeleb layout (wav/idNNNNN/<session>/
   <utt>.wav + veri_test2.txt);
2. prepare it and train thin-ResNet34 + TAP with FEFA before the input (eighth width,
   1.5 s crops, batch 16, a higher learning rate than the paper's (1.5e-3) with a 100-step
   warm-up, so that it trains on 2 CPU cores in minutes; the choices were measured, see
   the README);
3. verify on the trial list: EER and minDCF;
4. export a SpeechBrain pretrained-model folder;
5. load it with speechbrain.inference.speaker.SpeakerRecognition and score one
   same-speaker and one different-speaker pair;
6. plot FEFA's attention.

Usage (from the repository root, ``bash scripts/demo.sh`` does this in the venv):
    python recipes/VoxCeleb/FEFA/demo.py [--fefa none|single|multi] [--epochs N] [--output DIR]
Any further ``--key=value`` is passed to the training script as a yaml override.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

MODEL = "thin_resnet34_tap"
# 70 training speakers and 30 test speakers (720 trials), utterances of 5-10 s (VoxCeleb1's
# average is 8.2 s): more training speakers and longer utterances were what brought the
# EER down; the measurements are in the recipe README ("Quick start").
DEMO_CORPUS = {
    "speakers": 100, "test-speakers": 30, "sessions": 3, "utts": 2, "min-dur": 5.0, "max-dur": 10.0,
}
DEMO_EPOCHS = 20  # 56 steps of 16 crops each: about 1100 steps
DEMO_TRAINING = [
    "--width=0.125",
    "--sentence_len=1.5",
    "--batch_size=16",
    "--lr=0.0015",
    "--lr_final=0.00015",
    "--lr_warmup_steps=100",
    "--random_channel=True",
    "--num_workers=0",
]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fefa", default="single", choices=["none", "single", "multi"])
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    parser.add_argument("--output", default=os.path.join(ROOT, "demo_output"))
    parser.add_argument("--speakers", type=int, default=DEMO_CORPUS["speakers"])
    parser.add_argument("--test-speakers", type=int, default=DEMO_CORPUS["test-speakers"])
    parser.add_argument("--sessions", type=int, default=DEMO_CORPUS["sessions"])
    parser.add_argument("--utts", type=int, default=DEMO_CORPUS["utts"])
    parser.add_argument("--min-dur", type=float, default=DEMO_CORPUS["min-dur"])
    parser.add_argument("--max-dur", type=float, default=DEMO_CORPUS["max-dur"])
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_known_args(argv)


def merged_overrides(defaults, extra):
    """``--key=value`` options: ``defaults`` with those of ``extra`` replacing same keys.

    >>> merged_overrides(["--width=0.25", "--lr=0.003"], ["--width=0.125", "--seed=2"])
    ['--lr=0.003', '--width=0.125', '--seed=2']
    """
    keys = {option.split("=", 1)[0] for option in extra}
    return [option for option in defaults if option.split("=", 1)[0] not in keys] + list(extra)


def run(step, title, command):
    """Runs one recipe command from the recipe folder, showing it and its output."""
    print(f"\n[{step}] {title}\n$ {' '.join(shlex.quote(c) for c in command)}", flush=True)
    start = time.time()
    result = subprocess.run(command, cwd=HERE)
    if result.returncode != 0:
        sys.exit(f"[{step}] failed (exit code {result.returncode}); see the output above")
    print(f"[{step}] done in {time.time() - start:.0f} s", flush=True)


def score_pairs(pretrained, verification_file, audio_root, threshold):
    """Loads the exported folder with SpeechBrain and scores one pair of each kind.

    The decision uses ``threshold`` (the EER threshold of step 3), not SpeechBrain's
    default of 0.25: the ReLU embeddings of these models have cosines in [0, 1], and
    where the threshold lies depends on the model.
    """
    from speechbrain.inference.speaker import SpeakerRecognition

    model = SpeakerRecognition.from_hparams(source=pretrained, savedir=None)
    pairs = {}
    with open(verification_file, encoding="utf-8") as fin:
        for line in fin:
            label, enrol, test = line.split()
            pairs.setdefault(label, (enrol, test))
    for label, name in (("1", "same speaker"), ("0", "different speakers")):
        enrol, test = (os.path.join(audio_root, p) for p in pairs[label])
        waveforms = [model.load_audio(path).unsqueeze(0) for path in (enrol, test)]
        score, decision = model.verify_batch(*waveforms, threshold=threshold)
        print(
            f"  {name:18s} {os.path.relpath(enrol, audio_root)} vs "
            f"{os.path.relpath(test, audio_root)}: cosine {float(score):.3f}, "
            f"same speaker (cosine >= {threshold:.3f}, the EER threshold): {bool(decision)}"
        )


def main(argv=None):
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    out = os.path.abspath(args.output)
    corpus = os.path.join(out, "corpus")
    prepared = os.path.join(out, "prepared")
    experiment = os.path.join(out, "train", f"{MODEL}_fefa_{args.fefa}")
    pretrained = os.path.join(out, "pretrained", f"{MODEL}_fefa_{args.fefa}")
    python = sys.executable
    started = time.time()

    run(1, "Generate the demo corpus (seeded; skipped when already there)", [
        python, "-m", "fefa_speechbrain.data.synthetic", corpus,
        f"--speakers={args.speakers}", f"--test-speakers={args.test_speakers}",
        f"--sessions={args.sessions}", f"--utts={args.utts}", f"--min-dur={args.min_dur}",
        f"--max-dur={args.max_dur}", f"--seed={args.seed}",
    ])
    run(2, "Prepare the corpus and train thin-ResNet34 + TAP + FEFA", [
        python, "train_speaker_embeddings.py", f"hparams/train_{MODEL}.yaml",
        f"--data_folder={corpus}",
        f"--verification_file={os.path.join(corpus, 'veri_test2.txt')}",
        f"--prep_folder={prepared}", f"--output_folder={experiment}",
        f"--fefa={args.fefa}", f"--number_of_epochs={args.epochs}",
        *merged_overrides(DEMO_TRAINING, extra),
    ])
    trials = os.path.join(prepared, "trials.txt")
    audio_root = os.path.join(corpus, "wav")
    run(3, "Speaker verification on the trial list", [
        python, "speaker_verification.py", "hparams/verification.yaml",
        f"--data_folder={corpus}", f"--experiment_folder={experiment}", f"--verification_file={trials}",
        f"--audio_root={audio_root}",
    ])
    run(4, "Export a SpeechBrain pretrained-model folder", [
        python, "export_pretrained.py", experiment, pretrained, "--overwrite",
    ])
    with open(os.path.join(experiment, "verification", "results.json"), encoding="utf-8") as fin:
        results = json.load(fin)
    print("\n[5] Load the exported folder with SpeechBrain's SpeakerRecognition", flush=True)
    score_pairs(pretrained, trials, audio_root, results["eer_threshold"])
    if args.fefa != "none":
        run(6, "Plot FEFA's attention", [
            python, "plot_attention.py", "hparams/plot_attention.yaml",
            f"--data_folder={corpus}", f"--experiment_folder={experiment}", f"--verification_file={trials}",
            f"--audio_root={audio_root}",
        ])

    print(f"\nDemo finished in {(time.time() - started) / 60:.1f} min. Outputs:")
    print(f"  corpus:          {corpus}")
    print(f"  prepared CSVs:   {prepared}")
    print(f"  training run:    {experiment} (train_log.txt, save/)")
    for name, path in results["outputs"].items():
        print(f"  {name + ':':16s} {path}")
    print(f"  pretrained:      {pretrained}")
    if args.fefa != "none":
        print(f"  attention plots: {os.path.join(experiment, 'attention')}")
    print(
        f"\nEER {100 * results['eer']:.2f}%   minDCF(0.01) {results['min_dcf_0.01']:.3f}   "
        f"minDCF(0.05) {results['min_dcf_0.05']:.3f}   (fefa={args.fefa}, "
        f"{results['n_target']} target / {results['n_nontarget']} non-target trials)"
    )
    return results


if __name__ == "__main__":
    main()
