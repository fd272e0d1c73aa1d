"""Length-grouped batches, best-fit packing, and no attention leakage across packed examples."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.sft.batching import (
    IGNORE_INDEX,
    PaddedCollator,
    TokenBudgetBatchSampler,
    choose_batching,
    collate_packed,
    make_dataloader,
    plan_grouped,
    plan_packed,
    plan_stats,
)
from harness.util.errors import HarnessError

VOCAB = 64


@pytest.fixture(scope="module")
def lengths() -> list[int]:
    rng = random.Random(0)
    return [rng.randint(8, 512) for _ in range(1000)]


def rows_of(lengths: list[int], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for n in lengths:
        ids = [rng.randrange(1, VOCAB) for _ in range(n)]
        labels = [IGNORE_INDEX] * (n // 2) + ids[n // 2 :]  # a prompt, then a trained reply
        rows.append({"input_ids": ids, "labels": labels})
    return rows


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def tiny_llama(request) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation=request.param,
    )
    model = LlamaForCausalLM(config).eval()
    assert model.config._attn_implementation == request.param
    return model


def test_choose_batching_packs_where_a_fused_varlen_kernel_runs():
    assert choose_batching("cpu", "sdpa") == "grouped"
    assert choose_batching("cpu", "flash_attention_2") == "grouped"
    assert choose_batching(torch.device("cuda", 1), "flash_attention_2") == "packed"
    assert choose_batching("cuda", "kernels-community/flash-attn3") == "packed"
    # torch >= 2.9 has its own varlen flash kernel (harness.sft.attention), so SDPA models pack
    assert choose_batching("cuda", "sdpa") == "packed"
    assert choose_batching("cuda:0", "eager") == "packed"


@torch.no_grad()
def test_packed_examples_see_nothing_of_their_neighbours(tiny_llama):
    rows = rows_of([7, 12, 5, 9], seed=1)
    packed = collate_packed(rows)
    assert packed["position_ids"].tolist() == [
        list(range(7)) + list(range(12)) + list(range(5)) + list(range(9))
    ]
    logits = tiny_llama(
        input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
    ).logits[0]
    start = 0
    for row in rows:
        alone = tiny_llama(input_ids=torch.tensor([row["input_ids"]]), use_cache=False).logits[0]
        n = len(row["input_ids"])
        torch.testing.assert_close(logits[start : start + n], alone, atol=1e-5, rtol=1e-5)
        start += n

    # The control: the same row without restarting positions does leak, so the check above bites.
    leaky = tiny_llama(input_ids=packed["input_ids"], use_cache=False).logits[0]
    alone = tiny_llama(input_ids=torch.tensor([rows[1]["input_ids"]]), use_cache=False).logits[0]
    assert not torch.allclose(leaky[7:19], alone, atol=1e-3)


@torch.no_grad()
def test_packed_loss_equals_the_sum_of_separate_losses(tiny_llama):
    rows = rows_of([7, 12, 5, 9], seed=2)
    packed = collate_packed(rows)
    starts = [0, 7, 19, 24]
    assert all(packed["labels"][0, s].item() == IGNORE_INDEX for s in starts)
    out = tiny_llama(**packed, use_cache=False)
    packed_sum = out.loss * (packed["labels"][0, 1:] != IGNORE_INDEX).sum()
    separate_sum = 0.0
    for row in rows:
        labels = torch.tensor([row["labels"]])
        loss = tiny_llama(input_ids=torch.tensor([row["input_ids"]]), labels=labels).loss
        separate_sum += loss * (labels[0, 1:] != IGNORE_INDEX).sum()
    torch.testing.assert_close(packed_sum, separate_sum, atol=1e-4, rtol=1e-5)


@torch.no_grad()
def test_padded_rows_match_rows_alone(tiny_llama):
    rows = rows_of([6, 11], seed=3)
    batch = PaddedCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].shape == (2, 11)
    assert batch["labels"][0, 6:].eq(IGNORE_INDEX).all() and batch["attention_mask"][0].sum() == 6
    logits = tiny_llama(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits
    alone = tiny_llama(input_ids=torch.tensor([rows[0]["input_ids"]]), use_cache=False).logits
    torch.testing.assert_close(logits[0, :6], alone[0], atol=1e-5, rtol=1e-5)


def random_batches(lengths: list[int], max_tokens: int, seed: int) -> list[list[int]]:
    """The baseline: shuffled order, cut greedily under the same token budget."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    batches, current = [], []
    for i in order:
        width = max([lengths[j] for j in current] + [lengths[i]])
        if current and width * (len(current) + 1) > 2048:
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current]


def test_grouped_batches_waste_far_less_than_random(lengths):
    grouped = plan_stats(plan_grouped(lengths, 2048, seed=0), lengths)
    baseline = plan_stats(random_batches(lengths, 2048, seed=0), lengths)
    assert grouped["padding_fraction"] < 0.05
    assert grouped["padding_fraction"] * 5 < baseline["padding_fraction"]
    assert grouped["batches"] < baseline["batches"]


def test_grouped_batches_cover_every_example_once_within_budget(lengths):
    batches = plan_grouped(lengths, 2048, seed=0, max_rows=8)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in b) * len(b) <= 2048 and len(b) <= 8 for b in batches)


def test_grouped_batches_are_deterministic_per_seed(lengths):
    assert plan_grouped(lengths, 2048, seed=5) == plan_grouped(lengths, 2048, seed=5)
    assert plan_grouped(lengths, 2048, seed=5) != plan_grouped(lengths, 2048, seed=6)


def test_packing_best_fit_fills_bins(lengths):
    bins = plan_packed(lengths, 2048)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 2048 for b in bins)
    lower_bound = -(-sum(lengths) // 2048)
    assert len(bins) <= lower_bound + 2
    assert plan_stats(bins, lengths, packed=True)["padding_fraction"] == 0.0


def test_an_example_longer_than_the_budget_is_an_error():
    with pytest.raises(HarnessError, match="smaller than the longest example"):
        plan_grouped([10, 300], 256, seed=0)
    with pytest.raises(HarnessError, match="smaller than the longest example"):
        plan_packed([10, 300], 256)


@pytest.mark.parametrize("mode", ["grouped", "packed"])
def test_sampler_reshuffles_each_epoch_reproducibly(lengths, mode):
    sampler = TokenBudgetBatchSampler(lengths, 2048, mode=mode, seed=3)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(second) == len(sampler)
    assert first != second
    for epoch in (first, second):
        assert sorted(i for b in epoch for i in b) == list(range(len(lengths)))
    if mode == "packed":  # the bins are fixed, only their order changes
        assert sorted(map(sorted, first)) == sorted(map(sorted, second))
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_dataloader_yields_model_ready_batches():
    rows = rows_of([5, 9, 12, 30, 31, 7], seed=4)
    padded = list(make_dataloader(rows, mode="grouped", max_tokens=64, seed=0, pad_token_id=0))
    assert sum(b["input_ids"].shape[0] for b in padded) == len(rows)
    assert all(b["input_ids"].numel() <= 64 for b in padded)
    assert all(set(b) == {"input_ids", "attention_mask", "labels"} for b in padded)
    packed = list(make_dataloader(rows, mode="packed", max_tokens=64, seed=0))
    assert all(b["input_ids"].shape[0] == 1 and "attention_mask" not in b for b in packed)
    assert sum(b["input_ids"].shape[1] for b in packed) == sum(len(r["input_ids"]) for r in rows)
    assert all(b["position_ids"].shape == b["input_ids"].shape for b in packed)
