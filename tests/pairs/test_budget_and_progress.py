"""build_pairs under a token budget and with live progress, without a model: a scripted sampler (local to this
file) stands in for the engine, reporting each chunk of prompts as the real samplers do."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.core import cost, schema
from pipelines.core.progress import report_generated
from pipelines.pairs import build
from pipelines.pairs.config import BuildConfig
from samplers import Generation

K, NEW, BATCH = 4, 10, 2


class ScriptedSampler:
    """k answers per prompt, "The answer is <n>", 5 + j tokens each; reports every `chunk` prompts."""
    name, model_name, max_context = "transformers", "scripted", 4096

    def __init__(self, chunk: int = 1):
        self.chunk, self.calls = chunk, 0

    def prompt_tokens(self, messages) -> int:
        return sum(len(m["content"].split()) for m in messages) + 3

    def render(self, messages, continue_final=False) -> str:
        return " ".join(m["content"] for m in messages)

    def generate(self, conversations, n, seeds, **kwargs):
        self.calls += 1
        out = []
        for start in range(0, len(conversations), self.chunk):
            part = conversations[start:start + self.chunk]
            gens = [[Generation(f"The answer is {(seed + j) % 9}.", "stop", self.prompt_tokens(c), 5 + j, -0.5 * j)
                     for j in range(n)] for c, seed in zip(part, seeds[start:start + self.chunk])]
            out += gens
            report_generated(len(part), sum(g.completion_tokens for gs in gens for g in gs))
        return out


@pytest.fixture
def scripted(monkeypatch):
    sampler = ScriptedSampler()
    monkeypatch.setattr("samplers.get_sampler", lambda cfg: sampler)
    # the budget counts prompt tokens with the model's tokenizer; here the scripted sampler's count is the truth
    monkeypatch.setattr(cost, "prompt_counter", lambda cfg: (sampler.prompt_tokens, "scripted"))
    return sampler


def config(tmp_path, limit=8, **budget) -> BuildConfig:
    return BuildConfig(output_dir=str(tmp_path / "runs"), batch_size=BATCH, prompts={"limit": limit},
                       sampler={"k": K, "max_new_tokens": NEW}, budget=budget)


def bounds_of(cfg, sampler) -> list[int]:
    from pipelines.loaders import load_prompts
    prompts, _ = load_prompts(cfg.prompts)
    tokens = [sampler.prompt_tokens(list(m)) + K * NEW for m in prompts["messages"]]
    return [sum(tokens[i:i + BATCH]) for i in range(0, len(tokens), BATCH)]


def test_budget_stops_at_a_batch_boundary_and_accounts_for_every_prompt(tmp_path, scripted):
    bounds = bounds_of(config(tmp_path), scripted)
    # room for the first two bounds, and not for a third on top of what two batches really spend
    limit = bounds[0] + bounds[1]
    manifest = build.run_local(config(tmp_path, max_total_tokens=limit), log=lambda m: None)
    assert manifest["batches"] == {"total": 4, "computed": 2, "resumed": 0} and scripted.calls == 2
    budget = manifest["budget"]
    assert budget["stopped"] and budget["batches_not_run"] == 2 and budget["prompts_not_sampled"] == 4
    assert budget["spent"] == manifest["token_use"]["total"] <= limit
    run_dir = manifest["run_dir"]
    drops, pairs = pd.read_parquet(f"{run_dir}/drops.parquet"), pd.read_parquet(f"{run_dir}/pairs.parquet")
    prompts = pd.read_parquet(f"{run_dir}/prompts.parquet")
    stopped = drops[drops["reason"] == "budget_exhausted"]
    assert list(stopped["prompt_id"]) == list(prompts["prompt_id"][4:])   # batches 3 and 4, every prompt
    assert set(stopped["stage"]) == {"sample"} and stopped["detail"].str.contains("budget.max_total_tokens").all()
    assert stopped["detail"].iloc[0].startswith(f"{prompts['source'][4]}:{prompts['row'][4]}: not sampled")
    assert set(prompts["prompt_id"]) == set(pairs["prompt_id"]) | set(drops["prompt_id"])
    assert pd.read_parquet(f"{run_dir}/candidates.parquet")["prompt_id"].nunique() == 4  # what ran is kept
    text = build.summary_text(manifest)
    assert f"budget: {budget['spent']:,} of {limit:,} tokens spent; stopped before 2 of 4 batches: 4 prompts not " \
           "sampled (dropped as budget_exhausted)" in text

    # a larger budget, the same command otherwise: the finished batches come from the shards, the rest run
    again = build.run_local(config(tmp_path, max_total_tokens=10 * limit), log=lambda m: None)
    assert again["batches"] == {"total": 4, "computed": 2, "resumed": 2} and not again["budget"]["stopped"]
    assert again["token_use"]["total"] > manifest["token_use"]["total"]
    assert "budget_exhausted" not in set(pd.read_parquet(f"{again['run_dir']}/drops.parquet")["reason"])


def test_a_budget_below_the_first_batch_samples_nothing_and_drops_everything(tmp_path, scripted):
    manifest = build.run_local(config(tmp_path, limit=4, max_total_tokens=5), log=lambda m: None)
    assert scripted.calls == 0 and manifest["counts"]["pairs"] == 0
    drops = pd.read_parquet(f"{manifest['run_dir']}/drops.parquet")
    assert list(drops["reason"]) == ["budget_exhausted"] * 4


def test_live_progress_lines_inside_each_batch(tmp_path, scripted):
    lines = []
    manifest = build.run_local(config(tmp_path, limit=4), log=lines.append)
    live = [line for line in lines if "prompts sampled" in line]
    # one line per batch after its first prompt (the second completes the batch: its own line follows)
    assert [line.split(":")[0] for line in live] == ["batch 1/2", "batch 2/2"]
    first_prompt_tokens = sum(5 + j for j in range(K))
    assert all(line.startswith(f"batch {i}/2: 1/2 prompts sampled, {first_prompt_tokens} tokens, ")
               for i, line in zip((1, 2), live))
    assert all("tok/s, ETA" in line for line in live)
    assert manifest["token_use"]["generated"] == 4 * first_prompt_tokens


def test_reason_is_known():
    assert "budget_exhausted" in schema.REASONS
