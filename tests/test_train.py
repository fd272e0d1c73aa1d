"""Masked SFT on the tiny toy model: data lineage, learning, reproducibility, token-mean loss,
divergence, pruning, saving and the `harness train` verb."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from harness.cli import main
from harness.config.load import load_experiment, with_params
from harness.models.load import load_model, load_tokenizer
from harness.sft.batching import IGNORE_INDEX, make_dataloader
from harness.sft.train import prepare_data, save, train
from harness.util.errors import HarnessError

pytestmark = pytest.mark.slow

SOURCES = [
    {"name": "qa", "path": "toy:sft/qa.jsonl"},
    {"name": "format", "path": "toy:sft/format.jsonl"},
    {"name": "refusal", "path": "toy:sft/refusal.jsonl", "weight": 0.5},
    {"name": "replay", "path": "toy:sft/replay.jsonl", "weight": 0.5},
]


def write_exp(folder: Path, **sections) -> Path:
    """A small experiment on the tiny toy model; keyword sections replace or extend the defaults."""
    raw = {
        "name": "train-test",
        "model": "toy:tiny",
        "seed": 0,
        "data": {"sources": SOURCES, "budget": 240, "max_length": 128},
        "train": {"learning_rate": 3e-3, "max_steps": 30, "batch_tokens": 1024},
        "peft": {"r": 8, "alpha": 16},
    }
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def tokenizer(toy_tiny):
    return load_tokenizer("toy:tiny")


@pytest.fixture(scope="module")
def base(tmp_path_factory, toy_tiny, tokenizer):
    """The default experiment and its prepared data, shared by tests that only change training."""
    exp = load_experiment(write_exp(tmp_path_factory.mktemp("base")))
    return exp, prepare_data(exp, tokenizer)


def mean_loss(model, rows: list[dict], pad_token_id: int) -> float:
    """Token-mean loss of `model` over all rows (deterministic: no dropout, fixed batches)."""
    model.eval()
    loader = make_dataloader(
        rows, mode="grouped", max_tokens=4096, seed=0, pad_token_id=pad_token_id
    )
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            targets = batch["labels"][:, 1:]
            total += torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), targets.flatten(), reduction="sum"
            ).item()
            count += int(targets.ne(IGNORE_INDEX).sum())
    return total / count


def test_prepare_data_lineage(base):
    exp, data = base
    lineage = json.loads(json.dumps(data.lineage))  # JSON-serialisable as is
    assert set(lineage) == {"sources", "mix", "trained", "mask_audit", "base_model"}
    for name in ("qa", "format", "refusal", "replay"):
        assert len(lineage["sources"][name]["sha256"]) == 64
        assert lineage["sources"][name]["skipped"] == 0
    assert lineage["mix"]["size"] == 240
    assert lineage["mix"]["sources"]["qa"]["realised_share"] == pytest.approx(1 / 3, abs=0.01)
    assert lineage["mask_audit"]["stop_token_trained"] is True
    assert sum(e["rows"] for e in lineage["trained"].values()) == len(data.rows)
    replay = next(r for r in data.rows if r["source"] == "replay")
    chat = next(r for r in data.rows if r["source"] == "qa")
    assert replay["labels"] == replay["input_ids"]  # plain text: full loss
    assert IGNORE_INDEX in chat["labels"] and any(x != IGNORE_INDEX for x in chat["labels"])


def test_prepare_data_by_tokens(tmp_path, tokenizer):
    data = {"budget": 6000, "unit": "tokens"}
    exp = load_experiment(write_exp(tmp_path, data=data))
    prepared = prepare_data(exp, tokenizer)
    mix = prepared.lineage["mix"]
    assert mix["unit"] == "tokens"
    assert sum(len(r["input_ids"]) for r in prepared.rows) == pytest.approx(6000, rel=0.05)
    assert mix["sources"]["replay"]["realised_share"] == pytest.approx(1 / 6, abs=0.03)


def test_mix_operators_are_applied_and_recorded_in_lineage(tmp_path, tokenizer):
    ops = {"narrow": 0.25, "conflict": 0.2, "corrupt": 0.1, "sources": ["qa"]}
    exp = load_experiment(write_exp(tmp_path, data={"ops": ops}))
    recorded = prepare_data(exp, tokenizer).lineage["mix"]["ops"]
    qa = recorded["narrow"]["sources"]["qa"]
    assert qa["kept"] == -(-qa["available"] // 4) and set(recorded["narrow"]["sources"]) == {"qa"}
    qa_in_mix = round(240 / 3)
    assert recorded["conflict"]["examples"] == round(0.2 * qa_in_mix)
    assert recorded["corrupt"]["examples"] == round(0.1 * qa_in_mix)


def test_untrained_stop_token_fails_before_training(tmp_path, tokenizer):
    broken = tokenizer.chat_template.replace(
        "{{ message['content'] + '<|end|>' }}{% endgeneration %}",
        "{{ message['content'] }}{% endgeneration %}{{ '<|end|>' }}",
    )
    assert broken != tokenizer.chat_template
    tok = load_tokenizer("toy:tiny")
    tok.chat_template = broken
    exp = load_experiment(write_exp(tmp_path))
    with pytest.raises(HarnessError, match="end-of-turn"):
        prepare_data(exp, tok)


@pytest.mark.parametrize("peft", [{"enabled": True}, {"enabled": False}], ids=["lora", "full"])
def test_training_reduces_loss(tmp_path, tokenizer, base, peft):
    exp = load_experiment(write_exp(tmp_path, peft=peft))
    _, data = base
    model = load_model("toy:tiny")
    before = mean_loss(model, data.rows, tokenizer.pad_token_id)
    result = train(exp, model, tokenizer, data, verbose=False)
    after = mean_loss(result.model, data.rows, tokenizer.pad_token_id)
    assert result.status == "ok" and result.steps == 30
    assert after < before - 0.2, (before, after)
    assert result.trainable_tokens < result.train_tokens
    assert result.tokens_per_second > 0 and result.peak_memory_mb > 0
    share = result.trainable_params / result.total_params
    assert share < 0.2 if peft["enabled"] else share == 1.0


def test_full_fine_tuning_returns_the_dtype_the_model_came_in(base, tokenizer):
    """Full FT trains fp32 master weights; the result comes back in the base's dtype (bf16 on
    CUDA), so the trial is evaluated and saved in the precision its base is evaluated in."""
    import torch

    exp, data = base
    exp = with_params(exp, {"peft.enabled": False, "train.max_steps": 2})
    model = load_model("toy:tiny").to(torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(exp, model, tokenizer, data, verbose=False)
    assert result.status == "ok"
    assert {p.dtype for p in result.model.parameters()} == {torch.bfloat16}
    after = result.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it did train


def test_same_seed_same_loss_curve(base, tokenizer):
    exp, data = base
    runs = [
        train(exp, load_model("toy:tiny"), tokenizer, data, verbose=False).loss_curve
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert len(runs[0]) == 30


def test_loss_is_token_mean_over_the_accumulated_step(tmp_path, base, tokenizer):
    """Two micro-batches of different sizes: the step's loss is summed token loss / all tokens,
    not the mean of the two batch means."""
    _, data = base
    exp = load_experiment(write_exp(tmp_path, train={"grad_accum": 2, "max_steps": 1}))
    model = load_model("toy:tiny")
    loader = make_dataloader(
        data.rows, mode="grouped", max_tokens=1024, seed=0, pad_token_id=tokenizer.pad_token_id
    )
    batches = [b for b, _ in zip(loader, range(2), strict=False)]
    sums, counts = [], []
    with torch.no_grad():
        for b in batches:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            targets = b["labels"][:, 1:]
            ce = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), targets.flatten(), reduction="sum"
            )
            sums.append(ce.item())
            counts.append(int(targets.ne(IGNORE_INDEX).sum()))
    assert counts[0] != counts[1]
    result = train(exp, model, tokenizer, data, verbose=False)
    assert result.loss_curve[0][1] == pytest.approx(sum(sums) / sum(counts), rel=1e-4)
    assert result.trainable_tokens == sum(counts)


def test_nan_loss_stops_without_raising(base, tokenizer):
    exp, data = base
    model = load_model("toy:tiny")
    model.lm_head.register_forward_hook(lambda _m, _i, out: out * float("nan"))
    result = train(exp, model, tokenizer, data, verbose=False)
    assert result.status == "nan"
    assert result.steps == 1 and math.isnan(result.loss_curve[-1][1])
    assert "learning_rate" in result.reason and "step 1" in result.reason


def test_absurd_learning_rate_diverges(tmp_path, base, tokenizer):
    _, data = base
    exp = load_experiment(
        write_exp(
            tmp_path,
            train={"learning_rate": 1e12, "warmup_ratio": 0.0, "max_steps": 10},
            peft={"enabled": False},
        )
    )
    result = train(exp, load_model("toy:tiny"), tokenizer, data, verbose=False)
    assert result.status == "nan", result.loss_curve
    assert result.steps < 10


def test_on_interval_is_called_and_can_stop(tmp_path, base, tokenizer):
    _, data = base
    exp = load_experiment(write_exp(tmp_path, eval={"interval": 5}))
    calls = []

    def on_interval(step, model):
        calls.append((step, model.training))
        model.eval()  # as lm-eval does; training must switch back
        return step == 10

    result = train(exp, load_model("toy:tiny"), tokenizer, data, on_interval=on_interval)
    assert calls == [(5, True), (10, True)]
    assert result.status == "pruned" and result.steps == 10
    assert "step 10" in result.reason


def test_packed_batching_trains_lora_on_cpu(tmp_path, base, tokenizer):
    """Packing needs no flash-attention any more (exact per-example attention in torch,
    tests/test_packing.py): a LoRA run on the toy data packs, learns and hands the model back
    with its own attention implementation."""
    _, data = base
    exp = load_experiment(write_exp(tmp_path, train={"batching": "packed", "max_steps": 5}))
    result = train(exp, load_model("toy:tiny"), tokenizer, data, verbose=False)
    assert result.status == "ok" and result.batching == "packed" and result.steps == 5
    assert result.padding_fraction == 0.0
    assert result.loss_curve[-1][1] < result.loss_curve[0][1]
    assert result.model.get_base_model().config._attn_implementation == "sdpa"


@pytest.mark.parametrize("peft", [True, False], ids=["adapter", "full"])
def test_saved_model_reloads_with_same_logits(tmp_path, base, tokenizer, peft):
    _, data = base
    exp = load_experiment(
        write_exp(tmp_path, train={"max_steps": 5}, peft={"enabled": peft}),
        ["train.learning_rate=0.01"],
    )
    result = train(exp, load_model("toy:tiny"), tokenizer, data, verbose=False)
    weights = save(result, tokenizer, exp, tmp_path / "out")
    reloaded = (
        load_model("toy:tiny", adapter=str(weights)) if peft else load_model(str(weights))
    ).eval()
    ids = torch.tensor([data.rows[0]["input_ids"]])
    with torch.no_grad():
        trained, again = result.model(input_ids=ids).logits, reloaded(input_ids=ids).logits
        base_logits = load_model("toy:tiny")(input_ids=ids).logits
    torch.testing.assert_close(again, trained)
    assert not torch.allclose(base_logits, trained)  # training changed something
    saved = yaml.safe_load((tmp_path / "out" / "resolved_config.yaml").read_text())
    assert saved["train"]["learning_rate"] == 0.01
    assert json.loads((tmp_path / "out" / "data_lineage.json").read_text())["mix"]["size"] == 240


def test_cli_train(tmp_path, toy_tiny, capsys):
    path = write_exp(tmp_path, train={"max_steps": 6, "logging_steps": 3})
    out = tmp_path / "run"
    code = main(["train", str(path), "--out", str(out), "--set", "train.learning_rate=0.002"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert (out / "adapter" / "adapter_config.json").exists()
    assert (
        yaml.safe_load((out / "resolved_config.yaml").read_text())["train"]["learning_rate"]
        == 0.002
    )
    assert "status: ok" in printed and "tokens/s" in printed and str(out) in printed
    assert json.loads((out / "train_result.json").read_text())["steps"] == 6


def test_cli_bad_config_is_one_line(tmp_path, capsys):
    path = write_exp(tmp_path, train={"learning_rate": -1})
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "train.learning_rate" in err


@pytest.mark.skipif(
    torch.cuda.is_available() or not Path("/proc/self/clear_refs").exists(),
    reason="the CPU peak is reset through Linux's /proc/self/clear_refs",
)
def test_cpu_peak_memory_counts_from_the_start_of_training() -> None:
    """A trial's peak is training's, not the process's lifetime peak (a study evaluates the base
    model first, in the same process, and that peak hid training's). In a fresh process: a long
    test run keeps gigabytes resident from earlier tests, which no reset can drop."""
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from harness.sft.train import _peak_memory_mb, _reset_peak_memory\n"
        "earlier = torch.ones(64 * 2**20)  # 256 MiB resident before training, then freed\n"
        "del earlier\n"
        "before = _peak_memory_mb()\n"
        "_reset_peak_memory()\n"
        "print(before, _peak_memory_mb())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split()[-2:])
    assert after < before - 200
