"""The one helper behind every flow module: a Prefect flow built on first use, and the shared CLI.

A flow module declares itself and exports the two module hooks:

    _module = FlowModule.single_call("evaluate", "pipelines.evaluation.evaluate", EvalConfig, "description")
    __getattr__, main = _module.getattr, _module.main

Prefect is imported only when the flow object is first asked for (a PEP 562 module `__getattr__`), so `--help`
and config errors answer fast, while `from flows.build_pairs import build_pairs` and the deployment entrypoint
`flows.build_pairs.build_pairs` still give the flow object. The flow factories below cover the three shapes:
a batched build (batches as tasks on the executor's task runner), one pipeline call (train_dpo, evaluate), and
iterate's own (flows/iterate.py).

No `from __future__ import annotations` here: Prefect reads a flow parameter's annotation (the config class) at
run time, and a string naming a local variable would not resolve.
"""

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from pipelines.core.registry import load_object


@dataclass
class FlowModule:
    attr: str                      # the module attribute that holds the flow object
    config_cls: type               # the flow's pydantic config (its `config` parameter)
    make_flow: Callable[[], Any]   # builds the Prefect flow (imports Prefect)
    run_local: str                 # "module:function(config) -> result": the same work without Prefect
    summary: str                   # "module:function(result) -> str": what the CLI prints
    prog: str
    description: str
    dry_run: str | None = None     # "module:function(config) -> str": the plan, loading no model (batched builds)
    _flow: Any = field(default=None, repr=False)

    @classmethod
    def batched_build(cls, attr: str, build: str, config_cls, task_name: str, publish: str, description: str):
        """A build over the run core (pipelines.pairs.build, pipelines.step_pairs.build): batches as tasks."""
        name = attr.replace("_", "-")
        return cls(attr, config_cls, lambda: batched_build_flow(name, build, config_cls, task_name, publish, attr),
                   f"{build}:run_local", f"{build}:summary_text", f"python -m flows.{attr}", description,
                   dry_run=f"{build}:dry_run")

    @classmethod
    def single_call(cls, attr: str, target: str, config_cls, description: str):
        """One call of `target`'s run(config) (train_dpo, evaluate), summarised by its summary_text."""
        name = attr.replace("_", "-")
        return cls(attr, config_cls, lambda: single_call_flow(name, f"{target}:run", config_cls, attr),
                   f"{target}:run", f"{target}:summary_text", f"python -m flows.{attr}", description)

    def flow(self):
        if self._flow is None:
            self._flow = self.make_flow()
        return self._flow

    def getattr(self, name: str):
        if name == self.attr:
            return self.flow()
        raise AttributeError(name)

    def main(self, argv: list[str] | None = None) -> int:
        from flows import cli
        return cli.run_cli(argv, config_cls=self.config_cls, prog=self.prog, description=self.description,
                           make_flow=self.flow, summary=load_object(self.summary),
                           run_local=lambda config: load_object(self.run_local)(config),
                           dry_run=(lambda config: load_object(self.dry_run)(config)) if self.dry_run else None)


def as_module_attribute(fn, attr: str):
    """Name a flow function as the attribute `flows.<attr>.<attr>` that holds it: a deployment's entrypoint is
    the function's module and name, which a runner imports (the factories define it here, in flows.lazy)."""
    fn.__module__, fn.__name__, fn.__qualname__ = f"flows.{attr}", attr, attr
    return fn


def batched_build_flow(name: str, build: str, config_cls, task_name: str, publish: str, attr: str):
    """prepare -> one task per batch -> finalize -> publish, for a build module over the run core
    (pipelines.pairs.build, pipelines.step_pairs.build). `executor: ray` runs the batch tasks on prefect-ray's
    RayTaskRunner in a subflow, so the config picks the runner whether the run comes from the CLI, a deployment or
    the UI; otherwise one worker thread (a batch already saturates the cores or the GPU)."""
    from prefect import flow, get_run_logger, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows import quiet, reporting
    from pipelines.core.executors import ray_init_kwargs

    module = importlib.import_module(build)
    publish_report = load_object(publish)

    # Caching is the build's content-addressed shards (inputs + config + code), which also survive kill -9 and work
    # the same without Prefect; Prefect's own result cache would store a second copy.
    @task(name=task_name, cache_policy=NO_CACHE, task_run_name="batch-{batch.index}")
    def batch_task(run, batch, bar=None, prompts_before=0, total_prompts=0):
        on_fraction = reporting.live_bar(bar, prompts_before, len(batch.prompt_ids), total_prompts)
        return module.process_batch(run, batch, log=get_run_logger().info, on_fraction=on_fraction)

    def run_all(run, live: bool = True):
        # tasks get the run without its list of batches: Prefect walks every task's parameters (and Ray pickles
        # them), which for a million prompts would be ~100 MB per task. live: the batch tasks move the progress
        # bar while they sample (threads of this process); batches on Ray workers move it only when they finish
        shared, total = run.for_tasks(), sum(len(b.prompt_ids) for b in run.batches)
        return reporting.gather(run, lambda batch, bar, before: batch_task.submit(
            shared, batch, bar if live else None, before, total), key=f"{name}-progress")

    def ray_batches(run):
        """A subflow on the Ray task runner, with no parameters: a flow run's parameters are stored by the API,
        and the run (with its batches) is too large for that at scale."""
        @flow(name=f"{name}-batches-on-ray", log_prints=True, validate_parameters=False)
        def batches_on_ray():
            from prefect_ray.context import remote_options
            with remote_options(**run.config.executor.task_resources):
                return run_all(run, live=False)
        return batches_on_ray

    def build_flow(config: config_cls = config_cls()) -> dict:
        quiet.install()
        run = module.prepare(config)
        get_run_logger().info(f"run {run.config.run_id}: {len(run.batches)} batches -> {run.run_dir}")
        if config.executor.name == "ray":
            from prefect_ray import RayTaskRunner
            kwargs = ray_init_kwargs(config.executor)
            runner = RayTaskRunner(address=kwargs.pop("address"), init_kwargs=kwargs)
            results = ray_batches(run.resolved()).with_options(task_runner=runner)()
        else:
            results = run_all(run)
        manifest = module.finalize(run, results)
        publish_report(manifest)
        return manifest

    return flow(name=name, task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=True)(
        as_module_attribute(build_flow, attr))


def single_call_flow(name: str, target: str, config_cls, attr: str):
    """A flow whose work is one pipelines function (train_dpo, evaluate): one Prefect task inside one flow."""
    from prefect import flow, get_run_logger, task
    from prefect.cache_policies import NO_CACHE

    from flows import quiet

    @task(name=name, cache_policy=NO_CACHE)
    def call(config):
        return load_object(target)(config, log=get_run_logger().info)

    def single(config: config_cls = config_cls()) -> dict:
        quiet.install()
        return call(config)

    return flow(name=name, log_prints=True)(as_module_attribute(single, attr))
