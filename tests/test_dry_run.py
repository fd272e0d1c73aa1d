"""`harness run --dry-run` on the shipped real-model example, against local stand-ins: the
real Qwen2 tokenizer and chat template with its config shrunk (no weights exist anywhere), and
the example's three hub sources replaced by local `datasets` folders of the same shapes; and
`harness run --devices`, one worker per device with its own CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import pytest

from harness.cli import main
from harness.study import launch
from harness.util.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
QWEN = SHARED / "realworld" / "models" / "qwen2.5-instruct"
EXAMPLE = ROOT / "experiments" / "qwen2.5-0.5b-lora.yaml"


def _qwen_stand_in(folder: Path, shrink: bool) -> Path:
    """The real tokenizer files (linked) and the real config, shrunk when asked."""
    folder.mkdir()
    for f in QWEN.iterdir():
        if f.name != "config.json":
            (folder / f.name).symlink_to(f)
    config = json.loads((QWEN / "config.json").read_text())
    if shrink:
        config.update(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _hub_stand_ins(tmp: Path) -> list[str]:
    """ultrachat (a DatasetDict with split train_sft), alpaca (a folder of data files read by a
    builder) and wikitext (a save_to_disk Dataset with blank lines), as --set overrides."""
    chats = [
        {
            "prompt": f"Name a colour {i}",
            "prompt_id": str(i),
            "messages": [
                {"role": "user", "content": f"Name a colour {i}"},
                {"role": "assistant", "content": "Blue."},
            ],
        }
        for i in range(12)
    ]
    datasets.DatasetDict({"train_sft": datasets.Dataset.from_list(chats)}).save_to_disk(
        str(tmp / "ultrachat")
    )
    (tmp / "alpaca").mkdir()
    rows = [{"instruction": f"Add {i} and 1.", "input": "", "output": f"{i + 1}"} for i in range(8)]
    (tmp / "alpaca" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    wiki = [{"text": t} for t in ["", " = Valkyria = \n", "", "The game began in 2010 .\n"] * 3]
    datasets.Dataset.from_list(wiki).save_to_disk(str(tmp / "wikitext"))
    return [
        f"data.sources.chat.path=hf:{tmp / 'ultrachat'}:train_sft",
        f"data.sources.alpaca.path=hf:{tmp / 'alpaca'}:train",
        f"data.sources.replay.path=hf:{tmp / 'wikitext'}",
        "data.sources.replay.hf_config=null",
        "data.budget=40",
    ]


@pytest.mark.skipif(not QWEN.is_dir(), reason=f"{QWEN} (real Qwen tokenizer) is absent")
def test_shipped_real_model_example_dry_runs_on_local_stand_ins(tmp_path, capsys):
    model = _qwen_stand_in(tmp_path / "qwen", shrink=True)
    sets = [f"model={model}", *_hub_stand_ins(tmp_path)]
    argv = ["run", str(EXAMPLE), "--dry-run", *(x for s in sets for x in ("--set", s))]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Qwen2ForCausalLM" in out and "vocab 151936" in out
    assert "trained end-of-turn '<|im_end|>'" in out
    assert "chat: messages from hf:" in out and "alpaca: alpaca from hf:" in out
    assert "replay: text from hf:" in out and "skipped {'empty text': 6}" in out
    assert "kept 40 of 40" in out and "0 unmaskable" in out
    assert "LoRA r=16" in out and "chunks of 1024" in out
    assert "forgetting (english)" in out and "arc_easy" in out
    assert "train.learning_rate" in out  # the search space
    assert ": fits (" in out
    assert not list(tmp_path.glob("**/*.safetensors"))  # nothing was trained or saved

    # the real, unshrunk config: built on the meta device, no weights needed
    full = _qwen_stand_in(tmp_path / "qwen-full", shrink=False)
    code = main([*argv, "--set", f"model={full}"])
    out = capsys.readouterr().out
    assert code in (0, 1) and "1,543,714,304 parameters" in out and "memory:" in out


class _FakeProcess:
    def __init__(self, code: int) -> None:
        self.code = code

    def wait(self) -> int:
        return self.code


def test_devices_start_one_worker_per_device():
    started = []

    def launcher(cmd, env):
        started.append((cmd, env))
        return _FakeProcess(0 if len(started) != 2 else 3)

    args = ["run", "exp.yaml", "--set=train.learning_rate=0.001", "--n-trials=8"]
    code = launch.launch_workers(args, ["0", "2", "3"], launcher=launcher)
    assert code == 3  # a failed worker is not hidden
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in started] == ["0", "2", "3"]
    assert all(cmd[1:] == ["-m", "harness", *args] for cmd, _ in started)
    cpu = launch.launch_workers(["run", "x"], ["cpu", "cpu"], launcher=launcher)
    assert cpu == 0 and started[-1][1]["CUDA_VISIBLE_DEVICES"] == ""


def test_devices_are_validated():
    assert launch.parse_devices("0, 1,3", cuda_count=4) == ["0", "1", "3"]
    assert launch.parse_devices("cpu,cpu", cuda_count=0) == ["cpu", "cpu"]
    for text, message in [
        ("0,1", "GPU 0 is not here (no CUDA GPU); use --devices cpu,cpu"),
        ("1,1", "a GPU is named twice"),
        ("gpu0", "'gpu0' is neither a GPU index nor 'cpu'"),
        ("", "give GPU indices"),
    ]:
        with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)")):
            launch.parse_devices(text, cuda_count=0)


def test_cli_devices_without_gpus_is_one_line(tmp_path, capsys):
    exp = tmp_path / "e.yaml"
    exp.write_text("name: e\ndata: {sources: [{name: a, path: a.jsonl}]}\n")
    assert main(["run", str(exp), "--devices", "0,1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --devices 0,1: GPU 0 is not here") and "\n" not in err
