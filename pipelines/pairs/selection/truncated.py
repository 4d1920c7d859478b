"""Pool filter `drop_truncated`: responses cut at the token cap (`finish_reason == "length"`) leave the pool.

A response that hit `max_new_tokens` ends mid-sentence and often before its final answer. As the chosen side it
teaches the policy to stop mid-sentence; as the rejected side it teaches that "being cut" is what is wrong. Both
are artifacts of the sampling budget, not preferences, so the filter drops them before the rule runs (reason
`truncated`); a prompt left with fewer than two responses is then `too_few_valid`.
"""

from __future__ import annotations

import pandas as pd

from pipelines.core import schema


def drop_truncated(pool: pd.DataFrame, ctx) -> tuple[pd.DataFrame, pd.DataFrame]:
    if ctx is None or ctx.candidates is None:
        raise ValueError("drop_truncated needs the SelectionContext (the candidates' finish reasons)")
    finish = ctx.candidates.set_index("candidate_id")["finish_reason"].reindex(pool["candidate_id"]).to_numpy()
    cut = finish == "length"
    gone = pool[cut]
    tokens = ctx.candidates.set_index("candidate_id")["completion_tokens"].reindex(gone["candidate_id"])
    detail = [f"finish_reason length after {int(t)} tokens" if pd.notna(t) else "finish_reason length"
              for t in tokens]
    drops = schema.drop_rows(gone["prompt_id"], "filter", "truncated", detail, rule="drop_truncated",
                             candidate_ids=gone["candidate_id"])
    return pool[~cut], drops
