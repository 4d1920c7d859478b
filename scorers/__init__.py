"""Scorers: one protocol, implementations chosen by name (`scorers: [{name: ..., weight: ..., params: {...}}]`).

A scorer turns candidates into rows of the SCORES table (candidate_id, prompt_id, scorer, score, details,
error). When it cannot score a candidate it writes an error and a null score, never a made-up number; the
selection stage then drops that candidate with reason `score_error`.
"""

from __future__ import annotations

import json
from typing import Protocol

import pandas as pd

from pipelines.core import schema
from pipelines.core.registry import lookup


class Scorer(Protocol):
    name: str

    def score(self, candidates: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
        """SCORES rows, exactly one per candidate."""


# name -> "module:Class"; imported only when used, so heavy scorers cost nothing until chosen.
SCORERS = {
    "math_verify": "scorers.math_verify_scorer:MathVerifyScorer",
    "confidence": "scorers.confidence:ConfidenceScorer",
    "execution": "scorers.execution:ExecutionScorer",
    "dstc": "scorers.dstc:DSTCScorer",
    "reward_model": "scorers.reward_model:RewardModelScorer",
    "judge": "scorers.judge:PointwiseJudgeScorer",
    "pairwise_judge": "scorers.judge:PairwiseJudgeScorer",
    "reference_similarity": "scorers.reference_similarity:ReferenceSimilarityScorer",
}


def get_scorer(name: str, params: dict | None = None) -> Scorer:
    return lookup(SCORERS, name, "scorer")(**(params or {}))


def score_rows(candidates: pd.DataFrame, scorer: str, scores: list[float | None], details: list[dict | None],
               errors: list[str | None]) -> pd.DataFrame:
    """Assemble SCORES rows; enforces 'score is null exactly when error is set'."""
    for s, e in zip(scores, errors):
        if (s is None) != (e is not None):
            raise ValueError(f"scorer {scorer}: a row must have a score or an error, not both/neither ({s}, {e})")
    return pd.DataFrame({
        "candidate_id": candidates["candidate_id"].to_numpy(),
        "prompt_id": candidates["prompt_id"].to_numpy(),
        "scorer": scorer,
        "score": pd.array(scores, dtype="Float64").astype("float64"),
        "details": [None if d is None else json.dumps(d, ensure_ascii=False, default=str) for d in details],
        "error": errors,
    }, columns=schema.SCORES.names)
