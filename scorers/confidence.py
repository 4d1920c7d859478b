"""Confidence: the policy's geometric-mean token probability of its own response, exp(logprob_sum / tokens).

Why it is in the default reward: correctness alone is 0/1, so with k=4 samples a prompt's rewards take two
values and the mu-2sigma rule of "Finding the Sweet Spot" degenerates to max-min. A small continuous signal
(weight 0.1, range (0, 1]) orders responses *within* the correct and the incorrect group without ever letting a
confident wrong answer beat a correct one. Model self-certainty is a known label-free reward signal (e.g.
"Learning to Reason without External Rewards", Zhao et al. 2025). Set its weight to 0 (or drop it from
`scorers`) for pure correctness. The log-probabilities come with sampling (every backend records them at
temperature 1; `sampler.logprobs: false` turns them off, which a build with this scorer refuses).
"""

from __future__ import annotations

import math

import pandas as pd

from scorers import score_rows


class ConfidenceScorer:
    name = "confidence"

    def score(self, candidates: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
        scores, details, errors = [], [], []
        for lp, n in zip(candidates["logprob_sum"], candidates["completion_tokens"]):
            if lp is None or pd.isna(lp) or not n:
                scores.append(None)
                details.append(None)
                errors.append("sampler recorded no log-probabilities" if not n == 0 else "empty completion")
                continue
            scores.append(math.exp(float(lp) / int(n)))
            details.append({"mean_logprob": float(lp) / int(n), "tokens": int(n)})
            errors.append(None)
        return score_rows(candidates, self.name, scores, details, errors)
