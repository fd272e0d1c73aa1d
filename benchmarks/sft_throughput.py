"""SFT throughput: the harness's batches against the strongest baselines, at equal settings.

Every variant trains the same freshly initialised model on the same encoded, masked chats
(assistant-only labels) for one epoch (or `--max-steps`), full fine-tuning, with the same
optimiser settings, no gradient checkpointing, the same precision and, on average, the same
number of examples per optimizer step:
  harness          `harness.sft.train.train`, `train.batching: grouped`: length-grouped batches
                   under a token budget, seeded order, loss over trained positions in chunks
  harness-packed   the same with `train.batching: packed`: best-fit bins flattened into one row,
                   exact per-example attention (`harness.sft.attention`)
  trainer          `Trainer`, random order, fixed-size batches padded to the longest row
                   (`DataCollatorForSeq2Seq`), the way most SFT scripts start
  trainer-grouped  the same with `Trainer`'s own length grouping (`group_by_length`; in
                   transformers 5 `train_sampling_strategy="group_by_length"`)
  trl-padded       TRL's `SFTTrainer` on the same tokenised rows and labels, padded batches,
                   `gradient_checkpointing=False` (SFTConfig turns it on by default)
  trl-packing      the same with `packing=True` (best-fit bins of `--batch-tokens`, one row a step)
  trl-padding-free the same with `padding_free=True`: each batch flattened into one row
TRL's two flattened modes rely on the attention kernel to keep examples apart: without
flash-attention transformers turns the row into a block-diagonal SDPA mask, quadratic in the
row. TRL also computes entropy and token accuracy every step (its fixed behaviour).

Models: `--model toy` (a Llama of `--hidden`/`--layers` on the toy tokenizer and toy chats) or a
folder with a config.json and a tokenizer (e.g. SmolLM2-135M's, `benchmarks/fetch_wheels.sh`
writes one to benchmarks/carry/data/smollm2-135m): its weights if the folder has them, else
random weights of that architecture, on real chats from ../shared/realworld/sft (`--sft-dir`).
Each variant runs in its own process, so peak memory (RSS on CPU,
`torch.cuda.max_memory_allocated` on GPU) is its own.

Achieved FLOP/s counts 6 x (weights of all linear layers, lm_head included) per real token
(attention scores excluded), as a share of a dense matmul peak measured here first (bf16 on
CUDA; on CPU fp32 with the same threads, both per CPU-second of the process).

    python benchmarks/sft_throughput.py [--model toy|DIR] [--examples 600] [--threads 1]
        [--variants harness,trainer-grouped,...] [--max-steps N]

Prints real (non-pad) tokens per wall-clock second and per CPU-second of each, the ratio of the
harness to each, padding fractions, achieved FLOP/s and peak memory. On a shared machine
wall-clock figures move with the other load; per CPU-second figures (one thread) move much
less, so compare those ratios first.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOY_SOURCES = ("qa", "format", "refusal", "benign")
REAL_SOURCES = ("hh_rlhf_helpful", "gsm8k_train", "safety_tuned_llamas")
VARIANTS = (
    "harness",
    "harness-packed",
    "trainer",
    "trainer-grouped",
    "trl-padded",
    "trl-packing",
    "trl-padding-free",
)
SHARED_SFT = Path(__file__).resolve().parents[1] / ".." / "shared" / "realworld" / "sft"


# ------------------------------------------------------------------------------------ data


def toy_rows(n: int, seed: int, max_length: int) -> list[dict]:
    """`n` encoded conversations of 1-8 toy exchanges each (assistant-only labels)."""
    from harness.models.load import load_tokenizer
    from harness.models.toy.build import build_toy_world
    from harness.sft.masking import encode_examples
    from harness.sft.sources import Example, load_source

    world = build_toy_world("tiny")
    tokenizer = load_tokenizer("toy:tiny")
    chats = []
    for name in TOY_SOURCES:
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


def real_rows(tokenizer: Any, n: int, seed: int, max_length: int, sft_dir: Path) -> list[dict]:
    """`n` real chats drawn evenly from REAL_SOURCES in `sft_dir`, encoded with assistant-only
    labels and truncated to `max_length`."""
    from harness.sft.masking import encode_examples
    from harness.sft.sources import load_source

    rng = random.Random(seed)
    examples = []
    for name in REAL_SOURCES:
        loaded = load_source(sft_dir / name / "train.jsonl", name=name)
        examples += loaded.examples
    examples = rng.sample(examples, min(n, len(examples)))
    return encode_examples(tokenizer, examples, max_length, overlong="truncate").rows


# ------------------------------------------------------------------------------------ models


def toy_model(hidden: int, layers: int, tokenizer: Any):
    """A freshly initialised Llama of the given size on the toy tokenizer."""
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer),
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
    return model_from_config(config)


def model_from_config(config: Any, weights: str | Path | None = None):
    """The model of `config` in fp32 on the training device: `weights` (a folder) if given,
    else random weights, initialised on the device itself (fast for billions of parameters)."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.models.load import device

    torch.manual_seed(0)
    if weights is not None:
        return AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32).to(device())
    with torch.device(device()):
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def matmul_params(model: Any) -> int:
    """Weights that take part in matrix products per token (every Linear, lm_head included)."""
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


