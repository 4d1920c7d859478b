"""The prompt file loaders (JSONL, Parquet, CSV) and their handling of bad input (each case names the file and line)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines.core.config import PromptsConfig
from pipelines.loaders import PromptFileError, load_prompts


def _jsonl(tmp_path, lines, name="p.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _load(path, **kw):
    return load_prompts(PromptsConfig(path=str(path), system_prompt=None, **kw))


def test_loads_jsonl_with_reference_and_meta(tmp_path):
    path = _jsonl(tmp_path, [json.dumps({"prompt": "1+1?", "answer": 2, "id": "a"}),
                             json.dumps({"prompt": "2+2?", "answer": "4", "id": "b"})])
    prompts, drops = _load(path)
    assert len(prompts) == 2 and drops.empty
    assert prompts["reference"].tolist() == ["2", "4"]
    assert json.loads(prompts["meta"][0]) == {"id": "a"}
    assert prompts["row"].tolist() == [1, 2]
    assert list(prompts["messages"][0]) == [{"role": "user", "content": "1+1?"}]


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="prompts file not found"):
        PromptsConfig(path=str(tmp_path / "nope.jsonl"))


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = _jsonl(tmp_path, [json.dumps({"prompt": "ok"}), "{not json", json.dumps({"prompt": "ok2"})])
    with pytest.raises(PromptFileError, match=r"p\.jsonl:2: malformed JSON"):
        _load(path)


def test_missing_prompt_column_names_line_and_fields(tmp_path):
    path = _jsonl(tmp_path, [json.dumps({"question": "x"})])
    with pytest.raises(PromptFileError, match=r"p\.jsonl:1: no field 'prompt' \(fields: \['question'\]\)"):
        _load(path)


def test_empty_and_non_string_prompts_become_drops(tmp_path):
    path = _jsonl(tmp_path, [json.dumps({"prompt": "fine"}), json.dumps({"prompt": "   "}),
                             json.dumps({"prompt": 42}), json.dumps({"prompt": None})])
    prompts, drops = _load(path)
    assert len(prompts) == 1
    assert drops["reason"].tolist() == ["empty_prompt"] * 3
    assert all(f"p.jsonl:{n}:" in d for n, d in zip((2, 3, 4), drops["detail"]))
    assert "int" in drops["detail"][1]
    assert drops["prompt_id"].nunique() == 3  # each bad row keeps its own id: nothing merges away


def test_duplicate_prompts_become_drops_naming_the_first(tmp_path):
    path = _jsonl(tmp_path, [json.dumps({"prompt": "same"}), json.dumps({"prompt": "other"}),
                             json.dumps({"prompt": "same"})])
    prompts, drops = _load(path)
    assert len(prompts) == 2
    assert drops["reason"].tolist() == ["duplicate_prompt"]
    assert "p.jsonl:3" in drops["detail"][0] and "line 1" in drops["detail"][0]
    assert drops["prompt_id"][0] == prompts["prompt_id"][0]


def test_message_list_prompts_and_system_prompt(tmp_path):
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "2+2?"}]
    path = _jsonl(tmp_path, [json.dumps({"prompt": conv})])
    prompts, _ = load_prompts(PromptsConfig(path=str(path), system_prompt="Be brief."))
    msgs = list(prompts["messages"][0])
    assert msgs[0] == {"role": "system", "content": "Be brief."} and msgs[1:] == conv


def test_parquet_and_csv_and_limit(tmp_path):
    df = pd.DataFrame({"prompt": ["a?", "b?", "c?"], "answer": ["1", "2", "3"]})
    df.to_parquet(tmp_path / "p.parquet")
    df.to_csv(tmp_path / "p.csv", index=False)
    for name in ("p.parquet", "p.csv"):
        prompts, drops = _load(tmp_path / name, limit=2)
        assert prompts["reference"].tolist() == ["1", "2"] and drops.empty


def test_shipped_math_prompts_load_cleanly():
    prompts, drops = load_prompts(PromptsConfig(limit=None))
    assert len(prompts) >= 2500 and drops.empty
    assert prompts["reference"].str.fullmatch(r"-?\d+").all()
