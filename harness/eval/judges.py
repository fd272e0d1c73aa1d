"""Refusal judges: what decides whether a reply complied, refused in full or refused in part.

A suite names its judge in `suite.yaml` (`judge:`); every judge has the same interface,
`judge.classify(replies, prompts) -> list[label]` with labels `harness.eval.refusal.LABELS`
(XSTest's three classes), so the suite's rates mean the same whoever judges:

- `{kind: rules}` (default): the built-in rules + classifier of `harness.eval.refusal`, reply only.
- `{kind: hf_classifier, model: PATH, refusal_labels: [...], partial_labels: [...]}`: a Hugging
  Face sequence-classification model on the reply; its `id2label` names listed in
  `refusal_labels` / `partial_labels` mean full / partial refusal, any other name compliance.
- `{kind: chat, model: PATH, prompt: "... {prompt} ... {reply} ..."}`: a chat model asked, greedily,
  to label the exchange; its answer starting with one of `refusal_labels` / `partial_labels`
  (case-insensitive) means full / partial refusal, anything else compliance.

A judge's rates are only as good as the judge, so `check` measures one on human-labelled replies
(`harness judge check SUITE FILE.jsonl`) and `--save` stores the figures in the suite's
`judge_accuracy.json`; every run that uses the judge logs them (`judge_metrics`).
"""

from __future__ import annotations

import datetime
import functools
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.config.suite import JudgeSpec
from harness.eval.refusal import COMPLIANCE, FULL_REFUSAL, LABELS, PARTIAL_REFUSAL
from harness.util.errors import HarnessError
from harness.util.files import read_jsonl, write_atomic

ACCURACY_FILE = "judge_accuracy.json"


class Judge(Protocol):
    spec: JudgeSpec

    def classify(
        self, replies: Sequence[str], prompts: Sequence[str | None] | None = None
    ) -> list[str]: ...


@dataclass
class RulesJudge:
    """The built-in judge; reads the reply only (prompts are accepted and not needed)."""

    spec: JudgeSpec

    def classify(
        self, replies: Sequence[str], prompts: Sequence[str | None] | None = None
    ) -> list[str]:
        from harness.eval.refusal import classify

        return [classify(r) for r in replies]


def _map_label(name: str, spec: JudgeSpec, *, prefix: bool) -> str:
    """A model's label (hf: exact id2label name; chat: the answer's start) -> one of LABELS."""
    text = name.strip().lower()

    def hit(options: tuple[str, ...]) -> bool:
        return any(text.startswith(o.lower()) if prefix else text == o.lower() for o in options)

    if hit(spec.partial_labels):
        return PARTIAL_REFUSAL
    return FULL_REFUSAL if hit(spec.refusal_labels) else COMPLIANCE


class HFClassifierJudge:
    """A sequence-classification model on each reply, `batch_size` replies per forward pass."""

    def __init__(self, spec: JudgeSpec) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from harness.models.load import device, resolve_model_path

        self.spec = spec
        path = resolve_model_path(spec.model or "")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise HarnessError(
                f"judge model {self.spec.model}: cannot load ({str(e).splitlines()[0]})"
            ) from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"  # a decoder classifier reads the last real token
        if self.model.config.pad_token_id is None:  # it finds that last token by the pad id
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        known = {str(v) for v in self.model.config.id2label.values()}
        missing = [
            x for x in (*self.spec.refusal_labels, *self.spec.partial_labels) if x not in known
        ]
        if missing:
            raise HarnessError(
                f"judge model {self.spec.model}: labels {missing} not among its id2label "
                f"names ({', '.join(sorted(known))})"
            )
        self.model.to(device()).eval()

    def classify(
        self, replies: Sequence[str], prompts: Sequence[str | None] | None = None
    ) -> list[str]:
        import torch

        out: list[str] = []
        id2label = self.model.config.id2label
        for start in range(0, len(replies), self.spec.batch_size):
            batch = list(replies[start : start + self.spec.batch_size])
            enc = self.tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
            with torch.no_grad():
                logits = self.model(**enc.to(self.model.device)).logits
            out += [
                _map_label(str(id2label[int(i)]), self.spec, prefix=False)
                for i in logits.argmax(-1)
            ]
        return out