# ------------------------------------------------------------------------------------ runs


def experiment(
    batch_tokens: int,
    seed: int,
    *,
    batching: str = "grouped",
    precision: str = "auto",
    max_steps: int | None = None,
    model: str = "toy:tiny",
):
    """The harness experiment every variant's settings are read from."""
    from harness.config.load import validate

    raw = {
        "name": "sft-throughput",
        "model": model,
        "seed": seed,
        "data": {"sources": [{"name": "bench", "path": "unused.jsonl"}]},
        "train": {
            "learning_rate": 1e-4,
            "epochs": 1,
            "batch_tokens": batch_tokens,
            "warmup_ratio": 0.0,
            "scheduler": "constant",
            "batching": batching,
            "precision": precision,
            **({"max_steps": max_steps} if max_steps else {}),
        },
        "peft": "none",
    }
    return validate(raw, "benchmark", Path.cwd())


def train_variant(
    variant: str, model: Any, tokenizer: Any, rows: list[dict], exp: Any, rows_per_step: int
) -> dict:
    """Train one variant in this process; real tokens, seconds, padding, steps, peak memory."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    cpu_start = time.process_time()
    if variant.startswith("harness"):
        from harness.sft.train import PreparedData, train

        result = train(exp, model, tokenizer, PreparedData(rows, {}), verbose=False)
        real, seconds, padding = result.train_tokens, result.seconds, result.padding_fraction
        steps = result.steps
    else:
        real, seconds, padding, steps = _baseline(
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
        "padding_fraction": padding,
        "steps": steps,
        "peak_memory_mb": peak,
    }


def _baseline(variant: str, exp, model, tokenizer, rows: list[dict], batch_size: int):
    """`Trainer` (random order or length-grouped) or TRL's `SFTTrainer` (padded, packing or
    padding-free) on the same rows; real and padded tokens are counted per micro-batch."""
    import inspect

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
    packing = variant == "trl-packing"
    common = dict(
        output_dir="/tmp/sft-throughput-baseline",
        per_device_train_batch_size=1 if packing else batch_size,
        learning_rate=t.learning_rate,
        num_train_epochs=1,
        max_steps=t.max_steps or -1,
        lr_scheduler_type="constant",
        max_grad_norm=t.max_grad_norm,
        bf16=train_dtype(t.precision) == torch.bfloat16,
        use_cpu=device() == "cpu",
        seed=exp.seed,
        gradient_checkpointing=False,
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

        config = SFTConfig(
            **common,
            padding_free=variant == "trl-padding-free",
            packing=packing,
            max_length=t.batch_tokens if packing else None,
        )
        trainer = counting(SFTTrainer)(
            model=model,
            args=config,
            train_dataset=datasets.Dataset.from_list(features),
            processing_class=tokenizer,
        )
    else:
        if variant == "trainer-grouped":
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
    if torch.cuda.is_available():
        torch.cuda.synchronize()
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


def rows_per_step(rows: list[dict], batch_tokens: int, seed: int) -> int:
    """The harness's mean examples per batch: the fixed batch size the baselines get."""
    from harness.sft.batching import plan_grouped

    lengths = [len(r["input_ids"]) for r in rows]
    return max(round(len(rows) / len(plan_grouped(lengths, batch_tokens, seed=seed))), 1)


def trl_available() -> bool:
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------ CLI


