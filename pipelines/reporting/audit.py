"""The pair-quality audit of a run: the numbers a person checks before training on the pairs.

    audit = pair_audit(pairs, candidates, scores)      # -> manifest["audit"], summary, report.html, dataset card

- verified: for each verifier that ran (a scorer whose 1.0 means "right": math_verify, execution), the share of
  pairs whose chosen response is right, whose rejected one is, and whose two are both wrong (a pair of two wrong
  answers teaches an order between two wrong answers);
- truncated: the share of pairs whose chosen / rejected response ended at the token cap (`finish_reason ==
  "length"`): a chosen answer cut mid-sentence teaches the model to stop mid-sentence;
- identical: pairs whose chosen and rejected texts are the same (nothing to learn; usually a dedup miss);
- length: the chosen/rejected length ratio in tokens (median) and the share of pairs whose chosen response is
  longer: length bias is the best-known artifact of preference data (a reward that prefers long answers);
- margin: quantiles of the rule's reward margin.
Texts come from the pairs themselves (what training sees, after any concatenation); finish reasons and token counts
from the candidates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# scorers whose score 1.0 means "verified right" (math answer equivalent; every test passed)
VERIFIERS = ("math_verify", "execution")
MARGIN_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def _last_text(messages) -> str:
    messages = list(messages)
    return messages[-1]["content"] if messages else ""


def _share(mask) -> float:
    return round(float(np.mean(mask)), 4) if len(mask) else 0.0


def pair_audit(pairs: pd.DataFrame, candidates: pd.DataFrame, scores: pd.DataFrame) -> dict:
    """The audit as a JSON-ready dict (see the module docstring). candidates: candidate_id, finish_reason,
    completion_tokens; scores: candidate_id, scorer, score (rows of other scorers are ignored)."""
    return summarize(audit_columns(pairs, candidates, scores))


def audit_columns(pairs: pd.DataFrame, candidates: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """What the audit needs of each pair, a few numbers and flags (no texts): a streamed finalize keeps these per
    batch and summarizes them once (~40 bytes a pair), the pairs themselves are never all in memory."""
    by_id = candidates.set_index("candidate_id")
    chosen, rejected = pairs["chosen_id"].to_numpy(), pairs["rejected_id"].to_numpy()
    cols: dict = {}
    for name in VERIFIERS:
        rows = scores[(scores["scorer"] == name) & scores["score"].notna()]
        if rows.empty:
            continue
        right = rows.set_index("candidate_id")["score"] >= 1.0
        cols[f"{name}:chosen"] = right.reindex(chosen).fillna(False).to_numpy(dtype=bool)
        cols[f"{name}:rejected"] = right.reindex(rejected).fillna(False).to_numpy(dtype=bool)
    finish = by_id["finish_reason"]
    cols["truncated_chosen"] = finish.reindex(chosen).to_numpy() == "length"
    cols["truncated_rejected"] = finish.reindex(rejected).to_numpy() == "length"
    texts_c = pairs["chosen"].map(_last_text).to_numpy()
    texts_r = pairs["rejected"].map(_last_text).to_numpy()
    cols["identical"] = texts_c == texts_r
    tokens = by_id["completion_tokens"].astype("float64")
    len_c, len_r = tokens.reindex(chosen).to_numpy(), tokens.reindex(rejected).to_numpy()
    # a concatenated or externally built pair may have no token count: fall back to characters
    missing = np.isnan(len_c) | np.isnan(len_r)
    cols["len_chosen"] = np.where(missing, [len(t) for t in texts_c], len_c)
    cols["len_rejected"] = np.where(missing, [len(t) for t in texts_r], len_r)
    cols["len_in_chars"] = missing
    cols["margin"] = pairs["margin"].to_numpy(dtype="float64")
    return pd.DataFrame(cols)


def summarize(cols: pd.DataFrame) -> dict:
    """The audit dict of audit_columns' rows (of one frame, or of pieces concatenated: a verifier missing from
    a piece counts as "not right" there, as it would in one frame)."""
    n = len(cols)
    if n == 0:
        return {"pairs": 0}
    audit: dict = {"pairs": n, "verified": {}}
    for name in VERIFIERS:
        if f"{name}:chosen" not in cols:
            continue
        c_right = cols[f"{name}:chosen"].fillna(False).to_numpy(dtype=bool)
        r_right = cols[f"{name}:rejected"].fillna(False).to_numpy(dtype=bool)
        audit["verified"][name] = {"chosen_right": _share(c_right), "rejected_right": _share(r_right),
                                   "both_wrong": _share(~c_right & ~r_right), "both_right": _share(c_right & r_right)}
    audit["truncated"] = {"chosen": _share(cols["truncated_chosen"].to_numpy(dtype=bool)),
                          "rejected": _share(cols["truncated_rejected"].to_numpy(dtype=bool))}
    audit["identical"] = int(cols["identical"].sum())
    len_c, len_r = cols["len_chosen"].to_numpy(dtype="float64"), cols["len_rejected"].to_numpy(dtype="float64")
    ratio = len_c / np.maximum(len_r, 1.0)
    audit["length"] = {"median_ratio": round(float(np.median(ratio)), 4), "chosen_longer": _share(len_c > len_r),
                       "median_chosen": float(np.median(len_c)), "median_rejected": float(np.median(len_r)),
                       "unit": "tokens" if not cols["len_in_chars"].any()
                       else "tokens, characters where a count is missing"}
    margins = cols["margin"].to_numpy(dtype="float64")
    margins = margins[~np.isnan(margins)]
    audit["margin"] = {f"q{int(q * 100)}": round(float(np.quantile(margins, q)), 6) for q in MARGIN_QUANTILES} \
        if len(margins) else {}
    return audit


def audit_rows(audit: dict) -> list[tuple[str, str]]:
    """(what, value) rows for the summary, report.html and the dataset card."""
    if not audit.get("pairs"):
        return [("pairs", "0")]
    rows = []
    for name, v in audit["verified"].items():
        rows += [(f"chosen verified right ({name})", f"{v['chosen_right']:.1%}"),
                 (f"rejected verified right ({name})", f"{v['rejected_right']:.1%}"),
                 (f"both wrong ({name})", f"{v['both_wrong']:.1%}")]
    t, length = audit["truncated"], audit["length"]
    rows += [("chosen cut at the token cap", f"{t['chosen']:.1%}"), ("rejected cut at the token cap",
                                                                    f"{t['rejected']:.1%}"),
             ("identical chosen and rejected", str(audit["identical"])),
             ("chosen/rejected length, median ratio", f"{length['median_ratio']:.2f}"),
             ("chosen longer than rejected", f"{length['chosen_longer']:.1%}")]
    if audit["margin"]:
        m = audit["margin"]
        rows.append(("margin q10 / q50 / q90", f"{m['q10']:.3g} / {m['q50']:.3g} / {m['q90']:.3g}"))
    return rows
