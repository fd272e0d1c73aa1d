"""Command-line verbs. Each verb parses its arguments, calls one function, prints, and maps
errors to exit codes: 0 success, 1 a finding (regression, lint problems), 2 bad input (a
`HarnessError`: one line per problem), 3 an internal error (a bug: one line, the traceback with
`--debug`), 130 interrupted. Every line printed for an error has its credentials redacted."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config.schema import DEFAULT_TRACKING_URI
from harness.util.errors import HarnessError
from harness.util.redact import redact

if TYPE_CHECKING:
    from harness.config.schema import Experiment
    from harness.study.table import StudyOutcome

EXIT_OK, EXIT_FINDING, EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _judge_check(args: argparse.Namespace) -> int:
    from harness.eval.judges import check, load_judge, save_accuracy
    from harness.eval.suites import load_suite

    suite = load_suite(args.suite, args.suite_dir)
    if suite.judge is None:
        raise HarnessError(f"suite {suite.name}: declares no judge (judge: in its suite.yaml)")
    report = check(load_judge(suite.judge), args.file)
    print(report.summary())
    if args.save:
        print(f"saved to {save_accuracy(report, suite.path)}")
    return EXIT_OK


def _toy_build(args: argparse.Namespace) -> int:
    from harness.models.toy.build import build_toy_world, summary

    world = build_toy_world(size=args.size, out=args.out, force=args.force, verbose=False)
    print(summary(world))
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    from harness.config.load import load_experiment
    from harness.sft.train import train_and_save

    exp = load_experiment(args.experiment, args.overrides)
    result, weights = train_and_save(exp, args.out)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 alone reports
        return EXIT_FINDING if result.status == "nan" else EXIT_OK
    mix = result.lineage["trained"]
    total_params = max(result.total_params, 1)
    audit = result.lineage["mask_audit"]["total"]
    final = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
    print(f"status: {result.status}" + (f" ({result.reason})" if result.reason else ""))
    print(
        f"steps: {result.steps}  final loss: {final}  "
        f"{result.tokens_per_second:,.0f} tokens/s  {result.seconds:.1f}s  "
        f"peak memory {result.peak_memory_mb:,.0f} MB"
    )
    realised = result.lineage["mix"]
    print(
        f"mix ({realised['unit']}): "
        + ", ".join(f"{n} {e['realised_share']:.1%}" for n, e in realised["sources"].items())
        + "; trained tokens: "
        + ", ".join(f"{n} {e['trainable_token_share']:.1%}" for n, e in mix.items())
    )
    print(
        f"trainable: {result.trainable_params / total_params:.2%} of {result.total_params:,} parameters, "
        f"{audit['trainable_share']:.1%} of tokens; batching {result.batching} "
        f"(padding {result.padding_fraction:.1%})"
    )
    where = weights.parent
    if result.status == "nan":
        print(f"saved config and lineage (no weights: the run diverged) to {where}")
        return EXIT_FINDING
    print(f"saved {weights.name} to {weights}; config and lineage in {where}")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from harness.config.load import load_experiment
    from harness.study.run import run_study
    from harness.study.table import print_table

    exp = load_experiment(args.experiment, args.overrides)
    if args.dry_run:
        from harness.preflight.dry_run import dry_run

        planned = dry_run(exp)
        print("\n".join(planned.lines()))
        return EXIT_OK if planned.memory.fits else EXIT_FINDING
    if args.devices:
        import torch

        from harness.study.launch import launch_workers, parse_devices

        devices = parse_devices(args.devices, torch.cuda.device_count())
        worker_args = ["run", args.experiment, *(f"--set={o}" for o in args.overrides)]
        if args.n_trials is not None:
            worker_args.append(f"--n-trials={args.n_trials}")
        if args.storage:
            worker_args.append(f"--storage={args.storage}")
        return launch_workers(worker_args, devices)
    outcome = run_study(exp, n_trials=args.n_trials, storage=args.storage)
    outcome.report_dir = _write_report(outcome, exp)
    print_table(outcome, exp)
    complete = [t for t in outcome.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    return EXIT_OK if complete else EXIT_FINDING


def _eval(args: argparse.Namespace) -> int:
    import json
    import time

    from harness.config.schema import EvalConfig
    from harness.eval.reference import check_references, format_references
    from harness.eval.runner import evaluate_model
    from harness.eval.summaries import format_summary

    exp = None
    if args.experiment:
        from harness.config.load import load_experiment

        exp = load_experiment(args.experiment)
    model = args.model or (exp.model if exp else "toy")
    suite_arg = args.suites or (",".join(exp.eval.suites) if exp else "forgetting,refusal,format")
    suites = [s.strip() for s in suite_arg.split(",") if s.strip()]
    if args.limit is not None and args.limit < 1:
        raise HarnessError(f"--limit {args.limit}: must be at least 1")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise HarnessError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
    cfg = exp.eval if exp else EvalConfig()
    cfg = cfg.model_copy(
        update={
            "suite_dirs": [*cfg.suite_dirs, *args.suite_dir],
            "max_new_tokens": args.max_new_tokens or cfg.max_new_tokens,
        }
    )
    dataset = cfg.dataset if exp and args.dataset == "auto" else args.dataset
    out = args.out or f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}"
    result = evaluate_model(
        model,
        adapter=args.adapter,
        suites=suites,
        eval_config=cfg,
        dataset=dataset,
        base=args.base,
        limit=args.limit,
        out_dir=out,
    )
    print(format_summary(result.summary))
    if cfg.reference_scores:
        checks = check_references(result.records, cfg.reference_scores)
        print(format_references(checks))
        from harness.util.files import write_atomic

        rows = [c.to_dict() for c in checks]
        write_atomic(Path(out) / "reference.json", json.dumps(rows, indent=1) + "\n")
    for suite, n in result.info.get("over_budget", {}).items():
        print(f"{suite}: {n} items left out: they need more new tokens than the budget")
    print(f"per-sample records and summary.json -> {out}")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from harness.verdicts.report import write_study_report

    md, html = write_study_report(args.study, args.tracking_uri, args.out)
    print(f"wrote {md} and {html}")
    return EXIT_OK


def _gate(args: argparse.Namespace) -> int:
    from harness.verdicts.gate import evaluate_models, gate, load_thresholds

    sides = {}
    for role in ("baseline", "candidate"):
        runs, model = getattr(args, role), getattr(args, f"{role}_model")
        if (runs is None) == (model is None):
            raise HarnessError(f"gate: give exactly one of --{role} or --{role}-model")
        sides[role] = [r for r in (runs or "").split(",") if r.strip()]
    if args.baseline_model or args.candidate_model:
        if not (args.baseline_model and args.candidate_model):
            raise HarnessError("gate: --baseline-model and --candidate-model go together")
        sides["baseline"], sides["candidate"] = evaluate_models(
            args.baseline_model,
            args.candidate_model,
            suites=[s.strip() for s in args.suites.split(",") if s.strip()],
            suite_dirs=args.suite_dir,
            dataset=args.dataset,
            limit=args.limit,
            out_dir=args.out,
        )
    result = gate(
        sides["baseline"],
        sides["candidate"],
        tracking_uri=args.tracking_uri,
        thresholds=load_thresholds(args.thresholds),
        out_dir=args.out,
        suite_dirs=args.suite_dir,
        common_items=args.common_items,
    )
    print(result.summary())
    return result.exit_code(strict=args.strict)


def _data_lint(args: argparse.Namespace) -> int:
    import json

    from harness.preflight.lint import lint_files

    suites = None
    if args.suites is not None:
        suites = [s.strip() for s in args.suites.split(",") if s.strip() not in ("", "none")]
    report = lint_files(
        args.files,
        suites=suites,
        dataset=args.dataset,
        format=args.format,
        model=args.model,
        suite_dirs=args.suite_dir,
    )
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.summary())
    return EXIT_OK if report.ok else EXIT_FINDING


def _add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override any experiment field, e.g. --set train.learning_rate=1e-4 (repeatable)",
    )


EXIT_CODES = """exit codes (every verb):
  0    success
  1    a finding: the gate found a regression (or inconclusive with --strict), data lint found
       problems, a study finished with no complete trial, a training run diverged
  2    bad input: one line per problem, naming the file, line or field
  3    internal error (a bug): one line; --debug shows the traceback
  130  interrupted (Ctrl-C)"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default where it has one (and its help does not already say it);
    keeps the exit-code table's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: {default})"


