"""The command line explains itself: every verb's every argument has help text, and `--help`
lists the exit codes."""

from __future__ import annotations

import argparse
import subprocess
import sys

from harness.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("harness",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_argument_has_help():
    missing = [
        f"{' '.join(path)} {action.option_strings or action.dest}"
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert not missing, missing


def test_help_shows_defaults_and_exit_codes():
    out = subprocess.run(
        [sys.executable, "-m", "harness", "gate", "--help"], capture_output=True, text=True
    ).stdout
    assert "(default: sqlite:///mlflow.db)" in out
    assert "exit codes" in out and "130" in out
    top = subprocess.run(
        [sys.executable, "-m", "harness", "--help"], capture_output=True, text=True
    ).stdout
    assert "2    bad input" in top
