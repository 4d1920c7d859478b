"""The datasets loader: `prompts.path` a local dataset directory (save_to_disk, or Parquet files with a dataset
card declaring configs) or a Hub name, offline (conftest sets HF_DATASETS_OFFLINE=1). Every dataset is built here.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipelines.core.config import PromptsConfig
from pipelines.loaders import PromptFileError, load_prompts


def ultrafeedback_rows() -> list[dict]:
    """UltraFeedback-binarized shaped rows: prompt text, and the conversation as `messages`/`chosen`/`rejected`."""
    rows = []
    for i, (q, good, bad) in enumerate([("What is 2 + 3?", "5", "6"), ("Name a prime above 10.", "11", "12"),
                                        ("What is 7 x 6?", "42", "36")]):
        user = {"role": "user", "content": q}
        rows.append({"prompt": q, "prompt_id": f"uf-{i}",
                     "messages": [user, {"role": "assistant", "content": good}],
                     "chosen": [user, {"role": "assistant", "content": good}],
                     "rejected": [user, {"role": "assistant", "content": bad}],
                     "score_chosen": 8.0, "score_rejected": 3.0})
    return rows


def cfg(path, **kw) -> PromptsConfig:
    return PromptsConfig(**{"path": str(path), "system_prompt": None, "limit": None, "reference_field": None, **kw})


def user_texts(prompts) -> list[str]:
    return [[m["content"] for m in msgs if m["role"] == "user"][0] for msgs in prompts["messages"]]


@pytest.fixture
def saved(tmp_path):
    from datasets import Dataset
    path = tmp_path / "uf_saved"
    Dataset.from_list(ultrafeedback_rows()).save_to_disk(str(path))
    return path


@pytest.fixture
def parquet_card(tmp_path):
    """A folder of Parquet files whose README.md dataset card declares two configs (easy: train; hard:
    train + test), the layout of a Hub dataset repository."""
    from datasets import Dataset
    root = tmp_path / "card"
    (root / "data").mkdir(parents=True)
    easy = [{"question": f"{a} + {a}?", "answer": str(2 * a)} for a in range(1, 4)]
    hard = [{"question": f"{a} ** 3?", "answer": str(a ** 3)} for a in range(5, 10)]
    Dataset.from_list(easy).to_parquet(str(root / "data" / "easy-train.parquet"))
    Dataset.from_list(hard[:3]).to_parquet(str(root / "data" / "hard-train.parquet"))
    Dataset.from_list(hard[3:]).to_parquet(str(root / "data" / "hard-test.parquet"))
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: easy\n  data_files:\n  - split: train\n    path: data/easy-train.parquet\n"
        "- config_name: hard\n  data_files:\n  - split: train\n    path: data/hard-train.parquet\n"
        "  - split: test\n    path: data/hard-test.parquet\n---\n# sums and cubes\n")
    return root


def test_save_to_disk_directory_with_plain_text_and_message_list_columns(saved):
    for field in ("prompt", "messages", "chosen"):  # the conversations end with the answer: the prompt is before it
        prompts, drops = load_prompts(cfg(saved, prompt_field=field))
        assert user_texts(prompts) == ["What is 2 + 3?", "Name a prime above 10.", "What is 7 x 6?"]
        assert all(len(m) == 1 and m[0]["role"] == "user" for m in prompts["messages"]), field
        assert list(prompts["row"]) == [1, 2, 3] and drops.empty
        assert set(prompts["source"]) == {f"{saved}[train]"}
    # the same conversation from either column is the same prompt (ids are content hashes)
    assert list(load_prompts(cfg(saved))[0]["prompt_id"]) == list(load_prompts(cfg(saved,
                                                                                 prompt_field="chosen"))[0]["prompt_id"])
    meta = json.loads(load_prompts(cfg(saved))[0]["meta"][0])
    assert meta["score_chosen"] == 8.0 and meta["rejected"][1]["content"] == "6"


def test_saved_dataset_dict_picks_the_split(tmp_path):
    from datasets import Dataset, DatasetDict
    path = tmp_path / "dd"
    DatasetDict({"train": Dataset.from_list([{"prompt": "a?"}, {"prompt": "b?"}]),
                 "test": Dataset.from_list([{"prompt": "c?"}])}).save_to_disk(str(path))
    assert user_texts(load_prompts(cfg(path))[0]) == ["a?", "b?"]
    test, _ = load_prompts(cfg(path, dataset_split="test"))
    assert user_texts(test) == ["c?"] and test["source"][0] == f"{path}[test]"
    with pytest.raises(PromptFileError, match=r"dd: no split 'dev' \(splits: \['test', 'train'\]\)"):
        load_prompts(cfg(path, dataset_split="dev"))


def test_parquet_folder_with_a_dataset_card_configs_splits_and_streaming(parquet_card):
    easy, _ = load_prompts(cfg(parquet_card, dataset_config="easy", prompt_field="question"))
    assert user_texts(easy) == ["1 + 1?", "2 + 2?", "3 + 3?"]
    hard_test, _ = load_prompts(cfg(parquet_card, dataset_config="hard", dataset_split="test",
                                    prompt_field="question", reference_field="answer"))
    assert user_texts(hard_test) == ["8 ** 3?", "9 ** 3?"] and list(hard_test["reference"]) == ["512", "729"]
    assert hard_test["source"][0] == f"{parquet_card}[hard/test]"
    streamed, _ = load_prompts(cfg(parquet_card, dataset_config="hard", dataset_split="test",
                                   prompt_field="question", reference_field="answer", streaming=True))
    assert streamed.equals(hard_test)  # streaming reads the same rows, numbered the same


def test_limit_and_held_out_split_apply_to_datasets(parquet_card):
    limited, _ = load_prompts(cfg(parquet_card, dataset_config="hard", prompt_field="question", limit=2,
                                  streaming=True))
    assert len(limited) == 2
    train = load_prompts(cfg(parquet_card, dataset_config="hard", prompt_field="question", split="train",
                             eval_fraction=0.5))[0]
    evals = load_prompts(cfg(parquet_card, dataset_config="hard", prompt_field="question", split="eval",
                             eval_fraction=0.5))[0]
    assert len(train) + len(evals) == 3 and not set(train["prompt_id"]) & set(evals["prompt_id"])


def test_bad_rows_become_drops_naming_the_row(tmp_path):
    from datasets import Dataset
    path = tmp_path / "bad"
    Dataset.from_list([{"prompt": "ok?"}, {"prompt": "  "}, {"prompt": "ok?"}, {"prompt": "fine?"}]).save_to_disk(
        str(path))
    prompts, drops = load_prompts(cfg(path))
    assert user_texts(prompts) == ["ok?", "fine?"] and list(prompts["row"]) == [1, 4]
    by_reason = dict(zip(drops["reason"], drops["detail"]))
    assert by_reason["empty_prompt"].startswith(f"{path}[train]:2: prompt is empty")
    assert by_reason["duplicate_prompt"] == f"{path}[train]:3: same prompt as line 1"


def test_a_conversation_with_only_an_answer_is_an_empty_prompt(tmp_path):
    from datasets import Dataset
    path = tmp_path / "answers"
    Dataset.from_list([{"messages": [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "a"}]},
                       {"messages": [{"role": "assistant", "content": "just an answer"}]}]).save_to_disk(str(path))
    prompts, drops = load_prompts(cfg(path, prompt_field="messages"))
    assert len(prompts) == 1 and list(drops["reason"]) == ["empty_prompt"]
    assert drops["detail"][0].startswith(f"{path}[train]:2: prompt is a message list with no user content")


def test_missing_column_config_split_and_dataset_are_one_line_errors(saved, parquet_card):
    with pytest.raises(PromptFileError, match=r"uf_saved\[train\]: no column 'question' \(columns: \[.*'prompt'"):
        load_prompts(cfg(saved, prompt_field="question"))
    with pytest.raises(PromptFileError, match=r"card\[train\]: Config name is missing.*\['easy', 'hard'\]") as e:
        load_prompts(cfg(parquet_card, prompt_field="question"))
    assert "\n" not in str(e.value)
    with pytest.raises(PromptFileError, match=r"card\[medium/train\]: BuilderConfig 'medium' not found"):
        load_prompts(cfg(parquet_card, dataset_config="medium", prompt_field="question"))
    with pytest.raises(PromptFileError, match=r"card\[hard/dev\]: Unknown split \"dev\""):
        load_prompts(cfg(parquet_card, dataset_config="hard", dataset_split="dev", prompt_field="question"))
    with pytest.raises(PromptFileError, match=r"nobody/no-such-set\[train\]: no such file, dataset directory or Hub"):
        load_prompts(cfg("nobody/no-such-set"))
    with pytest.raises(PromptFileError, match="save_to_disk directory has no configs"):
        load_prompts(cfg(saved, dataset_config="x"))


def test_what_a_path_is_read_as(tmp_path, saved):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "x"}\n')
    assert cfg(jsonl).source_kind() == "jsonl" and cfg(saved).source_kind() == "dataset"
    assert cfg("HuggingFaceH4/ultrafeedback_binarized").source_kind() == "dataset"
    with pytest.raises(ValidationError, match="prompts file not found"):
        cfg(tmp_path / "missing.jsonl")  # a file name is never taken for a Hub name
    with pytest.raises(ValidationError, match=r"prompts.dataset_split, prompts.streaming: for datasets only"):
        cfg(jsonl, dataset_split="test", streaming=True)  # a setting that would do nothing is refused
    with pytest.raises(ValidationError, match="format dataset needs a dataset directory or a Hub name"):
        cfg(jsonl, format="dataset")
