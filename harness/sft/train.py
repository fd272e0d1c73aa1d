"""Masked SFT on transformers' `Trainer` and peft: the training step of every trial.

Public API
    prepare_data(exp, tokenizer) -> PreparedData(rows, lineage)
    train(exp, model, tokenizer, data, *, out_dir=None, on_interval=None, verbose=True) -> TrainResult
    save(result, tokenizer, exp, out_dir) -> Path of the saved adapter or model
    train_and_save(exp, out_dir=None, *, verbose=True) -> (TrainResult, weights Path): `harness train`
    load_base_model(exp): the base model as the experiment loads it (precision, attention kernel)

What we add to `Trainer` (everything else is the library's):
- batches come from our token-budget sampler (`batching.make_dataloader`): length-grouped with
  little padding, or packed where a varlen attention kernel exists, in a seeded order;
- the loss is a mean over trained tokens of the whole optimizer step, not a mean of row means.
  Trainer counts `labels[..., 1:] != -100` over all micro-batches of a step (`num_items_in_batch`)
  and our loss (`harness.sft.loss`) divides the summed token loss by that count, so a long reply
  weighs by its tokens and gradient accumulation gives the same loss as one big batch. It is
  computed from the final hidden states in chunks (`train.loss_chunk_tokens`), so
  full-vocabulary logits never exist for the whole micro-batch;
- warmup steps are computed from `warmup_ratio` and the real number of optimizer steps (the
  meaning of a float `warmup_steps` differs between transformers versions);
- a memory preflight says before training whether the configuration fits the device;
- every optimizer step's loss is read once: a NaN/inf loss ends the run with `status="nan"`
  (Trainer's own `logging_nan_inf_filter` would hide it), and `on_interval` lets a caller evaluate
  every `eval.interval` steps and stop a trial that is already bad (`status="pruned"`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from harness.config.schema import Experiment
from harness.models.load import device, load_model, load_tokenizer, model_origin, train_dtype
from harness.sft import mix_ops
from harness.sft.batching import (
    IGNORE_INDEX,
    choose_batching,
    has_varlen_kernel,
    make_dataloader,
    plan_grouped,
    plan_packed,
    plan_stats,
)
from harness.sft.loss import HIDDEN_STATE_INPUTS, chunked_loss_for, token_mean_loss
from harness.sft.masking import MaskAudit, check_stop_token, encode_examples
from harness.sft.memory import available_memory, plan_for, preflight
from harness.sft.sources import build_mix, load_source, resolve_data_path
from harness.util.errors import HarnessError
from harness.util.files import replaced_atomically, write_atomic

OnInterval = Callable[[int, Any], "bool | None"]


# ---------------------------------------------------------------------------------------- data


@dataclass
class PreparedData:
    """Encoded training rows ({"input_ids", "labels", "source", "row"}) and where they came from.

    `lineage` is JSON-serialisable: per-source file hash and skipped rows, the requested and
    realised mix, what was actually trained per source after drops, and the mask audit.
    """

    rows: list[dict]
    lineage: dict


def prepare_data(exp: Experiment, tokenizer: Any) -> PreparedData:
    """Load every source, mix them with the experiment's weights and budget, and encode the mix.

    With `data.unit: tokens` each source is encoded whole first (the mix needs token counts), so
    the mask audit then covers every row of each source; with `examples` it covers the mix.
    """
    d = exp.data
    loaded = {
        s.name: load_source(
            resolve_data_path(exp, s.path),
            name=s.name,
            format=s.format,
            on_bad_row=d.on_bad_row,
            hub=s.hub_options(),
        )
        for s in d.sources
    }
    weights = {s.name: s.weight for s in d.sources}
    if any(src.format != "text" and weights[name] > 0 for name, src in loaded.items()):
        check_stop_token(tokenizer)  # raises before any encoding or training
    examples = {name: src.examples for name, src in loaded.items()}

    def encode(items):
        return encode_examples(
            tokenizer,
            items,
            d.max_length,
            train_on=d.train_on,
            overlong=d.overlong,
            on_bad_row=d.on_bad_row,
        )

    affected = set(d.ops.sources) or {n for n, src in loaded.items() if src.format != "text"}
    examples, narrowed = mix_ops.narrow(examples, d.ops.narrow, affected, exp.seed)
    ops = {"narrow": narrowed}
    if d.unit == "examples":
        mix = build_mix(examples, weights, d.budget, unit="examples", seed=exp.seed)
        mixed, ops["conflict"] = mix_ops.conflict(mix.examples, d.ops.conflict, affected, exp.seed)
        mixed, ops["corrupt"] = mix_ops.corrupt(mixed, d.ops.corrupt, affected, exp.seed)
        encoded = encode(mixed)
        rows, audit = encoded.rows, encoded.audit
    else:
        per_source = {name: encode(examples[name]) for name in examples if weights[name] > 0}
        kept = {name: per_source[name].rows if name in per_source else [] for name in examples}
        token_counts = {name: [len(r["input_ids"]) for r in kept[name]] for name in kept}
        by_row = {name: {ex.row: ex for ex in examples[name]} for name in examples}
        mix = build_mix(
            {name: [by_row[name][r["row"]] for r in kept[name]] for name in kept},
            weights,
            d.budget,
            unit="tokens",
            seed=exp.seed,
            token_counts=token_counts,
        )
        rows = [kept[name][i] for name, i in mix.picks]
        audit = MaskAudit(end_of_turn=None)
        for enc in per_source.values():
            audit.end_of_turn = audit.end_of_turn or enc.audit.end_of_turn
            audit.sources.update(enc.audit.sources)
            audit.samples.update(enc.audit.samples)
            audit.failures.extend(enc.audit.failures[: 5 - len(audit.failures)])
    if not rows:
        raise HarnessError(
            f"{exp.name}: no trainable rows after encoding (see data.max_length / data.overlong)"
        )
    lineage = {
        "base_model": model_origin(exp.model),
        "sources": {name: src.to_dict() for name, src in loaded.items()},
        "mix": mix.to_dict() | {"ops": ops},
        "trained": _trained_composition(rows),
        "mask_audit": audit.to_dict(),
    }
    return PreparedData(rows=rows, lineage=lineage)


def _trained_composition(rows: list[dict]) -> dict[str, dict]:
    """Rows and tokens that will really be trained per source (after drops), with their shares."""
    out: dict[str, dict] = {}
    for r in rows:
        entry = out.setdefault(r["source"], {"rows": 0, "tokens": 0, "trainable_tokens": 0})
        entry["rows"] += 1
        entry["tokens"] += len(r["input_ids"])
        entry["trainable_tokens"] += sum(lab != IGNORE_INDEX for lab in r["labels"])
    total = sum(e["trainable_tokens"] for e in out.values()) or 1
    for entry in out.values():
        entry["trainable_token_share"] = round(entry["trainable_tokens"] / total, 6)
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What one training run produced. `status`: "ok", "nan" (loss not finite) or "pruned"
    (`on_interval` asked to stop); `reason` says why in one line when it is not "ok"."""

    model: Any
    status: str
    reason: str | None
    loss_curve: list[tuple[int, float]]
    steps: int
    train_tokens: int
    trainable_tokens: int
    seconds: float
    tokens_per_second: float
    peak_memory_mb: float
    trainable_params: int = 0
    total_params: int = 0
    batching: str = "grouped"
    padding_fraction: float = 0.0
    memory: dict = field(default_factory=dict)
    lineage: dict = field(default_factory=dict)

    @property
    def final_loss(self) -> float | None:
        """Mean of the last few step losses: one step is too noisy to compare runs by."""
        tail = [loss for _, loss in self.loss_curve[-5:]]
        return sum(tail) / len(tail) if tail else None

    def summary(self) -> dict:
        """Everything but the model, JSON-serialisable."""
        return {
            "status": self.status,
            "reason": self.reason,
            "steps": self.steps,
            "final_loss": self.final_loss,
            "train_tokens": self.train_tokens,
            "trainable_tokens": self.trainable_tokens,
            "seconds": round(self.seconds, 3),
            "tokens_per_second": round(self.tokens_per_second, 1),
            "peak_memory_mb": round(self.peak_memory_mb, 1),
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "batching": self.batching,
            "padding_fraction": round(self.padding_fraction, 6),
            "memory_estimate_gib": self.memory.get("estimate_gib"),  # a metric in MLflow
            "memory": self.memory,  # the preflight's breakdown and advice
            "loss_curve": self.loss_curve,
        }