def _subparsers(parser: argparse.ArgumentParser, dest: str, metavar: str) -> Any:
    """Sub-verbs whose own --help shows defaults and the exit codes."""
    subs = parser.add_subparsers(dest=dest, metavar=metavar, required=True)
    add = subs.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("description", kwargs.get("help"))
        return add(name, formatter_class=_HelpFormatter, epilog=EXIT_CODES, **kwargs)

    subs.add_parser = add_parser
    return subs


def _add_dataset_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        choices=["auto", "toy", "english"],
        default="auto",
        help="which data set of each suite: the toy world's (toy), the real English rows "
        "(english), or auto: toy for toy models, english otherwise",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Evaluation-first SFT: masked fine-tuning judged by behavioural eval suites.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    verbs = _subparsers(parser, "verb", "VERB")

    p = verbs.add_parser("run", help="run an Optuna study of an experiment file")
    p.add_argument("experiment", help="experiment YAML file")
    p.add_argument(
        "--n-trials", type=int, help="trials to run now (default: the experiment's n_trials)"
    )
    p.add_argument(
        "--storage",
        help="Optuna storage URL, shared by workers (default: optuna.db beside mlflow.db)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve model, tokenizer, data, suites and the memory estimate; train nothing",
    )
    p.add_argument(
        "--devices", help="one worker per GPU on this study, e.g. 0,1,2,3 (cpu,cpu: CPU workers)"
    )
    _add_set_option(p)
    p.set_defaults(func=_run)

    p = verbs.add_parser("train", help="train one configuration of an experiment (no search)")
    p.add_argument("experiment", help="experiment YAML file")
    p.add_argument("--out", help="output folder (default: runs/<name>/train-<timestamp>)")
    _add_set_option(p)
    p.set_defaults(func=_train)

    p = verbs.add_parser("eval", help="evaluate a model on behavioural suites")
    p.add_argument(
        "--model",
        help="toy, toy:tiny, a model folder, a .gguf file (or a folder holding one), "
        "smollm2-135m-instruct, or a hub name in the cache (default: the experiment's, else toy)",
    )
    p.add_argument(
        "--experiment",
        help="take model, eval settings (eval.tasks, eval.reference_scores, ...) from this file",
    )
    p.add_argument("--adapter", help="a LoRA adapter folder to apply to --model")
    p.add_argument(
        "--suites",
        help="comma-separated (default: the experiment's eval.suites, else forgetting,refusal,format)",
    )
    p.add_argument("--limit", type=int, help="first N items per task")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        help="generation budget of every generating task (default: each task's max_gen_toks)",
    )
    p.add_argument("--out", help="folder for records + summary.json (default runs/eval-<time>)")
    _add_dataset_option(p)
    p.add_argument("--base", help="base model for forgetting deltas (default: --model)")
    p.add_argument("--suite-dir", action="append", default=[], help="extra suite folder(s)")
    p.set_defaults(func=_eval)

    p = verbs.add_parser("report", help="write report.md/report.html for a study")
    p.add_argument("study", help="study (MLflow experiment) name, or an experiment .yaml file")
    p.add_argument("--out", help="output folder (default: reports/<name>)")
    p.add_argument(
        "--tracking-uri", help=f"default: the experiment file's, else {DEFAULT_TRACKING_URI}"
    )
    p.set_defaults(func=_report)

    p = verbs.add_parser("gate", help="paired regression gate: candidate vs baseline")
    p.add_argument(
        "--baseline", help="MLflow run id(s), comma-separated, or `harness eval` folder(s)"
    )
    p.add_argument("--candidate", help="as --baseline; several runs per side are pooled")
    p.add_argument(
        "--baseline-model", help="model folder or .gguf to evaluate (base cache applies)"
    )
    p.add_argument("--candidate-model", help="model folder, adapter or .gguf to evaluate and gate")
    p.add_argument("--suites", default="forgetting,refusal,format", help="with --*-model")
    _add_dataset_option(p)
    p.add_argument("--limit", type=int, help="with --*-model: items per task")
    p.add_argument("--suite-dir", action="append", default=[], help="extra suite folder(s)")
    p.add_argument("--thresholds", help="YAML: metric -> allowed change, or an experiment file")
    p.add_argument("--out", help="output folder (default: reports/gate-<baseline8>-<candidate8>)")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow tracking URI")
    p.add_argument("--strict", action="store_true", help="exit 1 on an inconclusive verdict too")
    p.add_argument(
        "--common-items",
        action="store_true",
        help="when a suite's items differ between runs, compare the items every run holds "
        "alike (the report says how many were dropped) instead of exiting 2",
    )
    p.set_defaults(func=_gate)

    p = verbs.add_parser("data", help="data tools")
    data_verbs = _subparsers(p, "data_verb", "ACTION")
    q = data_verbs.add_parser("lint", help="lint SFT data files")
    q.add_argument("files", nargs="+", help="JSONL chat files ({messages: [...]} per line)")
    q.add_argument(
        "--suites",
        help="comma-separated suites to check contamination against (default: all; none)",
    )
    _add_dataset_option(q)
    q.add_argument(
        "--format",
        choices=["auto", "messages", "prompt_completion", "alpaca", "text"],
        default="auto",
        help="row format of the files; auto detects it from the first row",
    )
    q.add_argument("--model", help="count tokens with this model's tokenizer (default: words)")
    q.add_argument("--suite-dir", action="append", default=[], help="extra suite folder(s)")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.set_defaults(func=_data_lint)

    p = verbs.add_parser("judge", help="refusal judges")
    judge_verbs = _subparsers(p, "judge_verb", "ACTION")
    q = judge_verbs.add_parser("check", help="measure a suite's judge on human-labelled replies")
    q.add_argument("suite", help="the suite whose judge to check, e.g. refusal")
    q.add_argument("file", help="JSONL: reply (or text), label or refusal; optional prompt, model")
    q.add_argument("--save", action="store_true", help="store the figures in the suite folder")
    q.add_argument("--suite-dir", action="append", default=[], help="extra suite folder(s)")
    q.set_defaults(func=_judge_check)

    p = verbs.add_parser("toy", help="the offline toy world (tiny base model + data)")
    toy_verbs = _subparsers(p, "toy_verb", "ACTION")
    q = toy_verbs.add_parser("build", help="build (or find cached) the toy world")
    q.add_argument(
        "--size", choices=["tiny", "demo"], default="demo", help="tiny: for tests; demo: the demo's"
    )
    q.add_argument("--out", help="directory to write to (default: the cache)")
    q.add_argument("--force", action="store_true", help="rebuild even if cached")
    q.set_defaults(func=_toy_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or bool(os.environ.get("HARNESS_DEBUG"))
    try:
        return args.func(args)
    except HarnessError as e:
        if debug:
            traceback.print_exc()
        for line in str(e).splitlines() or [""]:
            print(f"error: {redact(line)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug: say so in one line, not a page of traceback
        if debug:
            traceback.print_exc()
        what = redact(f"{type(e).__name__}: {e}".splitlines()[0])[:300]
        print(
            f"error: internal error ({what}); run with --debug for the traceback",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())


def _write_report(outcome: StudyOutcome, exp: Experiment) -> Path | None:
    """The study report under `reports/<name>/`, also attached to the parent run."""
    from harness.study import tracking
    from harness.verdicts.report import write_study_report

    out = Path("reports") / exp.name
    md, html = write_study_report(exp.name, outcome.tracking_uri, out)
    for path in (md, html, out / "effects.json"):
        tracking.client().log_artifact(outcome.parent_run_id, str(path), "report")
    return out
