"""The chunked loss gives the plain loss and its gradients (LoRA and full fine-tuning), and
training with it, and with gradient checkpointing, follows the same loss curve."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_train import write_exp

from harness.config.load import load_experiment
from harness.models.load import load_model, load_tokenizer
from harness.sft.batching import make_dataloader
from harness.sft.loss import HIDDEN_STATE_INPUTS, ChunkedLoss, chunked_loss_for, token_mean_loss
from harness.sft.train import prepare_data, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory, toy_tiny):
    tokenizer = load_tokenizer("toy:tiny")
    exp = load_experiment(write_exp(tmp_path_factory.mktemp("loss"), data={"budget": 48}))
    data = prepare_data(exp, tokenizer)
    loader = make_dataloader(
        data.rows, mode="grouped", max_tokens=1024, seed=0, pad_token_id=tokenizer.pad_token_id
    )
    return exp, data, tokenizer, next(iter(loader))


def _model(kind: str):
    torch.manual_seed(0)
    model = load_model("toy:tiny", precision="fp32")  # exact comparisons, on a GPU too
    if kind == "lora":  # random B too, so that every adapter weight gets a gradient
        config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
        model = get_peft_model(model, config)
    return model.train()


def _loss_and_grads(model, batch, chunk: int | None):
    batch = {k: v.to(model.device) for k, v in batch.items()}
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    count = batch["labels"][:, 1:].ne(-100).sum() + 3  # as if the step had more micro-batches
    model.zero_grad()
    if chunk is None:
        loss = token_mean_loss(model(**inputs), batch["labels"], count)
    else:
        outputs = model(**inputs, **HIDDEN_STATE_INPUTS)
        loss = chunked_loss_for(model, chunk)(outputs, batch["labels"], count)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_chunked_loss_equals_plain_loss_and_gradients(setup, kind):
    *_, batch = setup
    model = _model(kind)
    plain, plain_grads = _loss_and_grads(model, batch, None)
    trained = int(batch["labels"][:, 1:].ne(-100).sum())
    for chunk in (7, trained, 4096):  # many chunks, exactly one, one bigger than needed
        loss, grads = _loss_and_grads(model, batch, chunk)
        torch.testing.assert_close(loss, plain, rtol=1e-5, atol=1e-5)
        assert grads.keys() == plain_grads.keys() and len(grads) > 2
        for name, grad in grads.items():
            assert grad.abs().sum() > 0 or plain_grads[name].abs().sum() == 0
            torch.testing.assert_close(grad, plain_grads[name], rtol=1e-5, atol=1e-5)


def test_chunked_loss_is_refused_where_it_would_differ():
    model = load_model("toy:tiny")
    assert isinstance(chunked_loss_for(model, 64), ChunkedLoss)
    assert chunked_loss_for(model, 0) is None
    model.config.final_logit_softcapping = 30.0  # Gemma-2 style: logits change after lm_head
    assert chunked_loss_for(model, 64) is None


@pytest.mark.parametrize("peft", [True, False], ids=["lora", "full"])
def test_training_curve_is_the_same_with_chunks_and_checkpointing(tmp_path, setup, peft):
    """The Trainer path: the model's loss over full logits, vs chunked loss + gradient
    checkpointing, over 4 optimizer steps with accumulation."""
    _, data, tokenizer, _ = setup
    curves = []
    for chunk, checkpointing in ((0, False), (16, True)):
        train_cfg = {
            "max_steps": 4,
            "grad_accum": 2,
            "batch_tokens": 512,
            "loss_chunk_tokens": chunk,
            "gradient_checkpointing": checkpointing,
        }
        path = write_exp(tmp_path, train=train_cfg, peft={"enabled": peft})
        exp = load_experiment(path)
        result = train(exp, load_model("toy:tiny"), tokenizer, data, verbose=False)
        assert result.status == "ok" and result.memory["fits"] is True
        curves.append([loss for _, loss in result.loss_curve])
    assert curves[1] == pytest.approx(curves[0], rel=1e-5, abs=1e-6)
    assert curves[0][-1] != curves[0][0]  # it trained


@pytest.mark.parametrize("peft", [True, False], ids=["lora", "full"])
def test_trains_under_bf16_mixed_precision(tmp_path, setup, peft):
    """The CUDA default, here on the CPU: a bf16 model under autocast, whose outputs accelerate
    hands back in fp32 while a LoRA model's lm_head stays bf16 (this once failed on a GPU)."""
    _, data, tokenizer, _ = setup
    path = write_exp(tmp_path, train={"max_steps": 3, "precision": "bf16"}, peft={"enabled": peft})
    model = load_model("toy:tiny", precision="bf16")
    result = train(load_experiment(path), model, tokenizer, data, verbose=False)
    losses = [loss for _, loss in result.loss_curve]
    assert result.status == "ok" and len(losses) == 3
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert next(result.model.parameters()).dtype == torch.bfloat16  # evaluated as loaded