def train(
    exp: Experiment,
    model: Any,
    tokenizer: Any,
    data: PreparedData,
    *,
    out_dir: str | Path | None = None,
    on_interval: OnInterval | None = None,
    verbose: bool = True,
) -> TrainResult:
    """Fine-tune `model` on `data` as `exp.train` / `exp.peft` say; never raises for a diverged
    run (it comes back as `status="nan"`).

    `on_interval(step, model)` runs every `exp.eval.interval` optimizer steps (not after the last:
    the caller evaluates the final model anyway); returning True stops with `status="pruned"`.
    """
    t = exp.train
    mode = batching_mode(t.batching, model)
    loader = make_dataloader(
        data.rows,
        mode=mode,
        max_tokens=t.batch_tokens,
        seed=exp.seed,
        pad_token_id=tokenizer.pad_token_id,
    )
    lengths = loader.dataset.lengths
    first_epoch = (
        plan_packed(lengths, t.batch_tokens)
        if mode == "packed"
        else plan_grouped(lengths, t.batch_tokens, seed=exp.seed)
    )
    plan = plan_stats(first_epoch, lengths, packed=mode == "packed")
    dtype = train_dtype(t.precision)
    memory = preflight(
        plan_for(model, exp, max(lengths), dtype_bytes=dtype.itemsize), *available_memory()
    )
    if verbose and _is_main_process():
        print(memory.line, flush=True)
    set_seed(exp.seed)  # before peft: LoRA's A matrices are initialised at random
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False  # packed rows are recognised only without a KV cache
    if t.gradient_checkpointing:
        _enable_gradient_checkpointing(model)
    loaded_dtype = next(model.parameters()).dtype
    model = _with_peft(model, exp)
    loss = chunked_loss_for(model, t.loss_chunk_tokens)
    meter = _StepMeter()
    monitor = _Monitor(meter, model, exp, on_interval, verbose)
    steps = optimizer_steps(len(loader), t.grad_accum, t.epochs, t.max_steps, _launched_ranks())
    with tempfile.TemporaryDirectory(prefix="harness-trainer-") as scratch:
        args = _training_args(exp, out_dir or scratch, dtype == torch.bfloat16, steps)
        trainer = _SFTTrainer(
            model=model,
            args=args,
            train_dataset=loader.dataset,
            callbacks=[monitor],
            loader=loader,
            meter=meter,
            extra_inputs=HIDDEN_STATE_INPUTS if loss else {},
        )
        if loss is not None:
            trainer.compute_loss_func = loss
        elif not trainer.model_accepts_loss_kwargs:
            trainer.compute_loss_func = token_mean_loss
        for noisy in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(noisy)
        _reset_peak_memory()
        start = time.perf_counter()
        try:
            trainer.train()
        finally:
            if use_cache is not None:
                model.config.use_cache = use_cache
            model.eval()
    if not exp.peft.enabled and next(model.parameters()).dtype != loaded_dtype:
        # fp32 master weights (see `_with_peft`) back to the dtype the model came in, which is
        # the dtype its base is evaluated in: a bf16 base against fp32 weights compares precision
        # as well as training.
        model = model.to(loaded_dtype)
    seconds = max(time.perf_counter() - start - monitor.interval_seconds, 1e-9)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return TrainResult(
        model=model,
        status=monitor.status,
        reason=monitor.reason,
        loss_curve=monitor.curve,
        steps=trainer.state.global_step,
        train_tokens=meter.total_tokens,
        trainable_tokens=meter.total_trainable,
        seconds=seconds,
        tokens_per_second=meter.total_tokens / seconds,
        peak_memory_mb=_peak_memory_mb(),
        trainable_params=trainable,
        total_params=sum(p.numel() for p in model.parameters()),
        batching=mode,
        padding_fraction=plan["padding_fraction"],
        memory=memory.to_dict(),
        lineage=data.lineage,
    )


