"""Math scoring with a hard time bound per answer: pathological answers become `timeout` error rows, the rest is
scored normally, from Prefect-like worker threads too, and a build_pairs run with such answers finishes."""

from __future__ import annotations

import json
import logging
import threading
import time

import pandas as pd
import pytest

from pipelines.core import ids, schema
from scorers.math_verify_pool import MathVerifyPool

# answers whose value is astronomically large: sympy evaluates them and does not come back
PATHOLOGICAL = ["So the answer is $9^{9^{9^{9}}}$.", "The answer is $(10^{10})!$.", "It is $10^{10^{9}}$.",
                "The answer is $\\binom{10^{9}}{10^{8}}$."]


def test_pathological_answers_time_out_and_the_others_are_judged():
    pool = MathVerifyPool(workers=2, timeout_s=1.0)
    try:
        items = [("The answer is 19.", "19", False)] + [(t, "19", False) for t in PATHOLOGICAL] + \
                [("The answer is 20.", "19", False), ("Half of it: $\\frac{38}{2}$", "19", False)]
        t0 = time.perf_counter()
        out = pool.check(items)
        elapsed = time.perf_counter() - t0
    finally:
        pool.close()
    assert out[0] == {"correct": True, "extracted": ["19", "19"]}
    for o in out[1:1 + len(PATHOLOGICAL)]:
        assert o["reason"] == "timeout" and o["error"].startswith("timeout:"), o
    assert [o["correct"] for o in out[-2:]] == [False, True]
    # 4 timeouts of 1 s on 2 workers (+ start-up); without the bound this never returns
    assert elapsed < 60


def test_a_worker_stuck_past_the_hard_deadline_is_killed_and_replaced():
    """The worker's own alarm is set far beyond the parent's hard deadline, so only the kill can stop it."""
    pool = MathVerifyPool(workers=1, timeout_s=120.0, grace_s=-118.5)  # hard deadline: 1.5 s
    try:
        out = pool.check([(PATHOLOGICAL[0], "3", False), ("The answer is 3.", "3", False),
                          ("The answer is 4.", "3", False)])
    finally:
        pool.close()
    assert out[0]["reason"] == "timeout" and "worker killed" in out[0]["error"]
    assert [o["correct"] for o in out[1:]] == [True, False]  # resent to the replacement worker
    assert pool.restarts == 1


def test_the_bound_holds_inside_worker_threads(caplog, capfd):
    """Prefect runs tasks in worker threads, where SIGALRM cannot be used: scoring there must still be bounded,
    and math-verify's "Timeout is disabled" warnings must not reach the user."""
    from scorers.math_verify_scorer import MathVerifyScorer
    prompts = schema.frame([dict(prompt_id="p", source="s", row=1, messages=[{"role": "user", "content": "q"}],
                                 reference="19", meta="{}")], schema.PROMPTS)
    texts = ["The answer is 19.", PATHOLOGICAL[1], "The answer is 18."]
    cands = schema.frame([dict(candidate_id=ids.candidate_id("p", "m", 0, j, t), prompt_id="p", sample_index=j,
                               text=t, finish_reason="stop", prompt_tokens=1, completion_tokens=1, logprob_sum=-1.0,
                               sampler="scripted", model="m", seed=0) for j, t in enumerate(texts)],
                         schema.CANDIDATES)
    result = {}
    with caplog.at_level(logging.WARNING):
        worker = threading.Thread(target=lambda: result.update(
            scores=MathVerifyScorer(timeout_s=1.0).score(cands, prompts)))
        worker.start()
        worker.join(120)
    assert not worker.is_alive(), "scoring did not finish inside a worker thread"
    scores = result["scores"]
    assert list(scores["score"].iloc[[0, 2]]) == [1.0, 0.0]
    assert pd.isna(scores["score"].iloc[1]) and scores["error"].iloc[1].startswith("timeout:")
    details = json.loads(scores["details"].iloc[1])
    assert details["reason"] == "timeout" and details["timeout_s"] == 1.0 and details["reference"] == "19"
    captured = capfd.readouterr()
    assert "Timeout is disabled" not in caplog.text + captured.err + captured.out


