"""`harness run EXP --dry-run`: everything a study would resolve before its first trial, without
training, so a configuration meant for a GPU machine can be checked anywhere first.

Public API
    dry_run(exp) -> DryRun: model (config only, no weights), tokenizer and chat template, data
        (mix and mask audit), batching and steps, eval suites, and the memory estimate
    DryRun.lines() -> list[str]: what `harness run --dry-run` prints

The model is built on PyTorch's meta device from its config, so a 7B configuration is checked in
seconds on a laptop; the memory verdict is for the device of the machine it runs on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.config.schema import Experiment
from harness.models.load import device, load_tokenizer, meta_model, resolve_model_path, train_dtype
from harness.sft.batching import plan_grouped, plan_packed
from harness.sft.memory import Preflight, available_memory, plan_for, preflight


@dataclass
class DryRun:
    sections: dict[str, list[str]] = field(default_factory=dict)
    memory: Preflight | None = None

    def lines(self) -> list[str]:
        out = []
        for name, lines in self.sections.items():
            out.append(f"{name}:")
            out.extend(f"  {line}" for line in lines)
        return out


def dry_run(exp: Experiment) -> DryRun:
    """Resolve every part of `exp` a trial needs; raises HarnessError on the first that fails."""
    from harness.sft.masking import check_stop_token
    from harness.sft.train import batching_mode, optimizer_steps, prepare_data, warmup_steps

    result = DryRun()
    model = meta_model(exp.model)
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    result.sections["model"] = [
        f"{exp.model} -> {resolve_model_path(exp.model)}",
        f"{type(model).__name__}: {params:,} parameters, {config.num_hidden_layers} layers, "
        f"hidden {config.hidden_size}, vocab {config.vocab_size}",
        f"attention: {exp.model_options.attn_implementation}; training on {device()} in "
        f"{str(train_dtype(exp.train.precision)).removeprefix('torch.')}",
        "fine-tuning: "
        + (
            f"LoRA r={exp.peft.r} on {exp.peft.target_modules}"
            if exp.peft.enabled
            else "full (fp32 master weights)"
        ),
    ]

    tokenizer = load_tokenizer(exp.model)
    result.sections["tokenizer"] = [
        f"{type(tokenizer).__name__}: {len(tokenizer):,} tokens; bos {tokenizer.bos_token!r}, "
        f"eos {tokenizer.eos_token!r}, pad {tokenizer.pad_token!r}",
        f"chat template: {len(tokenizer.chat_template):,} chars; trained end-of-turn "
        f"{check_stop_token(tokenizer)!r}",
    ]

    data = prepare_data(exp, tokenizer)
    result.sections["data"] = _data_lines(data.lineage)

    lengths = [len(r["input_ids"]) for r in data.rows]
    t = exp.train
    config._attn_implementation = _requested_attention(exp, config)
    mode = batching_mode(t.batching, model)
    batches = (
        plan_packed(lengths, t.batch_tokens)
        if mode == "packed"
        else plan_grouped(lengths, t.batch_tokens, seed=exp.seed)
    )
    steps = optimizer_steps(len(batches), t.grad_accum, t.epochs, t.max_steps, 1)
    result.sections["training"] = [
        f"batching {mode}: {len(batches)} micro-batches of <= {t.batch_tokens} tokens per "
        f"epoch; longest row {max(lengths)} tokens",
        f"{steps} optimizer steps (one process), warmup {warmup_steps(t.warmup_ratio, steps)}; "
        f"loss over trained tokens in chunks of {t.loss_chunk_tokens or 'all (model loss)'}; "
        f"gradient checkpointing {'on' if t.gradient_checkpointing else 'off'}",
    ]

    result.sections["eval"] = _suite_lines(exp)
    result.sections["search"] = [
        f"{exp.sampler} sampler, {exp.n_trials} trials, pruner {exp.pruner}: "
        + (", ".join(exp.search) or "no search dimensions (one configuration)")
    ]

    dtype = train_dtype(t.precision)
    result.memory = preflight(
        plan_for(model, exp, max(lengths), dtype_bytes=dtype.itemsize), *available_memory()
    )
    result.sections["memory"] = [result.memory.line.removeprefix("memory: ")]
    return result


def _requested_attention(exp: Experiment, config) -> str:
    """The kernel training would use: the experiment's choice, else what the config says."""
    chosen = exp.model_options.attn_implementation
    return chosen if chosen != "auto" else (config._attn_implementation or "sdpa")


def _data_lines(lineage: dict) -> list[str]:
    lines = []
    mix = lineage["mix"]
    audit = lineage["mask_audit"]
    for name, src in lineage["sources"].items():
        share = mix["sources"][name]
        skipped = f", {src['skipped']} skipped {src['skip_reasons']}" if src["skipped"] else ""
        masked = audit["sources"].get(name, {})
        lines.append(
            f"{name}: {src['format']} from {src['path']}: {src['examples']} rows{skipped}; "
            f"weight {share['weight']:g} -> {share['realised_share']:.1%} of the mix; "
            f"trainable share {masked.get('trainable_share', 0):.1%}"
        )
    total = audit["total"]
    lines.append(
        f"mix: {mix['size']} {mix['unit']}; mask audit: kept {total['kept']} of "
        f"{total['examples']}, truncated {total['truncated']} (end-of-turn lost in "
        f"{total['eot_truncated']}), dropped {total['dropped_overlong']} overlong + "
        f"{total['dropped_no_trainable']} without trainable tokens + "
        f"{total['dropped_unmaskable']} unmaskable; {total['dropped_messages']} messages the "
        "template does not render"
    )
    return lines


def _suite_lines(exp: Experiment) -> list[str]:
    from harness.eval.runner import resolve_dataset
    from harness.eval.suites import load_suites
    from harness.util.files import read_rows

    dataset = resolve_dataset(exp.eval.dataset, exp.model)
    lines = []
    for suite in load_suites(exp.eval.suites, exp.eval.suite_dirs):
        path = suite.data_path(dataset)
        lines.append(f"{suite.name} ({dataset}): {len(read_rows(path))} items from {path}")
    if exp.eval.tasks:
        lines.append(f"lm-eval tasks in forgetting: {exp.eval.tasks}")
    limit = f"first {exp.eval.limit} items per task" if exp.eval.limit else "all items"
    lines.append(f"{limit}; up to {exp.eval.max_new_tokens} new tokens per reply")
    return lines
