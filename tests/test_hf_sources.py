"""`hf:` sources read with `datasets`, offline: save_to_disk folders (Dataset and DatasetDict),
a local folder of data files with `data_dir` and `split`, experiment fields and their
validation; and empty text rows, which are skipped and counted, never fatal."""

from __future__ import annotations

import json

import datasets
import pytest

from harness.config.load import validate
from harness.sft.sources import load_source, resolve_data_path
from harness.util.errors import HarnessError

CHATS = [
    {
        "messages": [
            {"role": "user", "content": f"Question {i}?"},
            {"role": "assistant", "content": f"Answer {i}."},
        ]
    }
    for i in range(5)
]


def _exp(tmp_path, **source):
    raw = {"name": "h", "data": {"sources": [{"name": "s", **source}]}}
    return validate(raw, "h.yaml", tmp_path)


def test_save_to_disk_dataset_relative_to_the_experiment(tmp_path):
    datasets.Dataset.from_list(CHATS).save_to_disk(str(tmp_path / "chats"))
    exp = _exp(tmp_path, path="hf:./chats")
    path = resolve_data_path(exp, exp.data.sources[0].path)
    assert path == f"hf:{tmp_path / 'chats'}"
    loaded = load_source(path, name="s", hub=exp.data.sources[0].hub_options())
    assert loaded.format == "messages" and len(loaded.examples) == 5
    assert loaded.examples[2].messages[1]["content"] == "Answer 2."
    assert loaded.sha256  # the dataset's fingerprint identifies it in the lineage


def test_save_to_disk_dataset_dict_picks_the_split(tmp_path):
    folder = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(CHATS[:3]),
            "test": datasets.Dataset.from_list(CHATS[3:]),
        }
    ).save_to_disk(str(folder))
    assert len(load_source(f"hf:{folder}", name="s").examples) == 3  # default split: train
    assert len(load_source(f"hf:{folder}:test", name="s").examples) == 2
    assert len(load_source(f"hf:{folder}", name="s", hub={"split": "test"}).examples) == 2
    with pytest.raises(HarnessError, match=r"no split 'dev' \(the folder has train, test\)"):
        load_source(f"hf:{folder}", name="s", hub={"split": "dev"})
    with pytest.raises(HarnessError, match="do not apply to a save_to_disk folder"):
        load_source(f"hf:{folder}", name="s", hub={"config": "x"})


def test_local_builder_folder_with_data_dir_and_split(tmp_path):
    root = tmp_path / "builder"
    for sub, rows in (("en", CHATS[:4]), ("de", CHATS[4:])):
        (root / sub).mkdir(parents=True)
        for split in ("train", "validation"):
            lines = [json.dumps(r) for r in (rows if split == "train" else rows[:1])]
            (root / sub / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    exp = _exp(tmp_path, path="hf:./builder", data_dir="en", split="validation")
    source = exp.data.sources[0]
    loaded = load_source(resolve_data_path(exp, source.path), name="s", hub=source.hub_options())
    assert len(loaded.examples) == 1
    english = load_source(f"hf:{root}", name="s", hub={"data_dir": "en"})
    assert len(english.examples) == 4


def test_empty_text_rows_are_skipped_and_counted(tmp_path):
    """wikitext is full of blank lines: under the default on_bad_row=error they are not fatal."""
    rows = [{"text": " = Title = \n"}, {"text": ""}, {"text": "   \n"}, {"text": "Body.\n"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "wiki"))
    loaded = load_source(f"hf:{tmp_path / 'wiki'}", name="replay", on_bad_row="error")
    assert [ex.text for ex in loaded.examples] == [" = Title = \n", "Body.\n"]
    assert loaded.skipped == 2 and loaded.skip_reasons == {"empty text": 2}
    assert loaded.to_dict()["skip_reasons"] == {"empty text": 2}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"path": "a.jsonl", "hf_config": "c"}, "hf_config: only for hf: sources"),
        ({"path": "a.jsonl", "split": "train", "data_dir": "d"}, "data_dir, split: only for hf:"),
        ({"path": "hf:x/y:train", "split": "test"}, "split is given twice"),
    ],
)
def test_hub_fields_are_validated(tmp_path, source, message):
    with pytest.raises(HarnessError, match=f"h.yaml: data.sources.s: {message}"):
        _exp(tmp_path, **source)


def test_missing_hub_dataset_is_one_line(tmp_path):
    with pytest.raises(HarnessError) as err:
        load_source("hf:no-such-org/no-such-dataset", name="s")
    assert "cannot load dataset" in str(err.value) and "\n" not in str(err.value)