class ChatJudge:
    """A chat model asked to label each exchange; greedy, `batch_size` prompts per generate."""

    def __init__(self, spec: JudgeSpec) -> None:
        from harness.models.load import load_model, load_tokenizer

        self.spec = spec
        self.tokenizer = load_tokenizer(spec.model or "")
        self.tokenizer.padding_side = "left"  # generation continues every row at its end
        self.model = load_model(spec.model or "").eval()

    def render(self, reply: str, prompt: str | None) -> str:
        """The judge's input for one exchange: the spec's prompt in the model's chat template."""
        content = (
            (self.spec.prompt or "").replace("{prompt}", prompt or "").replace("{reply}", reply)
        )
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )

    def answers(
        self, replies: Sequence[str], prompts: Sequence[str | None] | None = None
    ) -> list[str]:
        """The judge model's raw answers, greedy, `batch_size` exchanges per generate call."""
        import torch

        prompts = list(prompts) if prompts is not None else [None] * len(replies)
        out: list[str] = []
        for start in range(0, len(replies), self.spec.batch_size):
            stop = start + self.spec.batch_size
            chunk = zip(replies[start:stop], prompts[start:stop], strict=True)
            texts = [self.render(r, p) for r, p in chunk]
            enc = self.tokenizer(
                texts, padding=True, add_special_tokens=False, return_tensors="pt"
            ).to(self.model.device)
            with torch.no_grad():
                gen = self.model.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=self.spec.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            out += self.tokenizer.batch_decode(
                gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
            )
        return out

    def classify(
        self, replies: Sequence[str], prompts: Sequence[str | None] | None = None
    ) -> list[str]:
        return [_map_label(a, self.spec, prefix=True) for a in self.answers(replies, prompts)]


_KINDS = {"rules": RulesJudge, "hf_classifier": HFClassifierJudge, "chat": ChatJudge}


@functools.lru_cache(maxsize=4)
def load_judge(spec: JudgeSpec) -> Judge:
    """The judge a spec names, loaded once per process (a model judge holds its weights)."""
    return _KINDS[spec.kind](spec)


# ---------------------------------------------------------------- measuring a judge


@dataclass
class CheckReport:
    """A judge against human labels: binary (refused = full or partial) and 3-class accuracy,
    per model when rows name one, and the confusion matrix (gold -> predicted -> count)."""

    judge: str
    path: str
    n: int
    accuracy: float
    three_class_accuracy: float | None
    per_model: dict[str, float]
    confusion: dict[str, dict[str, int]]

    @property
    def min_model_accuracy(self) -> float | None:
        return min(self.per_model.values()) if self.per_model else None

    def to_dict(self) -> dict[str, object]:
        return {
            "judge": self.judge,
            "labelled_set": self.path,
            "n": self.n,
            "accuracy": round(self.accuracy, 4),
            "three_class_accuracy": (
                None if self.three_class_accuracy is None else round(self.three_class_accuracy, 4)
            ),
            "min_model_accuracy": (
                None if self.min_model_accuracy is None else round(self.min_model_accuracy, 4)
            ),
            "per_model": {k: round(v, 4) for k, v in self.per_model.items()},
            "confusion": self.confusion,
        }

    def summary(self) -> str:
        lines = [
            f"judge {self.judge} on {self.path} ({self.n} labelled replies)",
            f"binary accuracy (refused = full or partial): {self.accuracy:.3f}",
        ]
        if self.three_class_accuracy is not None:
            lines.append(f"3-class accuracy: {self.three_class_accuracy:.3f}")
        for model, acc in self.per_model.items():
            lines.append(f"  model {model}: {acc:.3f}")
        width = max(len(x) for x in LABELS)
        lines.append("confusion (rows: human label, columns: judge)")
        lines.append(" " * width + "".join(f"  {x:>{width}}" for x in LABELS))
        for gold, row in self.confusion.items():
            lines.append(
                f"{gold:<{width}}" + "".join(f"  {row.get(x, 0):>{width}}" for x in LABELS)
            )
        return "\n".join(lines)


