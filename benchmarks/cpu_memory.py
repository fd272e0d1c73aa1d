"""CPU memory of LoRA training steps: bytes saved for backward vs the preflight's activation term,
and the process's resident peak per step (Linux only: reads and resets `VmHWM`).

    python benchmarks/cpu_memory.py [--model smollm2-135m-instruct] [--rows 4] [--seq 512]
    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/cpu_memory.py    # glibc returns big blocks

Each step is one forward (a `saved_tensors_hooks` pack hook adds up the distinct storages
autograd keeps, weights left out) and one backward through a loss chunked like the harness's.
Measured on SmolLM2 at 4 x 512 tokens (README, "Memory on CPU"): saved 2.31 GiB (estimate
2.29); peak 6.31 then 7.14 GiB with glibc's defaults (5.35, 6.08 GiB resident between steps),
4.20 and 4.22 GiB with the variable (0.96, 0.97 GiB resident between steps).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
GIB = 2**30


def _status_gib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / GIB
    raise RuntimeError(f"no {field} in /proc/self/status")


class _SavedBytes:
    """A pack hook adding up the distinct storages autograd keeps, weights left out."""

    def __init__(self, weights: set[int]) -> None:
        self.weights, self.seen, self.total = weights, set(), 0

    def pack(self, t):
        key = t.untyped_storage().data_ptr()
        if key not in self.weights and key not in self.seen:
            self.seen.add(key)
            self.total += t.untyped_storage().nbytes()
        return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    from harness.models.load import load_model
    from harness.sft.memory import MemoryPlan, estimate

    torch.set_num_threads(1)
    model = load_model(args.model, precision="fp32")
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    inner = model.get_base_model()
    config = inner.config
    tokens = args.rows * args.seq
    plan = MemoryPlan(
        params=0,
        trainable=0,
        full_finetune=False,
        dtype_bytes=4,
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        kv_width=config.num_key_value_heads * (config.hidden_size // config.num_attention_heads),
        intermediate=config.intermediate_size,
        heads=config.num_attention_heads,
        vocab=config.vocab_size,
        batch_tokens=tokens,
        seq_len=args.seq,
        gradient_checkpointing=False,
        loss_chunk_tokens=1024,
        eager_attention=False,
    )
    estimate_gib = estimate(plan).activations / GIB  # the preflight's activation term
    ids = torch.randint(0, config.vocab_size, (args.rows, args.seq), generator=torch.Generator())
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    Path("/proc/self/clear_refs").write_text("5")
    for step in range(args.steps):
        saved = _SavedBytes(weights)
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            hidden = inner.model(input_ids=ids).last_hidden_state.reshape(tokens, -1)
        after_forward = _status_gib("VmHWM")
        loss = hidden.new_zeros(())
        for i in range(0, tokens, 1024):
            logits = inner.lm_head(hidden[i : i + 1024]).float()
            target = ids.reshape(-1)[i : i + 1024]
            loss = loss + torch.nn.functional.cross_entropy(logits, target, reduction="sum")
        loss.backward()
        del hidden, logits, loss
        print(
            f"step {step}: saved for backward {saved.total / GIB:.2f} GiB (estimate {estimate_gib:.2f}); "
            f"peak after forward {after_forward:.2f}, after backward {_status_gib('VmHWM'):.2f} "
            f"GiB; resident after the step {_status_gib('VmRSS'):.2f} GiB",
            flush=True,
        )


if __name__ == "__main__":
    main()
