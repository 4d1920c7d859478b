"""Every table pairsmith reads or writes, defined once.

A run is five tables that flow through the stages (datatrove style: small blocks over one record type):

    prompts -> candidates -> scores -> pairs
                                 \\-> drops (every prompt or candidate that did not end in a pair, with a reason)

Ids are content hashes (pipelines/core/ids.py). Every drop row is made by `drop_rows` (or `DropLog`, which
collects rows and hands them to it), which refuses a reason that is not in REASONS.
"""

from __future__ import annotations

import functools
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

PROMPTS = pa.schema([
    ("prompt_id", pa.string()),
    ("source", pa.string()),        # file (or dataset) the prompt came from
    ("row", pa.int64()),            # 1-based line/row number in the source, for error messages
    ("messages", MESSAGES),          # the conversation to complete (TRL conversational "prompt")
    ("reference", pa.string()),     # ground truth (math answer, unit tests, reference answer); may be null
    ("meta", pa.string()),          # JSON object with anything else the loader kept (task id, template, ...)
])

CANDIDATES = pa.schema([
    ("candidate_id", pa.string()),
    ("prompt_id", pa.string()),
    ("sample_index", pa.int32()),   # 0..k-1 within the prompt
    ("text", pa.string()),
    ("finish_reason", pa.string()),  # "stop" (end of sequence) or "length" (hit max_new_tokens)
    ("prompt_tokens", pa.int32()),
    ("completion_tokens", pa.int32()),
    ("logprob_sum", pa.float64()),  # sum of the policy's log-probabilities of the sampled tokens (T=1)
    ("sampler", pa.string()),
    ("model", pa.string()),
    ("seed", pa.int64()),
])

SCORES = pa.schema([
    ("candidate_id", pa.string()),
    ("prompt_id", pa.string()),
    ("scorer", pa.string()),
    ("score", pa.float64()),         # null exactly when error is set: never a made-up number
    ("details", pa.string()),       # JSON: parsed answer, per-test verdicts, judge text, ...
    ("error", pa.string()),
])

PAIRS = pa.schema([
    ("pair_id", pa.string()),
    ("prompt_id", pa.string()),
    ("prompt", MESSAGES),            # TRL DPOTrainer conversational format
    ("chosen", MESSAGES),
    ("rejected", MESSAGES),
    ("chosen_id", pa.string()),
    ("rejected_id", pa.string()),
    ("chosen_score", pa.float64()),
    ("rejected_score", pa.float64()),
    ("margin", pa.float64()),
    ("rule", pa.string()),
    ("weight", pa.float64()),        # 1.0 unless the rule weights pairs (best-of-set)
    ("tier", pa.int32()),            # curriculum tier (0 when no curriculum); training runs tiers in order
    ("model", pa.string()),          # the sampler model that wrote both responses
    # Scores a pair filter computed (null unless that filter ran): kept so training can sort or re-filter by them
    ("ches", pa.float64()),          # CHES under the ches filter's model (Razin et al. 2024)
    ("ln_ches", pa.float64()),       # length-normalised CHES
    ("implicit_margin", pa.float64()),  # DPO implicit margin beta*log-ratio (implicit_margin / dual_margin)
    ("dual_margin_p", pa.float64()),    # dual_margin's aggregated probability
])
# the PAIRS columns above that pair filters add to the pairs they keep
PAIR_FILTER_SCORES = ("ches", "ln_ches", "implicit_margin", "dual_margin_p")

DROPS = pa.schema([
    ("prompt_id", pa.string()),
    ("candidate_id", pa.string()),  # null when the whole prompt was dropped
    ("stage", pa.string()),         # load | sample | score | select | filter
    ("rule", pa.string()),
    ("reason", pa.string()),        # short machine-readable reason (see REASONS)
    ("detail", pa.string()),        # human-readable: file and line, values, ...
])

