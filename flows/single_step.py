"""Flows whose work is one call of a pipelines function (train_dpo, evaluate): one Prefect task inside one flow.

`single_step_flow("train-dpo", "pipelines.train:run", TrainConfig)` builds the flow lazily (Prefect is imported
here, only when a flow runs); `local(...)` and `summary(...)` are the matching run_cli callbacks.
No `from __future__ import annotations`: Prefect reads the flow parameter's annotation (the config class) at
run time, and a string naming a local variable would not resolve.
"""

import importlib


def _target(spec: str):
    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)


def single_step_flow(name: str, target: str, config_cls):
    from prefect import flow, get_run_logger, task
    from prefect.cache_policies import NO_CACHE

    @task(name=name, cache_policy=NO_CACHE)
    def step(config):
        return _target(target)(config, log=get_run_logger().info)

    @flow(name=name, log_prints=True)
    def single(config: config_cls = config_cls()) -> dict:
        return step(config)

    single.__name__ = name.replace("-", "_")
    return single


def local(target: str):
    return lambda config: _target(target)(config)


def summary(target: str):
    return lambda result: _target(target)(result)
