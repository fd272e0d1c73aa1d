"""SFT throughput: the harness's token-budget batches against the strongest baselines.

Every variant trains the same freshly initialised Llama (built from the toy tokenizer) on the
same encoded, masked chats (assistant-only labels) for one epoch, full fine-tuning, with the
same optimiser settings and, on average, the same number of examples per optimizer step:
  harness          `harness.sft.train.train`: length-grouped batches under a token budget, seeded
                   order, loss over trained positions in chunks
  trainer          `Trainer`, random order, fixed-size batches padded to the longest row
                   (`DataCollatorForSeq2Seq`), the way most SFT scripts start
  trainer-grouped  the same with `Trainer`'s own length grouping (`group_by_length`; in
                   transformers 5 `train_sampling_strategy="group_by_length"`), its strongest
                   built-in
  trl-padded       TRL's `SFTTrainer` on the same tokenised rows and labels (when TRL is
                   installed), padded batches
  trl-padding-free the same with `padding_free=True`: one flattened row per batch; with SDPA
                   (CPU) transformers turns it into a block-diagonal mask, quadratic in the row
The chats are toy SFT conversations joined into multi-turn ones of 1-8 exchanges, so lengths
vary widely, as in real SFT mixes. Each variant runs in its own process, so peak memory (RSS on
CPU, `torch.cuda.max_memory_allocated` on GPU) is its own.

Achieved FLOP/s counts the usual 6 x (weights of all linear layers, lm_head included) per real
token (attention scores excluded), and is shown as a share of a dense matmul peak measured here
first (bf16 on CUDA; on CPU fp32 with the same threads, both per CPU-second of the process).

    python benchmarks/sft_throughput.py [--examples 600] [--hidden 256] [--layers 4] [--threads 1]
        [--variants harness,trainer-grouped,...]

Prints real (non-pad) tokens per wall-clock second and per CPU-second of each, the ratio of the
harness to each, padding fractions, achieved FLOP/s and peak memory. On a shared machine
wall-clock figures move with the other load (the variants run one after another); per
CPU-second figures (on CPU with one thread) move much less, so compare those ratios first.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SOURCES = ("qa", "format", "refusal", "benign")


def build_rows(n: int, seed: int, max_length: int) -> list[dict]:
    """`n` encoded conversations of 1-8 toy exchanges each (assistant-only labels)."""
    from harness.models.load import load_tokenizer
    from harness.models.toy.build import build_toy_world
    from harness.sft.masking import encode_examples
    from harness.sft.sources import Example, load_source

    world = build_toy_world("tiny")
    tokenizer = load_tokenizer("toy:tiny")
    chats = []
    for name in SOURCES:
        loaded = load_source(world.data_dir / "sft" / f"{name}.jsonl", name=name)
        chats += [ex.messages for ex in loaded.examples]
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        turns = []
        for chat in rng.sample(chats, rng.choice([1, 1, 2, 3, 4, 6, 8])):
            turns += [m for m in chat if m["role"] != "system"]
        examples.append(Example("bench", i + 1, messages=turns))
    return encode_examples(tokenizer, examples, max_length, overlong="truncate").rows


def build_model(hidden: int, layers: int, vocab_size: int, tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=max(hidden // 64, 1),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    from harness.models.load import device

    return LlamaForCausalLM(config).to(device())


def experiment(args: argparse.Namespace):
    from pathlib import Path

    from harness.config.load import validate

    raw = {
        "name": "sft-throughput",
        "model": "toy:tiny",
        "seed": args.seed,
        "data": {"sources": [{"name": "bench", "path": "unused.jsonl"}]},
        "train": {
            "learning_rate": 1e-3,
            "epochs": 1,
            "batch_tokens": args.batch_tokens,
            "warmup_ratio": 0.0,
            "scheduler": "constant",
        },
        "peft": "none",
    }
    return validate(raw, "benchmark", Path.cwd())


def run_variant(variant: str, args: argparse.Namespace, rows: list[dict], rows_per_step: int):
    """Train one variant in this (child) process and return its figures."""
    import torch

    torch.set_num_threads(args.threads)
    from harness.models.load import load_tokenizer

    tokenizer = load_tokenizer("toy:tiny")
    model = build_model(args.hidden, args.layers, len(tokenizer), tokenizer)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    exp = experiment(args)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    cpu_start = time.process_time()
    if variant == "harness":
        from harness.sft.train import PreparedData, train

        result = train(exp, model, tokenizer, PreparedData(rows, {}), verbose=False)
        real, seconds, padding = result.train_tokens, result.seconds, result.padding_fraction
        steps = result.steps
    else:
        real, seconds, padding, steps = _trainer_variant(
            variant, exp, model, tokenizer, rows, rows_per_step
        )
    cpu_seconds = time.process_time() - cpu_start
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "variant": variant,
        "tokens": real,
        "seconds": seconds,
        "tokens_per_second": real / seconds,
        "cpu_seconds": cpu_seconds,
        "tokens_per_cpu_second": real / cpu_seconds,
        # per CPU-second on CPU, like the peak it is compared with
        "flops_per_second": 6
        * linear
        * real
        / (seconds if torch.cuda.is_available() else cpu_seconds),
        "padding_fraction": padding,
        "steps": steps,
        "peak_memory_mb": peak,
    }


def _trainer_variant(variant: str, exp, model, tokenizer, rows: list[dict], batch_size: int):
    """`Trainer` (random order or length-grouped) or TRL's `SFTTrainer` (padded or padding-free)
    on the same rows; real and padded tokens are counted per micro-batch."""
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from harness.models.load import device, train_dtype

    counts = {"real": 0, "padded": 0}

    def counting(cls):
        class Counting(cls):
            def training_step(self, model, inputs, num_items_in_batch=None):
                mask = inputs.get("attention_mask")
                ids = inputs["input_ids"]
                counts["real"] += int(mask.sum()) if mask is not None else ids.numel()
                counts["padded"] += ids.numel()
                return super().training_step(model, inputs, num_items_in_batch)

        return Counting

    t = exp.train
    model.config.use_cache = False
    common = dict(
        output_dir="/tmp/sft-throughput-baseline",
        per_device_train_batch_size=batch_size,
        learning_rate=t.learning_rate,
        num_train_epochs=1,
        lr_scheduler_type="constant",
        max_grad_norm=t.max_grad_norm,
        bf16=train_dtype() == torch.bfloat16,
        use_cpu=device() == "cpu",
        seed=exp.seed,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    features = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    if variant.startswith("trl"):
        import datasets
        from trl import SFTConfig, SFTTrainer

        trainer = counting(SFTTrainer)(
            model=model,
            args=SFTConfig(**common, padding_free=variant == "trl-padding-free", max_length=None),
            train_dataset=datasets.Dataset.from_list(features),
            processing_class=tokenizer,
        )
    else:
        if variant == "trainer-grouped":
            import inspect

            params = inspect.signature(TrainingArguments).parameters
            if "train_sampling_strategy" in params:  # transformers >= 5
                common["train_sampling_strategy"] = "group_by_length"
            else:
                common["group_by_length"] = True
        trainer = counting(Trainer)(
            model=model,
            args=TrainingArguments(**common),
            train_dataset=features,
            data_collator=DataCollatorForSeq2Seq(
                tokenizer, padding="longest", label_pad_token_id=-100
            ),
        )
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    padding = 1 - counts["real"] / counts["padded"]
    return counts["real"], seconds, padding, trainer.state.global_step


def matmul_peak(threads: int, seconds: float = 2.0) -> float:
    """Dense matmul FLOP/s on this machine: bf16 on CUDA (wall-clock), fp32 on CPU with `threads`
    threads per CPU-second (the process's CPU time, which other load on a shared machine does
    not inflate the way it inflates wall-clock time)."""
    import torch

    torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    n = 8192 if cuda else 1024
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(n, n, dtype=dtype, device="cuda" if cuda else "cpu")
    b = torch.randn_like(a)
    a @ b  # warm-up
    clock = time.perf_counter if cuda else time.process_time
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        if cuda:
            torch.cuda.synchronize()
        start = clock()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / max(clock() - start, 1e-9))
    return best


def _child(variant, args, rows, rows_per_step, queue) -> None:
    queue.put(run_variant(variant, args, rows, rows_per_step))


VARIANTS = ("harness", "trainer", "trainer-grouped", "trl-padded", "trl-padding-free")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=600)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: small matrices gain little from more, and shared cores thrash)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    try:
        import trl  # noqa: F401
    except ImportError:
        skipped = [v for v in variants if v.startswith("trl")]
        variants = [v for v in variants if not v.startswith("trl")]
        if skipped:
            print(f"TRL is not installed: skipping {', '.join(skipped)}")

    from harness.sft.batching import plan_grouped, plan_stats

    rows = build_rows(args.examples, args.seed, args.max_length)
    lengths = [len(r["input_ids"]) for r in rows]
    plan = plan_stats(plan_grouped(lengths, args.batch_tokens, seed=args.seed), lengths)
    rows_per_step = max(round(len(rows) / plan["batches"]), 1)
    peak = matmul_peak(args.threads)
    print(
        f"{len(rows)} conversations, {sum(lengths):,} tokens, lengths {min(lengths)}-"
        f"{max(lengths)} (mean {sum(lengths) / len(lengths):.0f}); model hidden {args.hidden}, "
        f"{args.layers} layers; harness batches of <= {args.batch_tokens} tokens, others "
        f"{rows_per_step} rows per batch (the harness's mean); {args.threads} CPU thread(s); "
        f"matmul peak {peak / 1e9:,.1f} GFLOP/s",
        flush=True,
    )
    ctx = mp.get_context("spawn")
    results = {}
    for variant in variants:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(variant, args, rows, rows_per_step, queue))
        proc.start()
        results[variant] = queue.get()
        proc.join()
        r = results[variant]
        print(
            f"{variant:>16}: {r['tokens_per_second']:>9,.0f} real tokens/s  "
            f"{r['tokens_per_cpu_second']:>7,.0f} per CPU-second  "
            f"({r['tokens']:,} tokens in {r['seconds']:.1f}s, {r['steps']} steps)  "
            f"padding {r['padding_fraction']:.1%}  "
            f"{r['flops_per_second'] / 1e9:,.2f} GFLOP/s = {r['flops_per_second'] / peak:.1%} "
            f"of peak  peak memory {r['peak_memory_mb']:,.0f} MB",
            flush=True,
        )
    if "harness" in results:
        h = results["harness"]
        for variant, r in results.items():
            if variant != "harness":
                wall = h["tokens_per_second"] / r["tokens_per_second"]
                cpu = h["tokens_per_cpu_second"] / r["tokens_per_cpu_second"]
                print(f"ratio harness / {variant}: {wall:.2f}x wall-clock, {cpu:.2f}x CPU time")


if __name__ == "__main__":
    main()