# Every reason a drop row may carry; tests and the manifest use this list.
REASONS = {
    "duplicate_prompt": "the same conversation appeared earlier in the input",
    "empty_prompt": "prompt is empty or not a string",
    "prompt_too_long": "prompt does not fit the model's context with room to generate",
    "sample_error": "the sampler could not sample this prompt (an endpoint kept failing; its error is the detail)",
    "budget_exhausted": "not sampled: its batch would have passed the run's token budget (budget.max_total_tokens)",
    "score_error": "a scorer could not score this candidate (its error is in scores.parquet)",
    "too_few_valid": "fewer than 2 responses with a valid reward",
    "zero_variance": "all valid responses have the same reward: no preference to learn",
    "tie": "the rule's chosen and rejected responses have the same reward",
    "not_selected": "candidate not used by the pair rule",
    "no_correct": "no response was verified correct",
    "no_incorrect": "every response was verified correct",
    "below_margin": "pair margin under the configured threshold",
    "length_ratio": "chosen response much longer than the rejected one (length control)",
    "no_reference": "prompt has no reference answer to verify against",
    "no_step_pair": "no node on the tree's best path has siblings with different Q values",
    "no_trajectory_pair": "the tree's complete solutions all have the same outcome (or there are none)",
    "no_wrong_solution": "every sampled solution was correct: no first error to correct",
    "no_correction": "no rollout from the prefix before the first error reached the answer with a different step",
    "ches_filtered": "pair among the highest CHES scores: likely to cause likelihood displacement in DPO",
    "implicit_margin_filtered": "DPO implicit margin (policy vs reference) outside the configured bounds",
    "low_dual_margin": "pair not in the top fraction by aggregated external + implicit margin",
    "duplicate_response": "near-duplicate (embedding cosine) of a higher-reward response to the same prompt",
    "truncated": "response cut at the token cap (finish_reason length): an artifact of the budget, not a preference",
    "not_diverse": "pair not picked by the quality + diversity subset selection",
}

# Step-level pairs (pipelines/step_pairs/). TRL standard (text) format: `prompt` is the chat-templated question
# plus the shared answer prefix, exactly the text the policy continued; `chosen`/`rejected` are the next steps
# (mode "trajectory": whole solutions). `messages` + `prefix` rebuild any other format.
STEP_PAIRS = pa.schema([
    ("pair_id", pa.string()),
    ("prompt_id", pa.string()),
    ("mode", pa.string()),           # step | trajectory | correction
    ("prompt", pa.string()),
    ("chosen", pa.string()),
    ("rejected", pa.string()),
    ("messages", MESSAGES),          # the conversation (system + user) the answer belongs to
    ("prefix", pa.string()),         # the earlier steps, delimiters included ("" at the first step)
    ("prefix_steps", pa.int32()),
    ("chosen_q", pa.float64()),      # MCTS Q (step), outcome (trajectory), rollout mean on the +-1 scale (correction)
    ("rejected_q", pa.float64()),
    ("chosen_visits", pa.int32()),   # MCTS visit counts; rollouts behind the value for correction rows
    ("rejected_visits", pa.int32()),
    ("margin", pa.float64()),
    ("chosen_node", pa.string()),    # node ids in trees/<prompt_id>.json (null for correction rows)
    ("rejected_node", pa.string()),
    ("model", pa.string()),
])

TABLES = {"prompts": PROMPTS, "candidates": CANDIDATES, "scores": SCORES, "pairs": PAIRS, "drops": DROPS}