def _with_peft(model: Any, exp: Experiment) -> Any:
    """LoRA adapters on the chosen modules, or the whole model trainable (full fine-tuning).

    Full fine-tuning keeps fp32 master weights under bf16 autocast: AdamW on bf16 weights drops
    every update smaller than 1/256 of a weight, which at SFT learning rates is most of them.
    """
    if not exp.peft.enabled:
        if any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters()):
            model = model.float()
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    p = exp.peft
    config = LoraConfig(
        r=p.r,
        lora_alpha=p.alpha,
        lora_dropout=p.dropout,
        target_modules=p.target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():  # peft 0.21 asks transformers 5 a deprecated question
            warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
            return get_peft_model(model, config)
    except ValueError as e:  # e.g. target_modules naming no module of this model
        raise HarnessError(f"peft: {str(e).splitlines()[0]}") from None


def _enable_gradient_checkpointing(model: Any) -> None:
    """Recompute each decoder layer in backward (non-reentrant checkpoints). Input embeddings
    are made to require grad so that checkpointed layers of a LoRA model, whose embeddings are
    frozen, still pass gradients back (needed by reentrant checkpointing, harmless otherwise)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise HarnessError(
            f"train.gradient_checkpointing: {type(model).__name__} does not support it"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.enable_input_require_grads()


def batching_mode(setting: str, model: Any) -> str:
    """The batching mode for `train.batching` on this device; `packed` without a varlen kernel is refused: with SDPA or eager
    attention a packed row is one attention problem, quadratic in its length."""
    attn = getattr(model.config, "_attn_implementation", None)
    if setting == "packed" and not has_varlen_kernel(device(), attn):
        raise HarnessError(
            f"train.batching: packed needs a varlen attention kernel on CUDA (set "
            f"model_options.attn_implementation: flash_attention_2); this model runs {attn} on "
            f"{device()}, where packing is slower than train.batching: grouped"
        )
    return choose_batching(device(), attn) if setting == "auto" else setting


def optimizer_steps(
    batches_per_epoch: int, grad_accum: int, epochs: float, max_steps: int | None, ranks: int
) -> int:
    """Optimizer steps of a run, as Trainer counts them: each rank gets ceil(batches / ranks)
    batches per epoch (accelerate's even sharding), a step takes `grad_accum` of them (the last
    step of an epoch may take fewer), and `max_steps` wins over epochs."""
    if max_steps:
        return max_steps
    per_rank = math.ceil(batches_per_epoch / ranks)
    per_epoch = max(math.ceil(per_rank / grad_accum), 1)
    return math.ceil(epochs * per_epoch)


def warmup_steps(ratio: float, total_steps: int) -> int:
    """Warmup as a whole number of steps: an int means steps in every transformers version."""
    return math.ceil(ratio * total_steps)


def _training_args(
    exp: Experiment, out_dir: str | Path, bf16: bool, total_steps: int
) -> TrainingArguments:
    t = exp.train
    return TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=1,  # unused: batches come from the token-budget sampler
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        lr_scheduler_type="constant_with_warmup" if t.scheduler == "constant" else t.scheduler,
        warmup_steps=warmup_steps(t.warmup_ratio, total_steps),
        bf16=bf16,
        use_cpu=device() == "cpu",
        seed=exp.seed,
        data_seed=exp.seed,
        logging_strategy="no",  # _Monitor reads every step's loss and prints compact lines
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
    )


@dataclass
class _StepMeter:
    """Sums of the current optimizer step (kept on device; read once per step) and run totals."""

    loss: Any = 0.0
    tokens: Any = 0
    trainable: Any = 0
    total_tokens: int = 0
    total_trainable: int = 0

    def take(self) -> float:
        """The step's global token-mean loss. Under DDP (accelerate shards our batches across
        ranks) each rank's loss is its tokens' share times world size (Trainer undoes DDP's
        gradient mean that way), so the ranks' sum over world size is the global loss."""
        if _world_size() > 1:
            where = reduction_device(torch.distributed.get_backend())
            sums = torch.tensor(
                [float(self.loss), float(self.tokens), float(self.trainable)],
                dtype=torch.float64,
                device=where,
            )
            torch.distributed.all_reduce(sums)
            self.loss, self.tokens, self.trainable = sums[0] / _world_size(), sums[1], sums[2]
        loss = float(self.loss)
        self.total_tokens += int(self.tokens)
        self.total_trainable += int(self.trainable)
        self.loss, self.tokens, self.trainable = 0.0, 0, 0
        return loss


