"""Will this training configuration fit the device? An estimate made before training starts.

Public API
    MemoryPlan: what the estimate depends on (sizes from the model's config, the experiment's settings)
    plan_for(model, exp, seq_len) -> MemoryPlan: from a loaded or meta-device model
    estimate(plan) -> MemoryEstimate: bytes per component
    available_memory() -> (bytes, where): free CUDA memory, or RAM available on CPU
    preflight(plan, available, where) -> Preflight: the verdict, one line, and what to change

The arithmetic (bytes; `b` = bytes per element of the model dtype, 2 for bf16, 4 for fp32):
- weights: full fine-tuning keeps fp32 master weights (`train._with_peft`): 4 x params; LoRA keeps
  the base in its dtype and the adapters in fp32: b x params + 4 x trainable.
- gradients 4 x trainable; AdamW state (two moments) 8 x trainable.
- activations saved for backward, per token and decoder layer, about b x (6h + 2kv + 4i)
  elements (h hidden size, kv the key/value width, i the MLP width: norm inputs, q/k/v,
  attention output, o_proj input, gate/up outputs, their product). With gradient checkpointing
  only each layer's input (b x h) is kept, plus one layer's worth while it is recomputed. Eager
  attention also keeps scores and probabilities, 2 x b x heads x seq_len per token and layer.
- logits: the model's loss keeps b + 4 + 4 bytes per vocabulary entry and token of the batch
  (logits, fp32 upcast, log-softmax); the chunked loss 8 per entry and token of one chunk.
It is an estimate (allocator fragmentation, CUDA context and kernel workspaces come on top;
`HEADROOM` allows for them), made to catch a configuration that cannot fit, not to tune one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.config.schema import Experiment

HEADROOM = 0.9  # share of the available memory an estimate may use and still "fit"
GIB = 2**30
_PARTS = ("weights", "gradients", "optimizer", "activations", "logits")


@dataclass(frozen=True)
class MemoryPlan:
    params: int
    trainable: int
    full_finetune: bool
    dtype_bytes: int
    layers: int
    hidden: int
    kv_width: int
    intermediate: int
    heads: int
    vocab: int
    batch_tokens: int
    seq_len: int
    gradient_checkpointing: bool
    loss_chunk_tokens: int
    eager_attention: bool


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits

    def breakdown(self) -> str:
        return ", ".join(f"{p} {getattr(self, p) / GIB:.2f}" for p in _PARTS)


@dataclass(frozen=True)
class Preflight:
    fits: bool
    estimate: MemoryEstimate
    available: int
    line: str
    advice: str | None = None

    def to_dict(self) -> dict:
        e = self.estimate
        return {
            "fits": self.fits,
            "estimate_gib": round(e.total / GIB, 3),
            "available_gib": round(self.available / GIB, 3),
            **{f"{k}_gib": round(getattr(e, k) / GIB, 3) for k in _PARTS},
            "advice": self.advice,
        }


def estimate(plan: MemoryPlan) -> MemoryEstimate:
    """Bytes per component for one training step at the plan's settings (see the module doc)."""
    p, b = plan, plan.dtype_bytes
    weights = 4 * p.params if p.full_finetune else b * p.params + 4 * p.trainable
    per_layer_token = b * (6 * p.hidden + 2 * p.kv_width + 4 * p.intermediate)
    if p.eager_attention:
        per_layer_token += 2 * b * p.heads * p.seq_len
    if p.gradient_checkpointing:
        activations = p.batch_tokens * (p.layers * b * p.hidden + per_layer_token)
    else:
        activations = p.batch_tokens * p.layers * per_layer_token
    if p.loss_chunk_tokens:
        logits = min(p.loss_chunk_tokens, p.batch_tokens) * p.vocab * 8
    else:
        logits = p.batch_tokens * p.vocab * (b + 8)
    return MemoryEstimate(
        weights=weights,
        gradients=4 * p.trainable,
        optimizer=8 * p.trainable,
        activations=activations,
        logits=logits,
    )


