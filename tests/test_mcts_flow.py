"""build_step_pairs end to end on the embedded model: 2 shipped math prompts, a tiny budget, few tokens.

The CLI run (--no-prefect) samples; the Prefect flow then runs the same config into the same output dir and must
resume every batch from the cache (no engine call) and give the same pairs.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines import schema

TINY = ["--prompts.limit", "2", "--batch_size", "2",
        "--mcts.iterations", "2", "--mcts.branching", "2", "--mcts.max_depth", "2", "--mcts.step_tokens", "8",
        "--mcts.rollouts", "1", "--mcts.rollout_tokens", "12",
        "--correction.samples", "2", "--correction.solution_tokens", "16", "--correction.max_steps", "2",
        "--correction.rollouts", "1", "--correction.rollout_tokens", "12"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, smollm_dir):
    from flows.build_step_pairs import main
    out = tmp_path_factory.mktemp("step-runs")
    assert main(["--no-prefect", "--output_dir", str(out), "--run_id", "cli", *TINY]) == 0
    return out


def test_cli_run_writes_a_complete_run_dir(cli_run):
    run = cli_run / "cli"
    manifest = json.loads((run / "manifest.json").read_text())
    pairs = pd.read_parquet(run / "step_pairs.parquet")
    drops = pd.read_parquet(run / "drops.parquet")
    prompts = pd.read_parquet(run / "prompts.parquet")
    assert len(prompts) == 2 and list(pairs.columns) == schema.STEP_PAIRS.names
    # nothing lost: every prompt has a pair or a drop row, and every drop reason is a known one
    assert set(prompts["prompt_id"]) <= set(pairs["prompt_id"]) | set(drops["prompt_id"])
    assert set(drops["reason"]) <= set(schema.REASONS)
    # per mode, a prompt either has a pair or a drop for that mode
    for mode, reason in (("step", "no_step_pair"), ("trajectory", "no_trajectory_pair")):
        for pid in prompts["prompt_id"]:
            has_pair = ((pairs["prompt_id"] == pid) & (pairs["mode"] == mode)).any()
            has_drop = ((drops["prompt_id"] == pid) & (drops["reason"] == reason)).any()
            assert has_pair != has_drop, (mode, pid)
    # batching: 2 rounds -> at most 2 expansion calls and 2 rollout calls for both trees together
    calls = manifest["engine_calls"]
    assert 1 <= calls["expand"] <= 2 and calls["rollout"] <= 2 and calls["self_eval"] == 0
    assert calls["correction_sample"] == 1 and calls.get("correction_rollout", 0) <= 1
    # trees saved per prompt, values consistent with the pairs
    trees = {p.stem: json.loads(p.read_text()) for p in (run / "trees").glob("*.json")}
    assert set(trees) == set(prompts["prompt_id"])
    for tree in trees.values():
        root = tree["nodes"][0]
        assert root["parent"] is None and root["N"] == 2          # two rounds, one visit each
    for row in pairs.itertuples():
        assert row.chosen != row.rejected and row.chosen_q > row.rejected_q
        question = prompts.set_index("prompt_id").loc[row.prompt_id, "messages"][-1]["content"]
        assert question in row.prompt and row.prompt.endswith(row.prefix)
        if row.mode == "step":
            nodes = {str(n["id"]): n for n in trees[row.prompt_id]["nodes"]}
            assert nodes[row.chosen_node]["Q"] == pytest.approx(row.chosen_q)
            assert nodes[row.chosen_node]["step"] == row.chosen
            assert nodes[row.chosen_node]["parent"] == nodes[row.rejected_node]["parent"]   # siblings
    assert manifest["counts"]["pairs"] == len(pairs)


def test_prefect_flow_resumes_the_same_batches(cli_run, prefect_harness):
    from flows.build_step_pairs import StepPairsConfig, build_step_pairs
    from flows.cli import parser, resolve_config
    args = parser(StepPairsConfig, "x", "y").parse_args(["--output_dir", str(cli_run), "--run_id", "flow", *TINY])
    config = resolve_config(StepPairsConfig, args)
    manifest = build_step_pairs(config=config)
    assert manifest["engine_calls"] == {} and manifest["batches"] == {"total": 1, "resumed": 1}
    cli = pd.read_parquet(cli_run / "cli" / "step_pairs.parquet")
    flow = pd.read_parquet(cli_run / "flow" / "step_pairs.parquet")
    assert sorted(cli["pair_id"]) == sorted(flow["pair_id"])
    assert len(list((cli_run / "flow" / "trees").glob("*.json"))) == 2
