"""Batches that waste little compute and never let one example attend to another.

Public API
    choose_batching(device, attn_implementation) -> "grouped" | "packed"
    has_varlen_kernel(device, attn_implementation) -> bool: does a fused varlen kernel run here
    plan_grouped(lengths, max_tokens, *, seed, max_rows=None) -> list of batches (lists of indices)
    plan_packed(lengths, max_tokens) -> list of bins (each becomes one flattened row)
    plan_stats(batches, lengths, *, packed=False) -> {"batches", "tokens", "padded_tokens", ...}
    TokenBudgetBatchSampler(lengths, max_tokens, *, mode, seed, max_rows=None): torch batch sampler
    EncodedDataset(rows): torch Dataset over encoded rows ({"input_ids", "labels", ...})
    PaddedCollator(pad_token_id) / collate_packed(features): collate functions for the two modes
    make_dataloader(rows, *, mode, max_tokens, seed, pad_token_id, max_rows=None) -> DataLoader

Two modes (`train.batching`; `auto` asks `choose_batching`):
- "grouped": examples of similar length share a batch, padded only to the batch's longest, with
  as many rows as fit `max_tokens` (padded length x rows). Batches are shuffled with a seed, so
  the order is random but reproducible; every example is in exactly one batch per epoch.
  Padding is typically a few percent. `auto` picks it on CPU.
- "packed": best-fit-decreasing bins of <= `max_tokens` tokens, each bin flattened into ONE row
  with `position_ids` restarting at 0 per example, `labels = -100` at each example's first
  token, and the examples' boundaries as `cu_seq_lens_q`/`_k` (with `max_length_q`/`_k`), so
  nothing is predicted across a boundary and attention stays within each example
  (`harness.sft.attention`: torch's varlen flash kernel on CUDA, per-example SDPA elsewhere;
  flash-attention kernels read the same keys). No padding at all, and the linear layers see one
  long row. `auto` picks it where a fused varlen kernel runs (`has_varlen_kernel`: CUDA).

Training needs `use_cache=False` for the packed mode: transformers only detects packed rows from
position_ids when no KV cache is passed.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from harness.util.errors import HarnessError

IGNORE_INDEX = -100
Mode = Literal["grouped", "packed"]


def has_varlen_kernel(device: str | torch.device, attn_implementation: str | None) -> bool:
    """True where a packed row runs on a fused variable-length kernel: CUDA with a
    flash-attention implementation, or with torch's own varlen kernel (torch >= 2.9)."""
    from harness.sft.attention import packed_kernel

    if not str(device).startswith("cuda"):
        return False
    flash = attn_implementation is not None and "flash" in attn_implementation.lower()
    return flash or packed_kernel(device, torch.bfloat16) == "varlen"


def choose_batching(device: str | torch.device, attn_implementation: str | None) -> Mode:
    """ "packed" where a fused varlen kernel runs, "grouped" elsewhere (on CPU per-example SDPA
    is exact too, and measured 3-16% faster than grouping on small samples: not yet the default)."""
    return "packed" if has_varlen_kernel(device, attn_implementation) else "grouped"