def preflight(plan: MemoryPlan, available: int, where: str) -> Preflight:
    """The verdict in one line; when it does not fit, the first changes (in the order that costs
    least quality or speed) that make it fit: chunked loss, gradient checkpointing, a smaller
    `train.batch_tokens`, LoRA instead of full fine-tuning."""
    est = estimate(plan)
    budget = available * HEADROOM
    head = f"memory: ~{est.total / GIB:.2f} GiB needed of {available / GIB:.2f} GiB {where}"
    if est.total <= budget:
        return Preflight(True, est, available, f"{head}: fits ({est.breakdown()} GiB)")
    changes: list[str] = []
    trial = plan
    for remedy in (_chunk_loss, _checkpoint, _smaller_batch, _lora):
        candidate = remedy(trial, budget)
        if candidate is None:
            continue
        trial, change = candidate
        changes.append(change)
        if estimate(trial).total <= budget:
            break
    advice = "set " + ", ".join(changes) if changes else ""
    if estimate(trial).total > budget:
        advice += ("; still too big: " if advice else "") + "use a smaller model or a bigger device"
    line = f"{head}: does NOT fit ({est.breakdown()} GiB); {advice}"
    return Preflight(False, est, available, line, advice)


Remedy = tuple[MemoryPlan, str] | None


def _chunk_loss(plan: MemoryPlan, budget: float) -> Remedy:
    if plan.loss_chunk_tokens:
        return None
    return replace(plan, loss_chunk_tokens=1024), "train.loss_chunk_tokens: 1024"


def _checkpoint(plan: MemoryPlan, budget: float) -> Remedy:
    if plan.gradient_checkpointing:
        return None
    return replace(plan, gradient_checkpointing=True), "train.gradient_checkpointing: true"


def _smaller_batch(plan: MemoryPlan, budget: float) -> Remedy:
    """The largest power-of-two batch_tokens that fits, but never below the longest row."""
    floor = max(plan.seq_len, 1)
    tokens = 1 << (plan.batch_tokens.bit_length() - 1)
    if tokens == plan.batch_tokens:
        tokens //= 2
    best = None
    while tokens >= floor:
        best = replace(plan, batch_tokens=tokens)
        if estimate(best).total <= budget:
            break
        tokens //= 2
    if best is None:
        return None
    return (
        best,
        f"train.batch_tokens: {best.batch_tokens} (raise train.grad_accum to keep the step)",
    )


def _lora(plan: MemoryPlan, budget: float) -> Remedy:
    if not plan.full_finetune:
        return None
    # LoRA r=16 on every linear layer of a decoder block: r x (in + out) per projection
    h, kv, i = plan.hidden, plan.kv_width, plan.intermediate
    per_layer = 16 * (4 * h + 2 * (h + kv) + 3 * (h + i))
    lora = replace(plan, full_finetune=False, trainable=plan.layers * per_layer)
    return lora, "peft: {r: 16} (LoRA instead of full fine-tuning)"


def plan_for(model: Any, exp: Experiment, seq_len: int, dtype_bytes: int) -> MemoryPlan:
    """The plan for `model` (loaded, or on the meta device) trained as `exp` says, on rows of up
    to `seq_len` tokens. LoRA's trainable count is read from the linear layers it would wrap."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    text = getattr(config, "get_text_config", lambda: config)()
    hidden = text.hidden_size
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    params = sum(p.numel() for p in base.parameters())
    if exp.peft.enabled:
        trainable = _lora_params(base, exp.peft.r, exp.peft.target_modules, torch.nn.Linear)
    else:
        trainable = params
    attn = getattr(config, "_attn_implementation", None) or "sdpa"
    return MemoryPlan(
        params=params,
        trainable=trainable,
        full_finetune=not exp.peft.enabled,
        dtype_bytes=dtype_bytes,
        layers=text.num_hidden_layers,
        hidden=hidden,
        kv_width=kv_heads * head_dim,
        intermediate=getattr(text, "intermediate_size", None) or 4 * hidden,
        heads=heads,
        vocab=text.vocab_size,
        batch_tokens=exp.train.batch_tokens,
        seq_len=seq_len,
        gradient_checkpointing=exp.train.gradient_checkpointing,
        loss_chunk_tokens=exp.train.loss_chunk_tokens,
        eager_attention=attn == "eager",
    )


def _lora_params(model: Any, r: int, targets: list[str] | str, linear: type) -> int:
    """r x (in + out) for every linear layer LoRA wraps (`all-linear`: all but the output head)."""
    head = model.get_output_embeddings()
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, linear) or module is head:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if targets == "all-linear" or leaf in targets or name in targets:
            total += r * (module.in_features + module.out_features)
    return total


def available_memory() -> tuple[int, str]:
    """Free memory of the training device: CUDA's free bytes, or on CPU the RAM the kernel says
    is available (`MemAvailable`)."""
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free, f"free on cuda:{torch.cuda.current_device()}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "of RAM available"
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "of RAM available"