def user_messages(text: str, system: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": text}]


def empty(schema: pa.Schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def to_table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Conform a frame to a schema: missing nullable columns become null, extra columns are an error."""
    extra = set(df.columns) - set(schema.names)
    if extra:
        raise ValueError(f"columns {sorted(extra)} are not in the schema ({schema.names})")
    columns = {}
    for field in schema:
        if field.name in df.columns:
            columns[field.name] = pa.array(df[field.name].tolist(), type=field.type, from_pandas=True)
        else:
            columns[field.name] = pa.nulls(len(df), type=field.type)
    return pa.table(columns, schema=schema)


def frame(rows: Iterable[dict], schema: pa.Schema) -> pd.DataFrame:
    """Rows (dicts) to a frame with exactly the schema's columns and types."""
    rows = list(rows)
    if not rows:
        return empty(schema)
    return to_table(pd.DataFrame(rows), schema).to_pandas()


STAGES = ("load", "sample", "score", "select", "filter")


def check_reason(reason: str) -> None:
    if reason not in REASONS:
        raise ValueError(f"unknown drop reason {reason!r}; add it to pipelines.core.schema.REASONS")


def drop_rows(prompt_ids: Iterable[str], stage: str | Iterable[str], reason: str | Iterable[str],
              detail: str | Iterable[str] = "", rule: str | None | Iterable[str | None] = None,
              candidate_ids: Iterable[str | None] | None = None) -> pd.DataFrame:
    """THE constructor of drop rows: one per prompt (and candidate, when given). Every other column is one value
    for all rows or one value per row. Columns are built as arrow string arrays (a Series/Index of strings or an
    arrow array is taken as is, without a Python loop). Refuses reasons missing from REASONS and unknown stages."""
    ids = _strings(prompt_ids)
    n = len(ids)
    columns = {
        "prompt_id": ids,
        "candidate_id": pa.nulls(n, pa.large_string()) if candidate_ids is None else _strings(candidate_ids),
        "stage": _column(stage, n), "rule": _column(rule, n), "reason": _column(reason, n),
        "detail": _column(detail, n),
    }
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"drop_rows: columns of different lengths {lengths}")
    for value in _distinct(columns["reason"], reason):
        check_reason(value)
    for value in _distinct(columns["stage"], stage):
        if value not in STAGES:
            raise ValueError(f"unknown drop stage {value!r}; known: {STAGES}")
    return pa.table(columns).to_pandas()


class DropLog:
    """Drop rows collected one at a time (loaders, step search), turned into a frame by `drop_rows`. The reason
    is checked when a row is added, so a bad reason fails where it is written."""

    def __init__(self):
        self._rows: list[tuple] = []

    def add(self, prompt_id: str, stage: str, reason: str, detail: str = "", rule: str | None = None,
            candidate_id: str | None = None) -> None:
        check_reason(reason)
        self._rows.append((prompt_id, candidate_id, stage, rule, reason, detail))

    def __len__(self) -> int:
        return len(self._rows)

    def frame(self) -> pd.DataFrame:
        if not self._rows:
            return empty(DROPS)
        prompt_ids, candidate_ids, stages, rules, reasons, details = (list(c) for c in zip(*self._rows))
        return drop_rows(prompt_ids, stages, reasons, details, rules, candidate_ids)


def _column(value, n: int) -> pa.Array | pa.ChunkedArray:
    if value is None or isinstance(value, str):
        return constant(value, n)
    return _strings(value)


CONSTANT_BLOCK_ROWS = 1 << 15


def constant(value: str | None, n: int) -> pa.Array | pa.ChunkedArray:
    """n copies of value as a large_string column. Beyond one block, chunks that all point at one cached block of
    that value: no memory and no fill per row. (At 1M candidates select's not_selected rows have three constant
    columns, stage/rule/reason: 39 MB of fresh pages per call as pa.repeat, its largest single cost where fresh
    pages fault slowly.) A block is 32k rows, at most ~1 MB for a value of 24 characters; 64 values are kept."""
    scalar = pa.scalar(value, pa.large_string())
    if n <= CONSTANT_BLOCK_ROWS:
        return pa.repeat(scalar, n)  # not a slice of the block: a pickled slice carries the whole block
    full, rest = divmod(n, CONSTANT_BLOCK_ROWS)
    return pa.chunked_array([_block(value)] * full + ([pa.repeat(scalar, rest)] if rest else []),
                            type=pa.large_string())


@functools.lru_cache(maxsize=64)
def _block(value: str | None) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.large_string()), CONSTANT_BLOCK_ROWS)


def _distinct(column: pa.Array, given) -> list:
    if given is None or isinstance(given, str):
        return [] if given is None or len(column) == 0 else [given]
    return [v for v in pa.compute.unique(column).to_pylist() if v is not None]


def _strings(values) -> pa.Array | pa.ChunkedArray:
    """Any sequence of strings (None/NaN = null) as an arrow large_string array (a chunked one stays chunked: a
    table takes its chunks as they are, without a copy)."""
    if isinstance(values, pa.ChunkedArray):
        pass
    elif isinstance(values, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        values = pa.array(values if isinstance(values, pd.api.extensions.ExtensionArray) else values.array,
                          from_pandas=True)
    elif not isinstance(values, pa.Array):
        values = pa.array(values if isinstance(values, (list, np.ndarray)) else list(values), from_pandas=True)
    return values.cast(pa.large_string())