def reduction_device(backend: str, cuda_index: int | None = None) -> torch.device:
    """Where a collective's tensor must live: NCCL reduces only CUDA tensors (this rank's GPU,
    `cuda_index` or the current one), gloo and MPI CPU ones."""
    if str(backend).lower() == "nccl":
        index = torch.cuda.current_device() if cuda_index is None else cuda_index
        return torch.device("cuda", index)
    return torch.device("cpu")


def _launched_ranks() -> int:
    """Processes launched for this run (torchrun/accelerate set WORLD_SIZE before any process
    group exists, which is when the step count is needed)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _is_main_process() -> bool:
    """Rank 0 under torchrun (RANK is set before the process group exists), else True."""
    return os.environ.get("RANK", "0") == "0"


class _SFTTrainer(Trainer):
    """Trainer with our token-budget batches and a per-step loss/token meter."""

    def __init__(
        self, *args: Any, loader: Any, meter: _StepMeter, extra_inputs: dict, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._loader, self._meter, self._extra_inputs = loader, meter, extra_inputs

    def get_train_dataloader(self):
        return self.accelerator.prepare(self._loader)

    def training_step(self, model, inputs, num_items_in_batch=None):
        mask = inputs.get("attention_mask")
        self._meter.tokens += mask.sum() if mask is not None else inputs["input_ids"].numel()
        self._meter.trainable += inputs["labels"][..., 1:].ne(IGNORE_INDEX).sum()
        inputs = {**inputs, **self._extra_inputs}  # the chunked loss reads hidden states
        loss = super().training_step(model, inputs, num_items_in_batch)
        # each micro-batch's loss is already divided by the step's trained tokens: their sum is
        # the step's token mean
        self._meter.loss += loss
        return loss


class _Monitor(TrainerCallback):
    """Per optimizer step: record the loss, stop on NaN/inf, print progress, run `on_interval`."""

    def __init__(
        self,
        meter: _StepMeter,
        model: Any,
        exp: Experiment,
        on_interval: OnInterval | None,
        verbose: bool,
    ) -> None:
        self.meter, self.model, self.on_interval = meter, model, on_interval
        self.verbose = verbose and _is_main_process()
        self.interval, self.logging_steps = exp.eval.interval, exp.train.logging_steps
        self.curve: list[tuple[int, float]] = []
        self.status, self.reason = "ok", None
        self.interval_seconds = 0.0
        self._started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        step, loss = state.global_step, self.meter.take()
        self.curve.append((step, loss))
        if not math.isfinite(loss):
            self.status = "nan"
            self.reason = (
                f"loss became {loss} at step {step}; lower train.learning_rate "
                f"(now {args.learning_rate:g}) or check the data"
            )
            control.should_training_stop = True
            return control
        if self.verbose and (step % self.logging_steps == 0 or step == state.max_steps):
            elapsed = time.perf_counter() - self._started - self.interval_seconds
            lr = kwargs["lr_scheduler"].get_last_lr()[0] if kwargs.get("lr_scheduler") else 0.0
            print(
                f"step {step:>5}/{state.max_steps}  loss {loss:.4f}  lr {lr:.2e}  "
                f"{self.meter.total_tokens / max(elapsed, 1e-9):,.0f} tok/s",
                flush=True,
            )
        due = self.on_interval and self.interval and step % self.interval == 0
        if due and step < state.max_steps:
            began = time.perf_counter()
            stop = self.on_interval(step, self.model)
            self.model.train()  # lm-eval's HFLM puts the model in eval mode
            self.interval_seconds += time.perf_counter() - began
            if stop:
                self.status, self.reason = "pruned", f"stopped by on_interval at step {step}"
                control.should_training_stop = True
        return control


def _reset_peak_memory() -> None:
    """Start the peak-memory count at training: CUDA's allocator peak, or on Linux the process's
    resident high-water mark (`/proc/self/clear_refs` 5). Without the reset a CPU trial reported
    the peak of the whole process so far: loading, data preparation and, in a study, the base
    model's evaluation (lm-eval's full-vocabulary logits for a batch of likelihood requests)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    # not Linux, or not allowed: the process's lifetime peak is reported
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_memory_mb() -> float:
    """Peak accelerator memory on CUDA; on CPU the resident high-water mark since
    `_reset_peak_memory` (Linux `VmHWM`), else the process's lifetime peak (`ru_maxrss`)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------- saving


def save(result: TrainResult, tokenizer: Any, exp: Experiment, out_dir: str | Path) -> Path:
    """Write the adapter (LoRA) or the full model with its tokenizer, plus `resolved_config.yaml`,
    `data_lineage.json` and `train_result.json`; returns the weights' directory.

    A diverged run (`status="nan"`) keeps its config, lineage and result but no weights.
    """
    out = Path(out_dir)
    write_atomic(out / "resolved_config.yaml", yaml.safe_dump(exp.raw, sort_keys=False))
    write_atomic(out / "data_lineage.json", json.dumps(result.lineage, indent=2))
    write_atomic(out / "train_result.json", json.dumps(result.summary(), indent=2))
    weights = out / ("adapter" if exp.peft.enabled else "model")
    if result.status != "nan":
        with replaced_atomically(weights) as tmp:  # a crash never leaves half a model
            result.model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return weights


def default_out_dir(exp: Experiment) -> Path:
    """`<output_dir>/<name>/train-<timestamp>`."""
    return Path(exp.output_dir) / exp.name / f"train-{datetime.now():%Y%m%d-%H%M%S}"


def load_base_model(exp: Experiment) -> Any:
    """The experiment's base model, in its training precision and attention kernel."""
    return load_model(
        exp.model,
        precision=exp.train.precision,
        attn_implementation=exp.model_options.attn_implementation,
    )


def train_and_save(
    exp: Experiment, out_dir: str | Path | None = None, *, verbose: bool = True
) -> tuple[TrainResult, Path]:
    """One configuration end to end: data first (so bad data fails before a model loads), then
    model, training, and saving to `out_dir` (default: `default_out_dir(exp)`)."""
    tokenizer = load_tokenizer(exp.model)
    data = prepare_data(exp, tokenizer)
    model = load_base_model(exp)
    result = train(exp, model, tokenizer, data, verbose=verbose)
    out = Path(out_dir) if out_dir else default_out_dir(exp)
    if not _is_main_process():  # under torchrun every rank holds the same weights
        return result, out / ("adapter" if exp.peft.enabled else "model")
    return result, save(result, tokenizer, exp, out)