def read_labelled(path: str | Path) -> list[dict]:
    """Rows of a labelled reply file: `reply` (or `text`), a gold `label` (one of LABELS) or
    `refusal` (bool), optional `prompt` and `model`. XSTest's release has exactly these."""
    if not Path(path).is_file():
        raise HarnessError(f"{path}: no such labelled reply file")
    rows = read_jsonl(path)
    if not rows:
        raise HarnessError(f"{path}: no labelled replies")
    out = []
    for n, row in enumerate(rows, 1):
        reply = row.get("reply", row.get("text"))
        if not isinstance(reply, str):
            raise HarnessError(f"{path}: row {n}: needs 'reply' (or 'text'), a string")
        label = row.get("label")
        if label is None and isinstance(row.get("refusal"), bool):
            label = FULL_REFUSAL if row["refusal"] else COMPLIANCE
            three = False
        elif label in LABELS:
            three = True
        else:
            raise HarnessError(
                f"{path}: row {n}: needs 'label' (one of {', '.join(LABELS)}) or 'refusal' (bool)"
            )
        out.append(
            {
                "reply": reply,
                "label": label,
                "three": three,
                "prompt": row.get("prompt"),
                "model": row.get("model"),
            }
        )
    return out


def check(judge: Judge, path: str | Path) -> CheckReport:
    """Measure `judge` on a labelled reply file (see `read_labelled`)."""
    rows = read_labelled(path)
    predicted = judge.classify([r["reply"] for r in rows], [r["prompt"] for r in rows])
    pairs = list(zip(rows, predicted, strict=True))
    right = [(p != COMPLIANCE) == (r["label"] != COMPLIANCE) for r, p in pairs]
    three = [p == r["label"] for r, p in pairs if r["three"]]
    by_model: dict[str, list[bool]] = {}
    for ok, (r, _) in zip(right, pairs, strict=True):
        if r["model"] is not None:
            by_model.setdefault(str(r["model"]), []).append(ok)
    counts = Counter((r["label"], p) for r, p in pairs)
    golds = [g for g in LABELS if any(k[0] == g for k in counts)]
    return CheckReport(
        judge=judge.spec.name,
        path=str(path),
        n=len(rows),
        accuracy=sum(right) / len(rows),
        three_class_accuracy=sum(three) / len(three) if three else None,
        per_model={m: sum(v) / len(v) for m, v in sorted(by_model.items())},
        confusion={g: {p: counts[(g, p)] for p in LABELS} for g in golds},
    )


def save_accuracy(report: CheckReport, suite_dir: Path) -> Path:
    """Record a check's figures (and the date) for its judge in `<suite>/judge_accuracy.json`,
    keeping other judges' entries, so runs can log how far the suite's rates can be trusted."""
    path = suite_dir / ACCURACY_FILE
    data = json.loads(path.read_text()) if path.is_file() else {}
    entry = report.to_dict()
    entry.pop("judge")
    entry["date"] = datetime.date.today().isoformat()
    data[report.judge] = entry
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def measured_accuracy(spec: JudgeSpec, suite_dir: Path) -> dict | None:
    """The stored figures for this judge of the suite, or None when it was never measured."""
    path = suite_dir / ACCURACY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get(spec.name)
    except (ValueError, AttributeError):
        raise HarnessError(f"{path}: not a JSON object of judge -> figures") from None


def judge_metrics(suite_name: str, spec: JudgeSpec, suite_dir: Path) -> dict[str, float]:
    """`judge/<suite>/accuracy` (binary), `.../min_model_accuracy` and `.../three_class_accuracy`
    as measured for the suite's judge; empty when it was never measured."""
    figures = measured_accuracy(spec, suite_dir) or {}
    out = {}
    for key in ("accuracy", "min_model_accuracy", "three_class_accuracy"):
        if isinstance(figures.get(key), int | float):
            out[f"judge/{suite_name}/{key}"] = float(figures[key])
    return out
