"""The memory preflight: its arithmetic against a hand computation, its advice when a
configuration does not fit, and the plan read from a real (meta-device) model."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.config.load import validate
from harness.models.load import meta_model
from harness.sft.memory import GIB, MemoryPlan, estimate, plan_for, preflight

SMALL = MemoryPlan(
    params=1000,
    trainable=100,
    full_finetune=False,
    dtype_bytes=2,
    layers=2,
    hidden=8,
    kv_width=4,
    intermediate=16,
    heads=2,
    vocab=50,
    batch_tokens=64,
    seq_len=32,
    gradient_checkpointing=False,
    loss_chunk_tokens=0,
    eager_attention=False,
)


def test_estimate_matches_a_hand_computation():
    e = estimate(SMALL)
    # LoRA: bf16 base + fp32 adapters; fp32 grads; two fp32 AdamW moments
    assert (e.weights, e.gradients, e.optimizer) == (2 * 1000 + 4 * 100, 400, 800)
    per_layer_token = 2 * (6 * 8 + 2 * 4 + 4 * 16)  # 240 bytes
    assert e.activations == 64 * 2 * per_layer_token
    assert e.logits == 64 * 50 * (2 + 4 + 4)
    assert e.total == 2400 + 400 + 800 + 30720 + 32000

    full = estimate(replace(SMALL, full_finetune=True, trainable=1000))
    assert (full.weights, full.gradients, full.optimizer) == (4000, 4000, 8000)
    checkpointed = estimate(replace(SMALL, gradient_checkpointing=True))
    assert checkpointed.activations == 64 * (2 * 2 * 8 + per_layer_token)
    assert estimate(replace(SMALL, loss_chunk_tokens=16)).logits == 16 * 50 * 8
    eager = estimate(replace(SMALL, eager_attention=True))
    assert eager.activations == 64 * 2 * (per_layer_token + 2 * 2 * 2 * 32)


QWEN_FULL = replace(  # Qwen2.5-0.5B's sizes, full fine-tuning, the shipped example's batch
    SMALL,
    params=494_032_768,
    trainable=494_032_768,
    full_finetune=True,
    layers=24,
    hidden=896,
    kv_width=128,
    intermediate=4864,
    heads=14,
    vocab=151_936,
    batch_tokens=16_384,
    seq_len=2048,
)


def test_preflight_fits_or_says_what_to_change():
    need = estimate(QWEN_FULL).total
    ok = preflight(QWEN_FULL, int(need * 2), "free on cuda:0")
    assert ok.fits and ok.advice is None and "fits" in ok.line

    tight = preflight(QWEN_FULL, int(need * 0.7), "free on cuda:0")
    assert not tight.fits and "\n" not in tight.line
    assert "does NOT fit" in tight.line and "free on cuda:0" in tight.line
    assert tight.advice == "set train.loss_chunk_tokens: 1024"
    assert estimate(replace(QWEN_FULL, loss_chunk_tokens=1024)).total <= need * 0.7 * 0.9

    small = preflight(QWEN_FULL, 8 * GIB, "free on cuda:0")
    for change in ("gradient_checkpointing: true", "train.batch_tokens:", "peft: {r: 16}"):
        assert change in small.advice

    hopeless = preflight(QWEN_FULL, GIB // 4, "of RAM available")
    assert "use a smaller model or a bigger device" in hopeless.advice


@pytest.mark.parametrize("peft", [{"r": 8}, "none"])
def test_plan_for_reads_the_model_without_weights(toy_tiny, peft):
    model = meta_model("toy:tiny")
    assert next(model.parameters()).device.type == "meta"
    raw = {
        "name": "m",
        "model": "toy:tiny",
        "data": {"sources": [{"name": "a", "path": "a.jsonl"}]},
        "train": {"batch_tokens": 512},
        "peft": peft,
    }
    exp = validate(raw, "m.yaml", toy_tiny.model_dir)
    plan = plan_for(model, exp, seq_len=128, dtype_bytes=4)
    c = model.config
    assert (plan.layers, plan.hidden, plan.vocab) == (
        c.num_hidden_layers,
        c.hidden_size,
        c.vocab_size,
    )
    assert plan.params == sum(p.numel() for p in model.parameters())
    if peft == "none":
        assert plan.trainable == plan.params and plan.full_finetune
    else:  # q, k, v, o (64 -> 64) and gate, up (64 -> 192), down (192 -> 64) per layer
        per_layer = 8 * (4 * (64 + 64) + 3 * (64 + 192))
        assert plan.trainable == c.num_hidden_layers * per_layer
