"""First-error correction (Step-DPO, Lai et al. 2024): a wrong solution's first wrong step vs a step that works.

For each prompt of a batch (every model call covers the whole batch):
1. sample `samples` full solutions; verify them; keep up to `max_wrong` wrong ones (complete ones only: a text cut
   at solution_tokens has no final answer yet, so it is not a wrong solution);
2. split each into steps (the search's delimiters) and run `rollouts` Monte Carlo completions from every prefix
   steps[:i], i = 0 .. min(len, max_steps) - 1 (i = 0 is the bare question); the full wrong solution itself counts
   as a prefix with no correct completion;
3. the first wrong step is step j, the first prefix steps[:j] from which no rollout reaches the right answer;
   the rollouts from steps[:j-1] include a correct one (j is the first failure), so that rollout is the correcting
   continuation: chosen = its first step, rejected = the original step j. No new sampling is needed for it.
A prompt gets a drop row when every solution was right, when even the bare question has no correct rollout, or
when the only correct continuations start with the very step that was judged wrong.
"""

from __future__ import annotations

import re

from pipelines.core import ids
from pipelines.step_pairs.extract import _row
from pipelines.step_pairs.mcts import SearchStats, Tree


def split_steps(text: str, delimiters: list[str]) -> list[tuple[str, str]]:
    """[(step, delimiter that ended it)], lossless: "".join(s + d) == text. The last step has delimiter ""."""
    pattern = "|".join(re.escape(d) for d in sorted(delimiters, key=len, reverse=True) if d)
    out, start = [], 0
    for m in re.finditer(pattern, text) if pattern else []:
        if m.start() == start and out:  # a delimiter right after a delimiter: keep it in the previous one
            out[-1] = (out[-1][0], out[-1][1] + m.group())
        else:
            out.append((text[start:m.start()], m.group()))
        start = m.end()
    if start < len(text) or not out:
        out.append((text[start:], ""))
    return out


def _seed(seed: int, prompt_id: str, *key) -> int:
    return int(ids.stable_hash("first-error", seed, prompt_id, *key), 16) % (2**31 - 1)


def first_error_pairs(trees: list[Tree], sampler, outcome, cfg, delimiters: list[str],
                      stats: SearchStats) -> tuple[list[dict], list[dict]]:
    """(STEP_PAIRS rows without `prompt`, drop rows) for the prompts of `trees` (used for messages/reference).

    Engine calls and sampled tokens are counted in `stats` as "correction_sample" and "correction_rollout"."""
    rows, drops = [], []
    if not trees:
        return rows, drops
    sols = sampler.generate([list(t.messages) for t in trees], cfg.samples,
                            [_seed(t.seed, t.prompt_id, "solutions") for t in trees],
                            max_new_tokens=cfg.solution_tokens)
    stats.count("correction_sample", sols)
    jobs = []  # (tree, steps, prefix lengths to roll out)
    for tree, gens in zip(trees, sols):
        ended = [g for g in gens if g.finish_reason == "stop"]
        wrong = [g.text for g in ended if outcome(g.text, tree.reference) < 0][:cfg.max_wrong]
        if not wrong:
            drops.append(dict(prompt_id=tree.prompt_id, reason="no_wrong_solution",
                              detail=f"{len(gens)} sampled solutions: {len(gens) - len(ended)} cut at "
                                     f"solution_tokens, the other {len(ended)} verified correct"))
            continue
        for text in wrong:
            steps = split_steps(text.strip("\n"), delimiters)
            jobs.append((tree, steps, list(range(min(len(steps), cfg.max_steps)))))
    convs, seeds, keys = [], [], []
    for j, (tree, steps, prefixes) in enumerate(jobs):
        for i in prefixes:
            prefix = "".join(s + d for s, d in steps[:i])
            convs.append(list(tree.messages) + ([{"role": "assistant", "content": prefix}] if prefix else []))
            seeds.append(_seed(tree.seed, tree.prompt_id, "rollout", prefix))
            keys.append((j, i))
    completions = {}
    if convs:
        outs = sampler.generate(convs, cfg.rollouts, seeds, continue_final=True, max_new_tokens=cfg.rollout_tokens)
        stats.count("correction_rollout", outs)
        completions = dict(zip(keys, outs))
    seen = set()
    for j, (tree, steps, prefixes) in enumerate(jobs):
        row, why = _correct(tree, steps, prefixes, {i: completions[(j, i)] for i in prefixes}, outcome,
                            delimiters, cfg.rollouts)
        if row is not None and row["pair_id"] not in seen:
            seen.add(row["pair_id"])
            rows.append(row)
        elif row is None:
            drops.append(dict(prompt_id=tree.prompt_id, reason="no_correction", detail=why))
    paired = {r["prompt_id"] for r in rows}  # a prompt with one corrected solution is not dropped for another
    drops = [d for d in drops if d["prompt_id"] not in paired or d["reason"] != "no_correction"]
    return rows, drops


def _correct(tree: Tree, steps, prefixes, rollouts: dict, outcome, delimiters, n_rollouts: int):
    """One wrong solution -> (pair row, "") or (None, why)."""
    scored = {}
    for i in prefixes:
        prefix = "".join(s + d for s, d in steps[:i])
        scored[i] = [(g.text, outcome(prefix + g.text, tree.reference)) for g in rollouts[i]]
    correct = {i: [t for t, o in scored[i] if o > 0] for i in prefixes}
    # first prefix steps[:j] (j >= 1) with no correct rollout; the full solution (j = len) is wrong by definition
    first = len(steps)
    for j in range(1, len(steps)):
        if j not in correct:
            return None, f"the first wrong step lies beyond the {len(prefixes)} prefixes checked"
        if not correct[j]:
            first = j
            break
    before = first - 1
    if not correct[before]:
        return None, "no rollout from the question reaches the answer"
    wrong_step = steps[first - 1][0]
    for text in correct[before]:
        step = split_steps(text.strip("\n"), delimiters)[0][0]
        if step.strip() and step.strip() != wrong_step.strip():
            prefix = "".join(s + d for s, d in steps[:before])
            mean = lambda i: sum(o for _, o in scored[i]) / len(scored[i])  # noqa: E731
            rejected_q = mean(first) if first in scored else -1.0
            return _row(tree, "correction", prefix, before, step, wrong_step, mean(before), rejected_q,
                        n_rollouts, n_rollouts if first in scored else 0, None, None), ""
    return None, f"every correct continuation after step {before} starts with the step judged wrong"
