"""Generation budgets against real replies: how many of a strong model's IFEval replies fit a
budget, and whether the refusal judge's verdict survives cutting XSTest replies at a budget.

Reads the shared data in place (`../shared/ifeval`, `../shared/xstest`); counts tokens with the
tokenizer of the model the budget is for (any name `harness eval --model` takes, or a folder):

- IFEval: the authors' 541 GPT-4 responses, in that tokenizer's tokens: median, 90th percentile
  and how many are longer than each budget; and how many items the harness would leave out at
  each budget because their instructions need more (`harness.eval.suites.tokens_needed`).
- XSTest: the 2,250 human-labelled replies of five models, each cut at k tokens: the suite
  judge's binary accuracy (refused = full or partial) against the human labels, per k.

    python benchmarks/reply_budgets.py --tokenizer PATH [--budgets 128,256,384,512,768,1024,1280]
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="model name or folder to count with")
    parser.add_argument("--budgets", default="128,256,384,512,768,1024,1280", help="IFEval")
    parser.add_argument("--cuts", default="32,48,64,96,128", help="XSTest cut points (tokens)")
    args = parser.parse_args()

    from harness.eval.refusal import COMPLIANCE, classify
    from harness.eval.suites import load_suite, shared_dir, tokens_needed
    from harness.models.load import load_tokenizer
    from harness.util.files import read_jsonl, read_rows

    tok = load_tokenizer(args.tokenizer)

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    responses = sorted(shared_dir().glob("ifeval/input_response_data_gpt4_*.jsonl"))
    lengths = sorted(len(ids(r["response"])) for r in read_jsonl(responses[0]))
    rows = read_rows(load_suite("ifeval").data_path("english"))
    print(
        f"IFEval GPT-4 replies: {len(lengths)}; median {statistics.median(lengths):.0f}, "
        f"90th percentile {lengths[int(0.9 * len(lengths))]}, longest {lengths[-1]} tokens"
    )
    for b in (int(x) for x in args.budgets.split(",")):
        longer = sum(n > b for n in lengths)
        left_out = sum((tokens_needed(r) or 0) > b for r in rows)
        print(
            f"  budget {b:>5}: {longer:>3} of {len(lengths)} replies longer "
            f"({1 - longer / len(lengths):.1%} fit); {left_out} items left out"
        )

    labelled = read_jsonl(shared_dir() / "xstest" / "labelled_replies.jsonl")
    gold = [r["label"] != COMPLIANCE for r in labelled]
    encoded = [ids(r["reply"]) for r in labelled]
    print(
        f"XSTest labelled replies: {len(labelled)}; median {statistics.median(map(len, encoded))}"
    )
    for k in [*(int(x) for x in args.cuts.split(",")), None]:
        texts = [
            r["reply"] if k is None else tok.decode(e[:k])
            for r, e in zip(labelled, encoded, strict=True)
        ]
        right = sum((classify(t) != COMPLIANCE) == g for t, g in zip(texts, gold, strict=True))
        where = "whole replies" if k is None else f"cut at {k:>3} tokens"
        longer = 0 if k is None else sum(len(e) > k for e in encoded)
        print(f"  {where}: judge accuracy {right / len(labelled):.4f} ({longer} replies cut)")


if __name__ == "__main__":
    main()
