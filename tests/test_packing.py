"""Packed training is unpacked training, arranged differently: the same examples as one packed
row (exact per-example attention, `harness.sft.attention`) or as a padded batch give the same
loss and the same gradients, on the toy model and on the Qwen2 architecture (GQA, qkv bias)."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from harness.config.load import validate
from harness.models.load import load_model, load_tokenizer
from harness.sft.attention import (
    PACKED_ATTENTION,
    packed_attention,
    packed_attention_forward,
    packed_kernel,
)
from harness.sft.batching import IGNORE_INDEX, PaddedCollator, collate_packed
from harness.sft.loss import HIDDEN_STATE_INPUTS, chunked_loss_for
from harness.sft.train import PreparedData, batching_mode, train


def rows_of(lengths: list[int], vocab: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for n in lengths:
        ids = [rng.randrange(3, vocab) for _ in range(n)]
        labels = [IGNORE_INDEX] * (n // 3) + ids[n // 3 :]  # a prompt, then a trained reply
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def qwen2_model() -> Qwen2ForCausalLM:
    """The Qwen2 architecture (6 query heads per KV head, qkv bias, tied head) at a test size."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=500,
        hidden_size=192,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=1e6,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    return Qwen2ForCausalLM(config)


def loss_and_grads(model, batch: dict, trained_tokens: int) -> tuple[float, dict]:
    """The harness's training loss (chunked, over trained tokens) and every parameter's grad."""
    model.zero_grad()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    outputs = model(**inputs, **HIDDEN_STATE_INPUTS, use_cache=False)
    loss = chunked_loss_for(model, 16)(outputs, batch["labels"], trained_tokens)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same_training(model, rows: list[dict]) -> None:
    padded = PaddedCollator(pad_token_id=0)(rows)
    packed = collate_packed(rows)
    trained = int(padded["labels"][:, 1:].ne(IGNORE_INDEX).sum())
    # each example's first label is -100 when packed: nothing was trained there anyway
    assert int(packed["labels"][:, 1:].ne(IGNORE_INDEX).sum()) == trained
    loss_padded, grads_padded = loss_and_grads(model, padded, trained)
    with packed_attention(model):
        assert model.config._attn_implementation == PACKED_ATTENTION
        loss_packed, grads_packed = loss_and_grads(model, packed, trained)
    assert model.config._attn_implementation == "sdpa"  # restored
    assert loss_packed == pytest.approx(loss_padded, rel=1e-5)
    for name, grad in grads_padded.items():
        torch.testing.assert_close(grads_packed[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_packed_and_padded_training_agree_on_the_toy_model(toy_tiny):
    model = load_model("toy:tiny")
    assert_same_training(model, rows_of([37, 5, 90, 23, 61, 12], model.config.vocab_size))


def test_packed_and_padded_training_agree_on_the_qwen2_architecture():
    assert_same_training(qwen2_model(), rows_of([17, 64, 3, 40, 29], 500, seed=1))


def test_each_packed_example_reads_as_if_alone():
    model = qwen2_model().eval()
    rows = rows_of([20, 30], 500, seed=2)
    packed = collate_packed(rows)
    assert packed["cu_seq_lens_q"].tolist() == [0, 20, 50] and packed["max_length_q"] == 30
    with torch.no_grad(), packed_attention(model):
        logits = model(**{k: v for k, v in packed.items() if k != "labels"}).logits[0]
        for start, row in zip((0, 20), rows, strict=True):
            alone = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]
            end = start + len(row["input_ids"])
            torch.testing.assert_close(logits[start:end], alone, rtol=1e-4, atol=1e-5)


def test_packed_positions_without_boundaries_are_split_where_they_restart():
    """Someone else's packed rows (position_ids only) are still attended example by example."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 12, 8), torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8)
    module = torch.nn.Module()
    module.num_key_value_groups = 2
    positions = torch.tensor([list(range(5)) + list(range(7))])
    derived, _ = packed_attention_forward(module, q, k, v, None, position_ids=positions)
    given, _ = packed_attention_forward(
        module, q, k, v, None, cu_seq_lens_q=torch.tensor([0, 5, 12]), max_length_q=7
    )
    torch.testing.assert_close(derived, given)
    assert derived.shape == (1, 12, 4, 8)


def test_packed_batching_trains_on_cpu(tmp_path, toy_tiny):
    """`train.batching: packed` is no longer refused without flash-attention: it trains, with
    no padding, and gives the model back with its own attention implementation."""
    raw = {
        "name": "t",
        "model": "toy:tiny",
        "data": {"sources": [{"name": "a", "path": "a.jsonl"}]},
        "train": {"batching": "packed", "max_steps": 3, "batch_tokens": 512, "learning_rate": 3e-3},
        "peft": "none",
    }
    exp = validate(raw, "t.yaml", tmp_path)
    tokenizer = load_tokenizer("toy:tiny")
    model = load_model("toy:tiny")
    assert batching_mode("packed", model) == "packed"
    assert batching_mode("auto", model) == "grouped"  # CPU: no fused varlen kernel
    rows = rows_of([40, 77, 12, 150, 64, 33, 90, 21] * 3, model.config.vocab_size, seed=3)
    result = train(exp, model, tokenizer, PreparedData(rows, {}), verbose=False)
    assert result.status == "ok" and result.batching == "packed" and result.steps == 3
    assert result.padding_fraction == 0.0
    assert result.model.config._attn_implementation == "sdpa"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_varlen_kernel_matches_per_example_attention_on_cuda():
    torch.manual_seed(0)
    shape = (1, 12, 300, 64)
    q = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, 2, 300, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    module = torch.nn.Module()
    module.num_key_value_groups = 6
    cu = torch.tensor([0, 100, 250, 300], device="cuda")
    assert packed_kernel("cuda", torch.bfloat16) == "varlen"
    fused, _ = packed_attention_forward(module, q, k, v, None, cu_seq_lens_q=cu, max_length_q=150)
    exact, _ = packed_attention_forward(
        module, q.float(), k.float(), v.float(), None, cu_seq_lens_q=cu, max_length_q=150
    )
    torch.testing.assert_close(fused.float(), exact, rtol=2e-2, atol=2e-2)
