"""dstc: minimax selection over a self-generated pass matrix.

After "DSTC: Direct Preference Learning with Only Self-Generated Tests and Code" (Liu et al. 2024). With the
`dstc` scorer (scorers/dstc.py) as the reward, a candidate's reward is its (weighted) share of the prompt's
self-generated tests it passes, so:
- chosen   = a program passing the most tests (ties: lower sample_index),
- rejected = a program passing the fewest.
Prompts where every program passes the same weighted share are dropped before the rule (zero_variance).

DSTC's test-code concatenation runs in the build after selection (`selection.dstc_concat: true`, see
pipelines/pairs/dstc_concat.py): it needs the scores' details, which a rule does not see.
"""

from __future__ import annotations

import pandas as pd

from pipelines.pairs.selection.max_min import max_min


def dstc(pool: pd.DataFrame) -> pd.DataFrame:
    """Most-passed vs least-passed program: max_min over the dstc reward."""
    return max_min(pool)