def test_step_search_outcome_counts_a_timeout_as_wrong():
    from pipelines.step_pairs.outcome import MathOutcome
    outcome = MathOutcome(timeout_s=1.0)
    assert outcome("The answer is 7.", "7") == 1.0
    assert outcome(PATHOLOGICAL[0], "7") == -1.0
    assert outcome("The answer is 8.", "7") == -1.0
    assert outcome.timeouts == 1
    with pytest.raises(ValueError, match="does not parse"):
        outcome("The answer is 7.", "$")


class ScriptedMathPolicy:
    """Stands in for the policy of a build: per prompt one right-looking, one wrong and one pathological answer."""
    name, model_name, max_context = "transformers", "scripted", 4096

    def prompt_tokens(self, messages):
        return 10

    def generate(self, conversations, n, seeds, **kw):
        from samplers import Generation
        texts = ["The answer is 19.", "The answer is 5.", PATHOLOGICAL[1]]
        return [[Generation(texts[j % 3], "stop", 10, 5, -1.0 - j) for j in range(n)] for _ in conversations]


def test_build_pairs_with_pathological_answers_finishes(tmp_path, monkeypatch):
    import samplers
    from pipelines.pairs.build import run_local
    from pipelines.pairs.config import BuildConfig
    monkeypatch.setattr(samplers, "get_sampler", lambda cfg: ScriptedMathPolicy())
    config = BuildConfig.model_validate({
        "output_dir": str(tmp_path), "run_id": "patho", "prompts": {"limit": 4}, "batch_size": 2,
        "sampler": {"k": 3}, "scorers": [{"name": "math_verify", "params": {"timeout_s": 1.0}},
                                         {"name": "confidence", "weight": 0.1}],
        "selection": {"rule": "max_min"}})
    manifest = run_local(config)
    scores = pd.read_parquet(tmp_path / "patho" / "scores.parquet")
    cands = pd.read_parquet(tmp_path / "patho" / "candidates.parquet")
    drops = pd.read_parquet(tmp_path / "patho" / "drops.parquet")
    patho_ids = set(cands.loc[cands["text"] == PATHOLOGICAL[1], "candidate_id"])
    mv = scores[scores["scorer"] == "math_verify"].set_index("candidate_id")
    assert len(patho_ids) == 4
    assert mv.loc[list(patho_ids), "score"].isna().all()
    assert mv.loc[list(patho_ids), "error"].str.startswith("timeout:").all()
    assert all(json.loads(d)["reason"] == "timeout" for d in mv.loc[list(patho_ids), "details"])
    assert mv.drop(index=list(patho_ids))["error"].isna().all()  # every other answer judged normally
    score_errors = drops[drops["reason"] == "score_error"]
    assert set(score_errors["candidate_id"]) == patho_ids
    assert manifest["counts"]["score_errors"] == 4 and manifest["counts"]["pairs"] == 4


STUCK_PARENT = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from scorers.math_verify_pool import MathVerifyPool
pool = MathVerifyPool(workers=1, timeout_s=600.0)
def work():  # started from a thread that ends: the worker must not die with the thread, only with the process
    pool.start()
t = threading.Thread(target=work)
t.start(); t.join()
print(pool.workers[0].proc.pid, flush=True)
pool.check([(sys.argv[2], "3", False)])  # stuck for up to 10 minutes
"""


def test_a_stuck_worker_dies_with_its_parent_process(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path
    root = str(Path(__file__).resolve().parents[2])
    parent = subprocess.Popen([sys.executable, "-c", STUCK_PARENT, root, PATHOLOGICAL[0]], stdout=subprocess.PIPE,
                              text=True)
    worker = int(parent.stdout.readline())
    time.sleep(3)  # the worker is computing now
    assert os.path.exists(f"/proc/{worker}")
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _running(worker):
        assert time.monotonic() < deadline, "the worker outlived its parent"
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
