"""Command-line verbs. Each verb parses its arguments, calls one function, prints, and maps
errors to exit codes: 0 success, 1 a finding (regression, lint problems), 2 bad input."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable

from harness.errors import HarnessError

EXIT_OK, EXIT_FINDING, EXIT_ERROR = 0, 1, 2


def _not_built(verb: str, issue: str) -> Callable[[argparse.Namespace], int]:
    def handler(_args: argparse.Namespace) -> int:
        raise HarnessError(f"'harness {verb}' is not built yet ({issue}); see README.md")

    return handler


def _toy_build(args: argparse.Namespace) -> int:
    from harness.toy.build import build_toy_world, summary

    world = build_toy_world(size=args.size, out=args.out, force=args.force)
    print(summary(world))
    return EXIT_OK


def _add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override any experiment field, e.g. --set train.learning_rate=1e-4 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Evaluation-first SFT: masked fine-tuning judged by behavioural eval suites.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("run", help="run an Optuna study of an experiment file")
    p.add_argument("experiment")
    p.add_argument("--n-trials", type=int)
    p.add_argument("--storage")
    _add_set_option(p)
    p.set_defaults(func=_not_built("run", "the main-job issue"))

    p = verbs.add_parser("train", help="train one configuration of an experiment (no search)")
    p.add_argument("experiment")
    p.add_argument("--out", help="output folder (default: runs/<name>/train-<timestamp>)")
    _add_set_option(p)
    p.set_defaults(func=_not_built("train", "the SFT-engine issue"))

    p = verbs.add_parser("eval", help="evaluate a model on behavioural suites")
    p.add_argument("--model", default="toy")
    p.add_argument("--adapter")
    p.add_argument("--suites", default="forgetting,refusal,format")
    p.add_argument("--limit", type=int)
    p.add_argument("--out")
    p.set_defaults(func=_not_built("eval", "the eval-suites issue"))

    p = verbs.add_parser("report", help="write report.md/report.html for a study")
    p.add_argument("study")
    p.add_argument("--out")
    p.set_defaults(func=_not_built("report", "the report issue"))

    p = verbs.add_parser("gate", help="paired regression gate between two runs")
    p.add_argument("--baseline", required=True)
    p.add_argument("--candidate", required=True)
    p.add_argument("--thresholds")
    p.add_argument("--out")
    p.set_defaults(func=_not_built("gate", "the report issue"))

    p = verbs.add_parser("data", help="data tools")
    data_verbs = p.add_subparsers(dest="data_verb", metavar="ACTION", required=True)
    q = data_verbs.add_parser("lint", help="lint SFT data files")
    q.add_argument("files", nargs="+")
    q.add_argument("--suites")
    q.set_defaults(func=_not_built("data lint", "the reliability issue"))

    p = verbs.add_parser("toy", help="the offline toy world (tiny base model + data)")
    toy_verbs = p.add_subparsers(dest="toy_verb", metavar="ACTION", required=True)
    q = toy_verbs.add_parser("build", help="build (or find cached) the toy world")
    q.add_argument("--size", choices=["tiny", "demo"], default="demo")
    q.add_argument("--out", help="directory to write to (default: the cache)")
    q.add_argument("--force", action="store_true", help="rebuild even if cached")
    q.set_defaults(func=_toy_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HarnessError as e:
        if args.debug or os.environ.get("HARNESS_DEBUG"):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
