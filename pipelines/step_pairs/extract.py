"""Pairs from a searched tree (pipelines/step_pairs/mcts.py): step pairs along the best path, and best-vs-worst
trajectories.

Step pairs (MCTS-DPO): walk the best path (most visited child, ties by Q); at every node with two or more
children, chosen = the child with the highest Q, rejected = the lowest-Q child (or the runner-up, MCTS-DPO's
default). A pair needs Q(chosen) - Q(rejected) > min_q_margin. Siblings share the prefix (the earlier steps),
so the pair is (question + prefix, chosen step, rejected step).

Trajectory pairs: every complete solution the search saw (final nodes, and the Monte Carlo rollouts that the
policy ended itself; text cut at a token cap is not a solution) ranked by verified outcome, then Q; chosen = best,
rejected = worst, if their outcomes differ.

Rows are STEP_PAIRS rows without the rendered prompt text: `render` (the sampler's chat template) fills it.
"""

from __future__ import annotations

from pipelines.core import ids
from pipelines.step_pairs.mcts import Node, Tree


def best_path(root: Node) -> list[Node]:
    path = [root]
    while path[-1].children:
        path.append(max(path[-1].children, key=lambda c: (c.N, c.Q, -c.id)))
    return path


def rank_siblings(node: Node, rejected: str = "lowest") -> tuple[Node, Node] | None:
    """(chosen, rejected) among node's children by Q (ties: more visits, then the earlier node); None if < 2."""
    steps = [c for c in node.children if c.step.strip()]  # an empty final step ("stop here") is no completion
    if len(steps) < 2:
        return None
    ranked = sorted(steps, key=lambda c: (-c.Q, -c.N, c.id))
    return ranked[0], (ranked[-1] if rejected == "lowest" else ranked[1])


def step_pairs(tree: Tree, rejected: str = "lowest", min_q_margin: float = 0.0) -> tuple[list[dict], str]:
    """Step pairs along the best path; also a reason text for when there are none."""
    rows, notes = [], []
    for depth, node in enumerate(best_path(tree.root)):
        pair = rank_siblings(node, rejected)
        if pair is None:
            continue
        good, bad = pair
        margin = good.Q - bad.Q
        if margin <= min_q_margin or good.step == bad.step:
            notes.append(f"depth {depth}: Q {good.Q:.3f} vs {bad.Q:.3f}")
            continue
        rows.append(_row(tree, "step", node.text(), depth, good.step, bad.step, good.Q, bad.Q, good.N, bad.N,
                         good.id, bad.id))
    if rows:
        return rows, ""
    return [], ("; ".join(notes) + f" (margin must exceed {min_q_margin})") if notes else \
        f"no node on the best path has two children ({len(tree.nodes)} nodes)"


def solutions(tree: Tree) -> list[dict]:
    """Every complete solution in the tree (ended by the policy): final nodes and rollouts, with outcome, Q, visits."""
    out = []
    for node in tree.nodes:
        if node.complete and node.outcome is not None:
            out.append(dict(text=node.text(), outcome=node.outcome, q=node.Q, visits=node.N, node=str(node.id)))
        for i, (completion, outcome, complete) in enumerate(node.rollouts):
            if not complete:
                continue
            out.append(dict(text=node.text() + completion, outcome=outcome, q=node.Q, visits=node.N,
                            node=f"{node.id}/rollout{i}"))
    return out


def trajectory_pair(tree: Tree) -> tuple[list[dict], str]:
    found = solutions(tree)
    if not found:
        cut = sum(not r[2] for n in tree.nodes for r in n.rollouts)
        return [], f"the search reached no complete solution ({cut} rollouts cut at the token cap)"
    ranked = sorted(found, key=lambda s: (-s["outcome"], -s["q"], s["node"]))
    best, worst = ranked[0], ranked[-1]
    if best["outcome"] <= worst["outcome"] or best["text"] == worst["text"]:
        return [], f"all {len(found)} complete solutions have outcome {best['outcome']:+.0f}"
    return [_row(tree, "trajectory", "", 0, best["text"], worst["text"], best["outcome"], worst["outcome"],
                 best["visits"], worst["visits"], best["node"], worst["node"])], ""


def _row(tree: Tree, mode: str, prefix: str, prefix_steps: int, chosen: str, rejected: str, chosen_q: float,
         rejected_q: float, chosen_visits: int, rejected_visits: int, chosen_node, rejected_node) -> dict:
    return dict(
        pair_id=ids.stable_hash("step-pair", mode, tree.prompt_id, prefix, chosen, rejected),
        prompt_id=tree.prompt_id, mode=mode, messages=list(tree.messages), prefix=prefix,
        prefix_steps=prefix_steps, chosen=chosen, rejected=rejected, chosen_q=float(chosen_q),
        rejected_q=float(rejected_q), chosen_visits=int(chosen_visits), rejected_visits=int(rejected_visits),
        margin=float(chosen_q - rejected_q),
        chosen_node=None if chosen_node is None else str(chosen_node),
        rejected_node=None if rejected_node is None else str(rejected_node))


def render_prompts(rows: list[dict], render) -> list[dict]:
    """Fill `prompt`: the chat-templated question plus the prefix, as the policy saw it while searching."""
    for row in rows:
        messages = list(row["messages"])
        if row["prefix"]:
            row["prompt"] = render(messages + [{"role": "assistant", "content": row["prefix"]}], True)
        else:
            row["prompt"] = render(messages, False)
    return rows
