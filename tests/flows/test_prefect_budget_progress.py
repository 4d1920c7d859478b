"""The Prefect flow of build_pairs: the token budget stops it at a batch boundary like the plain loop, and the
progress artifact moves inside a batch (from the sampler's reports), not only when a batch finishes. A scripted
sampler (local to this file) stands in for the model."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.core import cost
from pipelines.core.progress import report_generated
from pipelines.pairs.config import BuildConfig
from samplers import Generation

pytestmark = pytest.mark.slow  # starts a Prefect API


class ScriptedSampler:
    """k answers per prompt, 5 + j tokens each, one report per prompt (as a chunked engine reports)."""
    name, model_name, max_context = "transformers", "scripted", 4096

    def prompt_tokens(self, messages) -> int:
        return sum(len(m["content"].split()) for m in messages) + 3

    def render(self, messages, continue_final=False) -> str:
        return " ".join(m["content"] for m in messages)

    def generate(self, conversations, n, seeds, **kwargs):
        out = []
        for c, seed in zip(conversations, seeds):
            gens = [Generation(f"The answer is {(seed + j) % 9}.", "stop", self.prompt_tokens(c), 5 + j, -0.5 * j)
                    for j in range(n)]
            out.append(gens)
            report_generated(1, sum(g.completion_tokens for g in gens))
        return out


def test_flow_budget_and_live_progress_artifact(tmp_path, monkeypatch, prefect_harness):
    import prefect.artifacts

    from flows.build_pairs import build_pairs
    sampler = ScriptedSampler()
    monkeypatch.setattr("samplers.get_sampler", lambda cfg: sampler)
    monkeypatch.setattr(cost, "prompt_counter", lambda cfg: (sampler.prompt_tokens, "scripted"))
    progress = []
    original = prefect.artifacts.update_progress_artifact

    def recording(artifact_id, value, *args, **kwargs):
        progress.append(round(value, 1))
        return original(artifact_id, value, *args, **kwargs)
    monkeypatch.setattr(prefect.artifacts, "update_progress_artifact", recording)

    base = dict(output_dir=str(tmp_path / "runs"), batch_size=2, prompts={"limit": 4},
                sampler={"k": 4, "max_new_tokens": 10})
    manifest = build_pairs(config=BuildConfig(**base))
    assert manifest["batches"]["computed"] == 2
    # 4 prompts in 2 batches: 25% and 75% can only come from inside a batch (its first prompt sampled)
    assert 25.0 in progress and 75.0 in progress and progress[-1] == 100.0

    from pipelines.loaders import load_prompts
    eight = BuildConfig(**{**base, "prompts": {"limit": 8}})
    per_prompt = [sampler.prompt_tokens(list(m)) + 4 * 10 for m in load_prompts(eight.prompts)[0]["messages"]]
    limit = sum(per_prompt[:4])  # the bounds of the first two batches: a third cannot fit on top of what they spend
    stopped = build_pairs(config=eight.model_copy(update={"budget": eight.budget.model_copy(
        update={"max_total_tokens": limit})}))
    b = stopped["budget"]
    assert b["stopped"] and b["spent"] <= limit and b["batches_not_run"] == 2 and b["prompts_not_sampled"] == 4
    assert stopped["batches"] == {"total": 4, "computed": 0, "resumed": 2}  # the shards of the run above
    drops = pd.read_parquet(f"{stopped['run_dir']}/drops.parquet")
    assert (drops["reason"] == "budget_exhausted").sum() == 4
