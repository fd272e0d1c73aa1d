"""The SFT loss: a mean over the trained tokens of a whole optimizer step, computed without
full-vocabulary logits for the whole micro-batch.

Public API
    token_mean_loss(outputs, labels, num_items_in_batch=None): from the model's logits
    ChunkedLoss(lm_head, chunk_tokens): from the final hidden states, in chunks
    chunked_loss_for(model, chunk_tokens) -> ChunkedLoss | None: where the model allows it

Why chunks: a micro-batch of 16,384 tokens over Qwen2.5's 151,936-token vocabulary is 10 GB of
fp32 logits per copy, and the plain loss keeps several copies (bf16 logits, their fp32 upcast,
the log-softmax saved for backward). `ChunkedLoss` asks the model for its final hidden states
(`output_hidden_states=True`, `logits_to_keep=1`, so the model's own logits are one position
per row), keeps only the positions whose next token is trained, and applies `lm_head` +
cross-entropy to N of them at a time under activation checkpointing: each chunk's logits exist
only while that chunk is computed, in forward and again in backward. Prompt tokens never get
logits at all. On CUDA with `liger_kernel` installed, Liger's fused linear cross-entropy does the
same without Python-level chunks.

Both losses are summed token cross-entropy / `num_items_in_batch` (Trainer's count of trained
tokens over all micro-batches of the step), so gradient accumulation gives the loss of one big
batch and a long reply weighs by its tokens.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
HIDDEN_STATE_INPUTS = {"output_hidden_states": True, "logits_to_keep": 1}


def token_mean_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None):
    """Summed next-token cross-entropy over trained tokens / trained tokens of the whole step."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    logits = logits[..., :-1, :].float().flatten(0, -2)
    targets = labels[..., 1:].to(logits.device).flatten()
    total = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else targets.ne(-100).sum()
    return total / count


class ChunkedLoss:
    """`token_mean_loss` from the final hidden states; a Trainer `compute_loss_func`. The model
    must be called with `HIDDEN_STATE_INPUTS` added to its inputs."""

    def __init__(self, lm_head: torch.nn.Module, chunk_tokens: int) -> None:
        self.lm_head, self.chunk_tokens = lm_head, chunk_tokens

    def __call__(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None):
        # In the head's dtype: under mixed precision accelerate hands the outputs back in fp32
        # while a LoRA model's frozen base (lm_head included) stays bf16.
        head_dtype = getattr(self.lm_head, "weight", outputs["hidden_states"][-1]).dtype
        hidden = outputs["hidden_states"][-1][:, :-1].to(head_dtype)
        targets = labels[..., 1:].to(hidden.device)
        trained = targets.ne(IGNORE_INDEX)
        hidden, targets = hidden[trained], targets[trained]  # (N, H), (N,)
        count = num_items_in_batch if num_items_in_batch is not None else targets.numel()
        if targets.numel() == 0:  # keeps the graph connected so backward still runs
            return outputs["hidden_states"][-1].sum() * 0.0
        fused = _liger_loss(self.lm_head, hidden)
        if fused is not None:
            return fused(self.lm_head.weight, hidden, targets, self.lm_head.bias) / count
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, targets.numel(), self.chunk_tokens):
            end = start + self.chunk_tokens
            total = total + checkpoint(
                self._chunk, hidden[start:end], targets[start:end], use_reentrant=False
            )
        return total / count

    def _chunk(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden).float()
        return F.cross_entropy(logits, targets, reduction="sum")


def chunked_loss_for(model: Any, chunk_tokens: int) -> ChunkedLoss | None:
    """A `ChunkedLoss` for `model` (a transformers causal LM, or peft around one), or None where
    the hidden-state route would not give the model's own loss: chunking off (0), no
    `logits_to_keep` in its forward, or logits transformed after `lm_head` (Gemma's soft cap,
    Cohere's logit scale)."""
    if chunk_tokens <= 0:
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    config = base.config
    transformed = getattr(config, "final_logit_softcapping", None) or getattr(
        config, "logit_scale", None
    )
    if (
        head is None
        or transformed
        or "logits_to_keep" not in inspect.signature(base.forward).parameters
    ):
        return None
    return ChunkedLoss(head, chunk_tokens)


def _liger_loss(lm_head: torch.nn.Module, hidden: torch.Tensor) -> Any:
    """Liger's fused linear cross-entropy (sum) for a plain linear head on CUDA, when installed."""
    if hidden.device.type != "cuda" or type(lm_head) is not torch.nn.Linear:
        return None
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import (
            LigerFusedLinearCrossEntropyLoss,
        )
    except ImportError:
        return None
    return LigerFusedLinearCrossEntropyLoss(reduction="sum")
