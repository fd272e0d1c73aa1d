#!/bin/bash
# The GPU confirmation run: what tests on 2 CPU cores cannot show, in one script of about 6 minutes
# on one GPU. Run from the repository root with the harness importable (`make setup` with a CUDA
# torch, or PYTHONPATH; PYTHON picks the interpreter). Logs go to $OUT (default gpu-check/).
#   1. the CUDA-side tests of the loss and training (bf16 autocast, LoRA and full fine-tuning);
#   2. the demo study with one seed per configuration, in bf16: train -> lm-eval -> MLflow -> report;
#   3. SFT throughput against Trainer at a GPU-sized model.
# Every step runs under `timeout -s ABRT` with faulthandler on, so a stall prints every thread's
# stack instead of nothing (one earlier GPU run stalled silently; see docs/design.md, "On GPUs").
set -u
OUT=$(mkdir -p "${OUT:-gpu-check}" && cd "${OUT:-gpu-check}" && pwd)
PY=${PYTHON:-python3}
case $PY in /*) ;; */*) PY=$PWD/$PY ;; esac  # the study step runs in another folder
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TRANSFORMERS_OFFLINE=1 MLFLOW_ENABLE_TELEMETRY=false TOKENIZERS_PARALLELISM=false
ROOT=$PWD
T0=$(date +%s)
step() { echo "[+$(($(date +%s) - T0))s] $*"; }

step "GPU and versions"
"$PY" -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__,
peft.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')"

step "tests on the GPU"
timeout -s ABRT 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_loss.py > "$OUT/tests.log" 2>&1
echo "tests rc=$?"; tail -4 "$OUT/tests.log"

step "demo study, one seed per configuration"
WORK=$(mktemp -d)
(cd "$WORK" && timeout -s ABRT 300 "$PY" -m harness run "$ROOT/experiments/demo.yaml" \
    --set replicates=1 --set "tracking_uri=sqlite:///$WORK/mlflow.db" \
    --set "output_dir=$WORK/runs" > "$OUT/study.log" 2>&1)
echo "study rc=$?"
tr '\r' '\n' < "$OUT/study.log" | grep -E "^trial|│" | tail -12
cp "$WORK/reports/demo/report.md" "$WORK/reports/demo/effects.json" "$OUT/" 2>/dev/null

step "throughput"
timeout -s ABRT 120 "$PY" benchmarks/sft_throughput.py --examples 1200 --hidden 1024 \
    --layers 8 --variants harness,trainer-grouped,trainer 2>&1 | tail -8
step end
