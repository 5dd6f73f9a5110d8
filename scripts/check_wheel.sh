#!/usr/bin/env bash
# Builds the wheel and checks it installed on its own, away from the checkout: a fresh
# venv sees the project venv's packages (torch, SpeechBrain, ...) through a .pth line,
# which does not run that venv's editable-install hook, so `fefa_speechbrain` can only
# come from the wheel. From a temporary folder it then exports a tiny model with the
# installed package, loads the pretrained folder and runs the command line on it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fefa-wheel-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
"$VENV_PY" -m pip wheel "$ROOT" --no-deps --no-build-isolation -q -w "$WORK/dist"
WHEEL="$(ls "$WORK"/dist/fefa_speechbrain-*.whl)"
"$VENV_PY" -m venv --without-pip "$WORK/venv"
PY="$WORK/venv/bin/python"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$VENV_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$SITE/project_venv.pth"
"$VENV_PY" -m pip --python "$PY" install -q --no-deps "$WHEEL" 2>&1 | grep -v "outside environment" || true
cd "$WORK"
"$PY" - "$WORK" "$ROOT/pretrained/fefa-ecapa128-speechcommands/example" <<'PYTHON'
import os, sys
import numpy as np, soundfile as sf, torch
from importlib import resources
import fefa_speechbrain
from fefa_speechbrain.export import export_pretrained
from fefa_speechbrain.hparams import load_hparams
from speechbrain.dataio.encoder import CategoricalEncoder

work = sys.argv[1]
assert fefa_speechbrain.__file__.startswith(os.path.join(work, "venv")), fefa_speechbrain.__file__
assert resources.files("fefa_speechbrain").joinpath("templates/pretrained_README.md").is_file()
exp = os.path.join(work, "exp")
os.makedirs(exp)
with open(os.path.join(exp, "hyperparams.yaml"), "w") as handle:
    handle.write(f"""save_folder: {exp}/save
compute_features: !new:fefa_speechbrain.lobes.features.Spectrogram
mean_var_norm: !new:fefa_speechbrain.lobes.features.FrameNormalization
embedding_model: !new:fefa_speechbrain.lobes.thin_resnet.ThinResNet34
    fefa: single
    aggregation: tap
    width: 0.125
    emb_dim: 16
classifier: !new:fefa_speechbrain.lobes.classifier.SpeakerClassifier
    input_size: 16
    n_speakers: 2
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>
checkpointer: !new:speechbrain.utils.checkpoints.Checkpointer
    checkpoints_dir: !ref <save_folder>
    recoverables: {{embedding_model: !ref <embedding_model>, classifier: !ref <classifier>}}
""")
hparams = load_hparams(os.path.join(exp, "hyperparams.yaml"))
hparams["checkpointer"].save_checkpoint(meta={"ErrorRate": 0.1})
labels = CategoricalEncoder()
labels.update_from_iterable(["spk1", "spk2"])
labels.save(os.path.join(exp, "save", "label_encoder.txt"))
os.makedirs(os.path.join(work, "audio"))  # real speech (the shipped example clips): voice
for name in ("a", "b"):                    # activity refuses noise-only files
    source = os.path.join(sys.argv[2], f"speaker1_{'down' if name == 'a' else 'go'}.flac")
    sf.write(os.path.join(work, "audio", f"{name}.wav"), sf.read(source)[0], 16000)
export_pretrained(exp, os.path.join(work, "pretrained"))
print("wheel check: exported with", fefa_speechbrain.__file__)
PYTHON
FEFA="$WORK/venv/bin/fefa-speechbrain"
"$FEFA" verify pretrained audio/a.wav audio/b.wav --threshold 0.5
"$FEFA" embed pretrained audio --output emb.npy --threads 1
"$PY" -m fefa_speechbrain export pretrained --format torchscript --output model.pt > /dev/null
test -s emb.npy && test -s emb.txt && test -s model.pt
"$PY" -c "import sys; from importlib.metadata import files; sys.exit(not any(p.name.startswith(\"LICENSE\") for p in files(\"fefa_speechbrain\")))"
echo "wheel check passed: $(basename "$WHEEL") installs, loads a pretrained folder and runs the command line"