def _load(args: argparse.Namespace):
    """The tokenizer, the rows and a fresh model for `args.model`."""
    from harness.models.load import load_tokenizer

    if args.model == "toy":
        tokenizer = load_tokenizer("toy:tiny")
        rows = toy_rows(args.examples, args.seed, args.max_length)
        return tokenizer, rows, lambda: toy_model(args.hidden, args.layers, tokenizer)
    from transformers import AutoConfig

    folder = Path(args.model)
    tokenizer = load_tokenizer(str(folder))
    rows = real_rows(tokenizer, args.examples, args.seed, args.max_length, Path(args.sft_dir))
    config = AutoConfig.from_pretrained(folder)
    weights = folder if has_weights(folder) else None
    return tokenizer, rows, lambda: model_from_config(config, weights)


def _child(variant: str, args: argparse.Namespace, per_step: int, queue) -> None:
    import torch

    torch.set_num_threads(args.threads)
    tokenizer, rows, make_model = _load(args)
    model = make_model()
    exp = experiment(
        args.batch_tokens,
        args.seed,
        batching="packed" if variant == "harness-packed" else "grouped",
        max_steps=args.max_steps,
    )
    result = train_variant(variant, model, tokenizer, rows, exp, per_step)
    seconds = result["seconds"] if torch.cuda.is_available() else result["cpu_seconds"]
    result["flops_per_second"] = 6 * matmul_params(model) * result["tokens"] / seconds
    queue.put(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy", help="toy, or a folder (config + tokenizer)")
    parser.add_argument("--sft-dir", default=str(SHARED_SFT), help="real chats (folder model)")
    parser.add_argument("--examples", type=int, default=600)
    parser.add_argument("--hidden", type=int, default=256, help="toy model only")
    parser.add_argument("--layers", type=int, default=4, help="toy model only")
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-steps", type=int, default=None, help="default: one epoch")
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
    if not trl_available():
        skipped = [v for v in variants if v.startswith("trl")]
        variants = [v for v in variants if not v.startswith("trl")]
        if skipped:
            print(f"TRL is not installed: skipping {', '.join(skipped)}")

    tokenizer, rows, _ = _load(args)
    lengths = [len(r["input_ids"]) for r in rows]
    per_step = rows_per_step(rows, args.batch_tokens, args.seed)
    peak = matmul_peak(args.threads)
    what = (
        f"toy Llama hidden {args.hidden}, {args.layers} layers"
        if args.model == "toy"
        else f"{args.model} ({'its weights' if has_weights(Path(args.model)) else 'random weights'})"
    )
    print(
        f"{len(rows)} conversations, {sum(lengths):,} tokens, lengths {min(lengths)}-"
        f"{max(lengths)} (mean {sum(lengths) / len(lengths):.0f}); model {what}; harness "
        f"batches of <= {args.batch_tokens} tokens, others {per_step} rows per batch (the "
        f"harness's mean); {args.threads} CPU thread(s); matmul peak {peak / 1e9:,.1f} GFLOP/s",
        flush=True,
    )
    ctx = mp.get_context("spawn")
    results = {}
    for variant in variants:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(variant, args, per_step, queue))
        proc.start()
        results[variant] = r = queue.get()
        proc.join()
        print(
            f"{variant:>16}: {r['tokens_per_second']:>9,.0f} real tokens/s  "
            f"{r['tokens_per_cpu_second']:>7,.0f} per CPU-second  "
            f"({r['tokens']:,} tokens in {r['seconds']:.1f}s, {r['steps']} steps)  "
            f"padding {r['padding_fraction']:.1%}  "
            f"{r['flops_per_second'] / 1e9:,.2f} GFLOP/s = {r['flops_per_second'] / peak:.1%} "
            f"of peak  peak memory {r['peak_memory_mb']:,.0f} MB",
            flush=True,
        )
    for mine in ("harness", "harness-packed"):
        if mine not in results:
            continue
        h = results[mine]
        for variant, r in results.items():
            if not variant.startswith("harness"):
                wall = h["tokens_per_second"] / r["tokens_per_second"]
                cpu = h["tokens_per_cpu_second"] / r["tokens_per_cpu_second"]
                print(f"ratio {mine} / {variant}: {wall:.2f}x wall-clock, {cpu:.2f}x CPU time")


if __name__ == "__main__":
    main()
