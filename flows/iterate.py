"""iterate: on-policy DPO rounds: sample with the last policy -> score -> select -> train -> evaluate, resumable.

    python -m flows.iterate --rounds 3 --build.prompts.limit 64 --train.max_steps 50
    python -m flows.iterate --config configs/iterate.yaml       # rerun the same command to resume
    python -m flows.iterate --help

Thin: the rounds, resume and the manifest are pipelines.iteration.rounds.run; here each phase of a round is a
Prefect task. A round's build runs on its own `build.executor` (local, or Ray) inside its task.
"""

import sys

from flows.lazy import FlowModule
from pipelines.iteration.config import IterateConfig


def make_flow():
    from prefect import flow, get_run_logger, task
    from prefect.cache_policies import NO_CACHE

    from pipelines.evaluation import evaluate
    from pipelines.iteration import rounds
    from pipelines.pairs import build
    from pipelines.training import dpo

    # resume is the rounds' own markers (manifest.json, metrics.json, eval.json), as in build_pairs
    @task(name="build-pairs", cache_policy=NO_CACHE, task_run_name="build-{config.run_id}")
    def build_task(config):
        return build.run_local(config, log=get_run_logger().info)

    @task(name="train-dpo", cache_policy=NO_CACHE)
    def train_task(config):
        return dpo.run(config, log=get_run_logger().info)

    @task(name="evaluate", cache_policy=NO_CACHE)
    def eval_task(config):
        return evaluate.run(config, log=get_run_logger().info)

    @flow(name="iterate", log_prints=True)  # defined in flows.iterate: its entrypoint is flows.iterate.iterate
    def iterate(config: IterateConfig = IterateConfig()) -> dict:
        phases = rounds.RoundPhases(build=build_task, train=train_task, evaluate=eval_task)
        return rounds.run(config, phases=phases, log=get_run_logger().info)

    return iterate


_module = FlowModule(
    "iterate", IterateConfig, make_flow, "pipelines.iteration.rounds:run", "pipelines.iteration.rounds:summary_text",
    "python -m flows.iterate",
    "Iterative on-policy DPO: each round samples with the previous round's model, builds pairs, trains "
    "and evaluates on held-out prompts; resumable by round.")
__getattr__, main = _module.getattr, _module.main

if __name__ == "__main__":
    sys.exit(main())
