"""Exact per-example attention for packed rows, in plain torch (no flash-attn package needed).

Public API
    PACKED_ATTENTION: the attn_implementation name this module registers with transformers
    packed_attention(model): context manager that runs a model with it, then restores the old one
    packed_attention_forward(...): the attention function (transformers' AttentionInterface shape)
    packed_kernel(device, dtype) -> "varlen" | "sdpa-per-example": which path a packed row takes
    needs_packed_attention(attn_implementation) -> bool: False where the kernel already packs

A packed row is one [1, T] row holding several examples; `cu_seq_lens_q` (added by
`batching.collate_packed`, the name transformers' flash-attention path uses too) gives where each
starts. On CUDA in bf16/fp16 the whole row goes to torch's own variable-length flash kernel
(`torch.nn.attention.varlen.varlen_attn`, torch >= 2.9), so attention costs the sum of the
examples' squared lengths, never the row's. Elsewhere (CPU, fp32, older torch) each example
goes through causal SDPA on its own slice of the row: the same arithmetic, one call per example.
Without `cu_seq_lens_q` (generation, evaluation, padded batches) the function is plain SDPA with
transformers' usual mask, and packed position_ids with no `cu_seq_lens_q` are split where the
positions restart, so a packed row is never attended across by mistake.

The mask function registered with it builds SDPA's mask where there is padding and none
otherwise: a packed row's boundaries travel in `cu_seq_lens_q`, not in a [T, T] mask.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

PACKED_ATTENTION = "harness_packed"

try:
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn

    _VARLEN_PARAMS = set(inspect.signature(_varlen_attn).parameters)
except ImportError:  # torch < 2.9
    _varlen_attn, _VARLEN_PARAMS = None, set()


def packed_kernel(device: torch.device | str, dtype: torch.dtype) -> str:
    """ "varlen" where torch's variable-length flash kernel runs (CUDA, bf16/fp16, torch >= 2.9),
    else "sdpa-per-example"."""
    cuda = str(device).startswith("cuda")
    half = dtype in (torch.bfloat16, torch.float16)
    return "varlen" if cuda and half and _varlen_attn is not None else "sdpa-per-example"


def needs_packed_attention(attn_implementation: str | None) -> bool:
    """False for flash-attention kernels: transformers already feeds them `cu_seq_lens_q`."""
    return not (attn_implementation and "flash" in attn_implementation.lower())


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """query [B, Hq, T, D] and key/value [B, Hkv, T, D] in, [B, T, Hq, D] out."""
    if cu_seq_lens_q is None and attention_mask is None and query.shape[2] > 1:
        cu_seq_lens_q = _restarts(kwargs.get("position_ids"), query.shape[0])
    if cu_seq_lens_q is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if kwargs.get("softcap") is not None or getattr(module, "sliding_window", None):
        raise ValueError("packed attention supports neither logit soft-capping nor sliding windows")
    rows, length = query.shape[0], query.shape[2]
    if rows > 1:  # rows laid end to end: cu_seq_lens_q then spans them all
        query, key, value = (
            t.transpose(0, 1).flatten(1, 2).unsqueeze(0) for t in (query, key, value)
        )
    groups = query.shape[1] // key.shape[1]
    if packed_kernel(query.device, query.dtype) == "varlen" and not dropout:
        out = _varlen(query, key, value, cu_seq_lens_q, max_length_q, scaling, groups)
    else:
        if groups > 1:
            key, value = repeat_kv(key, groups), repeat_kv(value, groups)
        bounds = cu_seq_lens_q.tolist()
        parts = [
            F.scaled_dot_product_attention(
                query[:, :, s:e],
                key[:, :, s:e],
                value[:, :, s:e],
                dropout_p=dropout,
                is_causal=True,
                scale=scaling,
            )
            for s, e in zip(bounds[:-1], bounds[1:], strict=True)
            if e > s
        ]
        out = torch.cat(parts, dim=2).transpose(1, 2)  # [1, T, H, D]
    return out.reshape(rows, length, *out.shape[2:]).contiguous(), None


def _varlen(query, key, value, cu_seq_lens, longest, scaling, groups) -> torch.Tensor:
    """torch's varlen flash kernel on [T, H, D] views of one packed row; [1, T, H, D] out."""
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    cu = cu_seq_lens.to(device=q.device, dtype=torch.int32)
    extra: dict[str, Any] = {}
    if "scale" in _VARLEN_PARAMS:
        extra["scale"] = scaling
    elif scaling is not None:  # older signatures scale by 1/sqrt(head_dim) only
        q = q * (scaling * q.shape[-1] ** 0.5)
    if "enable_gqa" in _VARLEN_PARAMS:
        extra["enable_gqa"] = groups > 1
    elif groups > 1:
        k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))
    if "is_causal" in _VARLEN_PARAMS:  # torch 2.9-2.10
        extra["is_causal"] = True
    else:
        extra["window_size"] = (-1, 0)
    longest = int(longest) if longest is not None else int(cu.diff().max())
    return _varlen_attn(q, k, v, cu, cu, longest, longest, **extra).unsqueeze(0)


def _restarts(position_ids: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    """cu_seq_lens of rows whose positions restart at 0 where an example starts (rows laid end
    to end), or None for one plain sequence per row."""
    if position_ids is None:
        return None
    positions = position_ids.expand(rows, -1)
    length = positions.shape[1]
    row_starts = torch.arange(rows, device=positions.device) * length
    starts = torch.cat([torch.nonzero(positions.flatten() == 0).flatten(), row_starts]).unique()
    if len(starts) <= rows:
        return None
    end = torch.tensor([rows * length], device=starts.device)
    return torch.cat([starts, end]).to(torch.int32)


def _packed_mask(*args: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any):
    """SDPA's mask where a padding mask is given; none otherwise (a packed row's boundaries are
    in `cu_seq_lens_q`; an unpadded row is causal attention without a mask)."""
    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
AttentionMaskInterface.register(PACKED_ATTENTION, _packed_mask)


@contextlib.contextmanager
def packed_attention(model: Any) -> Iterator[None]:
    """Run `model` (transformers, or peft around one) with packed attention inside the block;
    a flash-attention model keeps its kernel, which reads `cu_seq_lens_q` itself."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = base.config._attn_implementation
    if not needs_packed_attention(before):
        yield
        return
    base.set_attn_implementation(PACKED_ATTENTION)
    try:
        yield
    finally:
        base.set_attn_implementation(before)
