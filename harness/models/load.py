"""Loading base models, tokenizers and adapters: one place that knows what `toy`, a local
directory and a hub name mean, and which device and dtype to use."""

from __future__ import annotations

from pathlib import Path

from harness.config.schema import is_toy, toy_size
from harness.models.gguf import gguf_provenance, import_gguf, is_gguf_source
from harness.util.errors import HarnessError


def resolve_model_path(name: str) -> str:
    """`toy` / `toy:tiny` → the cached toy model directory (built on first use); a `.gguf`
    file, a folder holding one, or `smollm2-135m-instruct` → its dequantized import in the cache
    (harness/models/gguf.py); a local directory as is; anything else is passed to transformers
    as a hub name."""
    if is_toy(name):
        from harness.models.toy.build import build_toy_world

        return str(build_toy_world(toy_size(name)).model_dir)
    if is_gguf_source(name):
        return str(import_gguf(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise HarnessError(
                f"model path {name}: not a Hugging Face model directory (no config.json)"
            )
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise HarnessError(f"model path {name}: no such directory")
    return name  # a hub id such as Qwen/Qwen2.5-0.5B-Instruct


def model_origin(name: str) -> dict:
    """Where the base model's weights came from, for lineage and MLflow: the name as given, the
    folder it resolves to and, for an imported GGUF, its sha256 and quantization (`gguf.json`)."""
    path = resolve_model_path(name)
    origin: dict = {"name": name, "path": path}
    provenance = gguf_provenance(path) if Path(path).is_dir() else None
    if provenance:
        origin["gguf"] = provenance
    return origin


def base_origin(name: str) -> str | None:
    """ "base dequantized from 4-bit Q4_1 weights (...)" for an imported GGUF, else None."""
    from harness.models.gguf import provenance_line

    info = model_origin(name).get("gguf")
    return provenance_line(info) if info else None


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def train_dtype(precision: str = "auto"):
    """bf16 on CUDA when supported, fp32 on CPU (CPU bf16 matmuls are slow and lossy)."""
    import torch

    if precision == "fp32" or (precision == "auto" and device() == "cpu"):
        return torch.float32
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise HarnessError(
            f"model {name}: cannot load tokenizer ({str(e).splitlines()[0]})"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise HarnessError(f"model {name}: tokenizer has no chat template; SFT on chats needs one")
    return tokenizer


def load_model(
    name: str,
    precision: str = "auto",
    adapter: str | None = None,
    attn_implementation: str = "auto",
):
    """The causal LM on the best device; with `adapter`, a peft model on top (left unmerged).
    `attn_implementation` other than "auto" is passed to `from_pretrained` (e.g. flash_attention_2)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    options = {} if attn_implementation == "auto" else {"attn_implementation": attn_implementation}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=train_dtype(precision), **options)
    except (OSError, ImportError, ValueError) as e:  # missing files; flash-attn not installed
        raise HarnessError(f"model {name}: cannot load ({str(e).splitlines()[0]})") from None
    if adapter:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").exists():
            raise HarnessError(f"adapter {adapter}: no adapter_config.json there")
        model = PeftModel.from_pretrained(model, adapter)
    return model.to(device())


def meta_model(name: str):
    """The model's architecture with no weights (PyTorch's meta device): parameter counts and
    module shapes for the memory estimate and `harness run --dry-run`, without loading anything."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise HarnessError(
            f"model {name}: cannot read its config ({str(e).splitlines()[0]})"
        ) from None
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)
