#!/usr/bin/env bash
# GPU readiness in one command (under 8 minutes on one CUDA GPU). Four parts, one summary
# line each ("[gpu_check] PART: ok|FAILED ..."), full logs in $OUT (default a temporary
# folder, printed):
#   1. models:    tests/test_device_parity.py on cuda: every backbone and FEFA placement
#                 (and ECAPA-TDNN), both normalizations: embeddings equal to the CPU's
#                 (TF32 off) and finite gradients;
#   2. precision: 3 full-width training steps of every backbone yaml (VGG-M, thin-ResNet34
#                 TAP and GhostVLAD, thin-SEResNet34, ECAPA-TDNN, the small preset) in
#                 fp32, bf16 and fp16 through the recipe (train_speaker_embeddings.py
#                 --device=cuda --precision=P --debug) on a generated corpus;
#   3. ddp:       torchrun with one process per GPU present (nccl), one short epoch;
#   4. speed:     benchmarks/bench_speed.py --device cuda at full width, thin-ResNet34 TAP
#                 and ECAPA-TDNN (training throughput, peak memory, inference real-time
#                 factor, the data loader), its JSON and markdown into $OUT.
# Not yet run on a GPU (none was available): put its figures in benchmarks/RESULTS.md.
# Exit status: 0 all parts passed; 1 a part failed; 3 no CUDA GPU (nothing is run).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${VENV_PY:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
GPUS="$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null || echo 0)"
if [ "${GPUS:-0}" -lt 1 ]; then
  echo "gpu_check: no CUDA GPU (torch.cuda.is_available() is False with $PY): nothing was run" >&2
  exit 3
fi
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/fefa-gpu-check-XXXXXX")}"
mkdir -p "$OUT"
echo "[gpu_check] $GPUS GPU(s): $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))'); logs in $OUT"
FAILED=0
summary() {  # summary PART STATUS SECONDS DETAIL
  if [ "$2" -eq 0 ]; then echo "[gpu_check] $1: ok in $3 s $4"; else echo "[gpu_check] $1: FAILED in $3 s $4 (log: $OUT/$1.log)"; FAILED=1; fi
}

cd "$ROOT"
start=$SECONDS
FEFA_TEST_DEVICE=cuda "$PY" -m pytest -q -p no:cacheprovider tests/test_device_parity.py > "$OUT/models.log" 2>&1
status=$?
summary models $status $((SECONDS - start)) "($(tail -n 1 "$OUT/models.log"))"

start=$SECONDS
CORPUS="$OUT/corpus"
"$PY" -c "from fefa_speechbrain.data.synthetic import generate_corpus; generate_corpus('$CORPUS', n_speakers=8, n_test_speakers=2, sessions_per_speaker=2, utts_per_session=3, min_duration=3.0, max_duration=4.0, seed=1, progress=False)" > "$OUT/precision.log" 2>&1
status=$?
runs=0; failed_runs=""
cd "$ROOT/recipes/VoxCeleb/FEFA"
for yaml in train_vggm_tap train_thin_resnet34_tap train_thin_resnet34_gvlad train_thin_seresnet34_tap train_ecapa_fefa train_ecapa_fefa_small; do
  for precision in fp32 bf16 fp16; do
    [ $status -eq 0 ] || break 2
    corpus_args=(--data_folder="$CORPUS" --verification_file="$CORPUS/veri_test2.txt")
    [ "$yaml" = train_ecapa_fefa_small ] && corpus_args+=(--corpus=voxceleb)
    echo "== $yaml $precision" >> "$OUT/precision.log"
    if "$PY" train_speaker_embeddings.py "hparams/$yaml.yaml" "${corpus_args[@]}" \
        --prep_folder="$OUT/prep/$yaml" --output_folder="$OUT/runs/$yaml-$precision" \
        --device=cuda --precision="$precision" --batch_size=8 --num_workers=0 \
        --debug --debug_batches=3 --debug_epochs=1 >> "$OUT/precision.log" 2>&1; then
      runs=$((runs + 1))
    else
      failed_runs="$failed_runs $yaml/$precision"
    fi
  done
done
cd "$ROOT"
[ -n "$failed_runs" ] && status=1
summary precision $status $((SECONDS - start)) "($runs of 18 runs of 3 steps passed${failed_runs:+; failed:$failed_runs})"

start=$SECONDS
(cd "$ROOT/recipes/VoxCeleb/FEFA" && "$PY" -m torch.distributed.run --standalone --nproc_per_node="$GPUS" \
  train_speaker_embeddings.py hparams/train_thin_resnet34_tap.yaml --data_folder="$CORPUS" \
  --verification_file="$CORPUS/veri_test2.txt" --prep_folder="$OUT/prep/ddp" \
  --output_folder="$OUT/runs/ddp" --distributed_backend=nccl --device=cuda \
  --number_of_epochs=1 --batch_size=8 --num_workers=0) > "$OUT/ddp.log" 2>&1
status=$?
summary ddp $status $((SECONDS - start)) "($GPUS process(es), $(grep -c . "$OUT/runs/ddp/train_log.txt" 2>/dev/null || echo 0) epoch line)"

start=$SECONDS
"$PY" benchmarks/bench_speed.py --device cuda --parts train memory inference loader --widths full \
  --backbones thin_resnet34_tap ecapa_spectrogram --full-warmup 1 --full-reps 2 --rtf-repeats 2 \
  --loader-files 64 --out "$OUT/speed_cuda.json" > "$OUT/speed.log" 2>&1
status=$?
summary speed $status $((SECONDS - start)) "($OUT/speed_cuda.json and .md)"

exit $FAILED
