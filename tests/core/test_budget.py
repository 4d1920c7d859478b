"""The token budget's scheduler (pipelines/core/executors.py:schedule): batches start in order while the tokens
spent + the bounds of the running batches + the next bound fit; the stop point does not depend on how many run at
once or in which order they finish."""

from __future__ import annotations

from types import SimpleNamespace

from pipelines.core.executors import schedule
from pipelines.core.run import Batch, BatchResult


def fake_run(bounds, limit):
    batches = [Batch(i, [f"p{i}a", f"p{i}b"], {}) for i in range(len(bounds))]
    return SimpleNamespace(batches=batches, bounds=bounds,
                           config=SimpleNamespace(budget=SimpleNamespace(max_total_tokens=limit)))


def run_schedule(run, actual, finish_last_first: bool = False):
    """submit/next_done over fake batches of `actual[i]` tokens; of the running batches the first started finishes
    first, or the last one (finish_last_first)."""
    started, log = [], []

    def submit(batch):
        started.append(batch.index)
        return batch.index

    def next_done(handles):
        index = max(handles) if finish_last_first else min(handles)
        return index, BatchResult(index, 2, False, tokens={"prompt": 0, "generated": actual[index]})

    results = schedule(run, submit, next_done, lambda r: None, log=log.append)
    return results, started, log


def sequential_stop(bounds, actual, limit):
    """The rule, written out: batch i runs iff the actual tokens of batches < i plus its bound fit."""
    spent, ran = 0, []
    for i, bound in enumerate(bounds):
        if spent + bound > limit:
            break
        ran.append(i)
        spent += actual[i]
    return ran


def test_no_budget_starts_everything_at_once():
    run = fake_run([10, 10, 10], None)
    run.bounds = None
    results, started, _ = run_schedule(run, [5, 5, 5])
    assert started == [0, 1, 2] and not any(r.budget_exhausted for r in results)


def test_the_budget_stops_at_the_same_batch_however_batches_finish():
    bounds, actual = [100, 100, 100, 100, 100], [60, 70, 100, 50, 40]
    for limit in (99, 100, 160, 230, 330, 400, 10_000):
        expected = sequential_stop(bounds, actual, limit)
        for finish_last_first in (False, True):
            results, started, log = run_schedule(fake_run(bounds, limit), actual, finish_last_first)
            ran = [r.index for r in results if not r.budget_exhausted]
            assert ran == expected == sorted(started), (limit, finish_last_first)
            assert [r.index for r in results] == list(range(5))  # one result per batch, in order
            if len(expected) < 5:
                assert log and log[0].startswith(f"budget: stopped before batch {len(expected) + 1}/5")
                assert f"{2 * (5 - len(expected))} prompts not sampled" in log[0]
            else:
                assert log == []


def test_running_batches_hold_their_bound_until_they_finish():
    """With room for two bounds, two start at once; the third waits for the first to finish (and fits then)."""
    bounds, actual, limit = [100, 100, 100], [10, 10, 10], 200
    order = []
    run = fake_run(bounds, limit)

    def submit(batch):
        order.append(("start", batch.index))
        return batch.index

    def next_done(handles):
        order.append(("done", min(handles)))
        return min(handles), BatchResult(min(handles), 2, False, tokens={"generated": actual[min(handles)]})

    results = schedule(run, submit, next_done, lambda r: None, log=lambda m: None)
    assert order[:3] == [("start", 0), ("start", 1), ("done", 0)] and ("start", 2) in order
    assert not any(r.budget_exhausted for r in results)
