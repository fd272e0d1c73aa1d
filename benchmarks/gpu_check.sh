#!/bin/bash
# Issue 22's GPU check: at most 8 minutes on one GPU, everything in one results file,
# benchmarks/results/gpu-<date>.md (copied to $OUT too where the device tool sets it).
#   1. the CUDA-side tests of the loss, training and packed attention (bf16, LoRA and full);
#   2. benchmarks/gpu_bench.py: training throughput of the harness vs TRL vs Trainer on SmolLM2-135M
#      and the Qwen2-1.5B architecture, items/s per eval suite, and a 4-trial study under
#      eval.timeout with each trial's training and evaluation seconds.
# Before, on a machine with network: `SHARED=/path/to/shared benchmarks/fetch_wheels.sh` fills
# benchmarks/carry (wheels of TRL, lm-eval, MLflow, Optuna, ...; the chats; the tokenizers); carry
# that folder to the GPU. On a CPU, `SMOKE=1 benchmarks/gpu_check.sh` runs the same steps at tiny
# sizes: a test of the script, not a measurement. PYTHON picks the interpreter (default python3);
# SMOLLM2=DIR points at a folder with SmolLM2-135M's real weights (else random weights).
# Every step runs under `timeout -s ABRT` with faulthandler on, so a stall prints every stack.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TRANSFORMERS_OFFLINE=1 MLFLOW_ENABLE_TELEMETRY=false TOKENIZERS_PARALLELISM=false
export USE_HUB_KERNELS=0  # no `kernels` package there, and no hub to fetch kernels from
T0=$(date +%s)
step() { echo "[+$(($(date +%s) - T0))s] $*"; }
LOGS=${OUT:-$ROOT/gpu-check}
mkdir -p "$LOGS"

step "packages"
if ! "$PY" -c "import trl, lm_eval, optuna, mlflow" 2>/dev/null; then
  if ls benchmarks/carry/wheels/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site benchmarks/carry/wheels/*.whl || exit 1
    export PYTHONPATH=/tmp/site
  else
    echo "TRL, lm-eval, Optuna or MLflow missing and no benchmarks/carry/wheels: run fetch_wheels.sh"
    exit 1
  fi
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c "import torch, transformers, trl; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'trl', trl.__version__, torch.cuda.get_device_name(0)
if torch.cuda.is_available() else 'NO CUDA')"

step "tests on this device"
timeout -s ABRT "${TEST_SECONDS:-120}" "$PY" -m pytest -q -x -p no:cacheprovider \
  tests/test_loss.py tests/test_packing.py > "$LOGS/tests.log" 2>&1
echo "tests rc=$?"; tail -3 "$LOGS/tests.log"

step "throughput, evals, study"
WORK=${WORK:-$(mktemp -d)}  # models and stores of the study: not under $OUT, which comes back
RESULT=benchmarks/results/gpu-$(date -u +%F).md
[ -n "${SMOKE:-}" ] && RESULT=$LOGS/gpu-smoke.md
timeout -s ABRT "${BENCH_SECONDS:-330}" "$PY" benchmarks/gpu_bench.py --out "$RESULT" \
  --budget "${BUDGET:-300}" --work "$WORK" ${SMOKE:+--smoke} ${SMOLLM2:+--smollm2 "$SMOLLM2"} \
  2>&1 | grep -v -i -E "warn|it/s\]|examples/s\]" | tail -40
cp "$WORK/study.log" "$LOGS/" 2>/dev/null
for f in $(find "$WORK/runs" -name stalled-stacks.txt 2>/dev/null | head -2); do  # eval.timeout
  cp "$f" "$LOGS/stalled-stacks-$(basename "$(dirname "$(dirname "$f")")").txt"
done
[ -n "${OUT:-}" ] && cp "$RESULT" "$OUT/" 2>/dev/null
step "end: $RESULT"