def plan_grouped(
    lengths: Sequence[int], max_tokens: int, *, seed: int, max_rows: int | None = None
) -> list[list[int]]:
    """Length-grouped batches under a token budget, in a seeded random order.

    Sorting by length (ties broken by the seed) and cutting greedily keeps padding minimal;
    shuffling whole batches keeps the training order random.
    """
    _check_budget(lengths, max_tokens)
    rng = random.Random(seed)
    ties = [rng.random() for _ in lengths]
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], ties[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        rows = len(current) + 1
        if current and (lengths[i] * rows > max_tokens or (max_rows and rows > max_rows)):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def plan_packed(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Best-fit-decreasing: each example goes into the fullest bin it still fits, which leaves
    few, nearly full bins. Examples are never split across bins."""
    _check_budget(lengths, max_tokens)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free space, bin id), sorted
    for i in order:
        k = bisect.bisect_left(free, (lengths[i], -1))
        if k == len(free):
            bins.append([i])
            space, b = max_tokens - lengths[i], len(bins) - 1
        else:
            space, b = free.pop(k)
            bins[b].append(i)
            space -= lengths[i]
        if space > 0:
            bisect.insort(free, (space, b))
    return bins


def plan_stats(
    batches: list[list[int]], lengths: Sequence[int], *, packed: bool = False
) -> dict[str, float]:
    """Tokens, padded tokens and the padding fraction of a plan (0 for packed rows, by design)."""
    tokens = sum(lengths[i] for b in batches for i in b)
    padded = tokens if packed else sum(max(lengths[i] for i in b) * len(b) for b in batches if b)
    return {
        "batches": len(batches),
        "examples": sum(len(b) for b in batches),
        "tokens": tokens,
        "padded_tokens": padded,
        "padding_fraction": (padded - tokens) / padded if padded else 0.0,
    }


def _check_budget(lengths: Sequence[int], max_tokens: int) -> None:
    if max_tokens <= 0:
        raise HarnessError(f"batching: max_tokens must be positive, got {max_tokens}")
    longest = max(lengths, default=0)
    if longest > max_tokens:
        raise HarnessError(
            f"batching: max_tokens {max_tokens} is smaller than the longest example ({longest} "
            "tokens); raise max_tokens or lower max_length"
        )


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Yields the batches of one epoch; a new epoch reshuffles (seed + epoch), reproducibly.

    Use as `DataLoader(dataset, batch_sampler=sampler, collate_fn=...)`. `set_epoch` pins the
    epoch (accelerate and our trainer call it); otherwise each pass moves to the next epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        *,
        mode: Mode = "grouped",
        seed: int = 0,
        max_rows: int | None = None,
    ) -> None:
        if mode not in ("grouped", "packed"):
            raise HarnessError(f"batching: mode must be 'grouped' or 'packed', got {mode!r}")
        self.lengths = list(lengths)
        self.max_tokens, self.mode, self.seed, self.max_rows = max_tokens, mode, seed, max_rows
        self.epoch = 0
        self._bins = plan_packed(self.lengths, max_tokens) if mode == "packed" else None
        self._count = len(self._plan(0))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self, epoch: int) -> list[list[int]]:
        if self._bins is None:
            return plan_grouped(
                self.lengths, self.max_tokens, seed=self.seed + epoch, max_rows=self.max_rows
            )
        bins = [list(b) for b in self._bins]
        random.Random(self.seed + epoch).shuffle(bins)
        return bins

    def __iter__(self):
        batches = self._plan(self.epoch)
        self.epoch += 1
        yield from batches

    def __len__(self) -> int:
        return self._count


class EncodedDataset(Dataset):
    """Encoded rows (from `masking.encode_examples`) as a torch Dataset of plain dicts."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]

    @property
    def lengths(self) -> list[int]:
        return [len(r["input_ids"]) for r in self.rows]


class PaddedCollator:
    """Right-pads a batch to its longest row: pad ids, attention_mask 0, labels -100."""

    def __init__(self, pad_token_id: int) -> None:
        if pad_token_id is None:
            raise HarnessError("batching: the tokenizer has no pad token; set tokenizer.pad_token")
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for r, f in enumerate(features):
            n = len(f["input_ids"])
            ids[r, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            labels[r, :n] = torch.tensor(f["labels"], dtype=torch.long)
            mask[r, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_packed(features: list[dict]) -> dict[str, Any]:
    """Flatten a bin into one row of shape [1, total]: position_ids restart per example, the
    first label of each example is -100 (no token is predicted from the previous example), and
    `cu_seq_lens_q`/`_k` with `max_length_q`/`_k` mark the examples for the attention kernel.
    No attention_mask: nothing is padded."""
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    bounds = [0]
    for f in features:
        n = len(f["input_ids"])
        ids.extend(f["input_ids"])
        labels.append(IGNORE_INDEX)
        labels.extend(f["labels"][1:n])
        positions.extend(range(n))
        bounds.append(bounds[-1] + n)
    cu = torch.tensor(bounds, dtype=torch.int32)
    longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def make_dataloader(
    rows: list[dict],
    *,
    mode: Mode,
    max_tokens: int,
    seed: int,
    pad_token_id: int | None = None,
    max_rows: int | None = None,
) -> DataLoader:
    """A DataLoader for a training loop or a Trainer whose `get_train_dataloader` returns it."""
    dataset = EncodedDataset(rows)
    sampler = TokenBudgetBatchSampler(
        dataset.lengths, max_tokens, mode=mode, seed=seed, max_rows=max_rows
    )
    collate: Any = collate_packed if mode == "packed" else PaddedCollator(pad_token_id)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
