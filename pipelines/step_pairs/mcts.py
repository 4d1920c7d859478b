"""Monte Carlo tree search over reasoning steps (MCTS-DPO, Xie et al. 2024), batched across many trees.

One tree per prompt; a node is one reasoning step (text up to a step delimiter, "\\n\\n" by default). Each search
round does one iteration in every tree of the batch:

    select   PUCT from the root to a leaf:  Q(c) + w_exp * p(c) * sqrt(N(parent)) / (1 + N(c))
    expand   b candidate next steps for ALL selected leaves in ONE sampler call (continue_final, stop=delimiters)
    evaluate terminal steps (the policy ended the answer): the math verifier, +1 / -1;
             other steps: the mean outcome of `rollouts` Monte Carlo completions, again ONE call for all new nodes
             of the round (no rollouts: the parent's value, i.e. r = 0, as MCTS-DPO does for a zero score);
             optional self-evaluation: the policy answers "is the last step correct?", ONE call per round
    backup   the MCTS-DPO rule (YuxiXie/MCTS-DPO, mcts_rl/algorithms/mcts/mcts/mcts.py, `_back_propagate`):
               r(c) = value(c) - value(parent)              (step reward: the change of the evaluated value)
               leaf:       Q = r + gamma * V,  N += 1        (V = 0 for a leaf that has no children)
               ancestors:  V = sum(max(1, N_c) * Q_c) / sum(max(1, N_c)) over children,  N += 1,  Q = r + gamma * V
             a fresh child starts at Q = V(parent) + r (as in the repository).

Constants as in the MCTS-DPO repository: w_exp = 1.0, gamma = 1.0, prior p = exp(logprob_sum / len ** 1.25)
(length-penalised geometric-mean token probability, `mcts_length_penalty` = 1.25); self-evaluation confidence
divided by max(depth - 3, 1), added to the value (their `eval_conf / max(parent_depth - 3, 1)`).

Differences from the repository, for a CPU budget: one expansion per iteration (the repository keeps expanding
down to a terminal node inside one iteration), with Monte Carlo rollouts standing in for the deeper expansions;
one global search per prompt instead of re-rooting after every step; the self-evaluation confidence is the fraction
of sampled "Yes" answers (the sampler protocol has no token-probability call).

Plain Python: the sampler and the outcome function are passed in (tests use fakes that count calls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from pipelines.core import ids


@dataclass
class Node:
    id: int
    parent: "Node | None"
    step: str = ""              # this step's text (without its delimiter); "" for the root
    delimiter: str = ""         # the stop string that ended the step ("" when the policy ended the answer)
    logprob: float | None = None
    n_tokens: int = 0
    depth: int = 0
    value: float = 0.0          # evaluation of the state after this step (outcome, rollout mean, + self-eval)
    terminal: bool = False      # the policy ended its answer here (EOS), or nothing could follow
    complete: bool = False      # the policy ended its answer here (EOS): a complete solution, not a cut-off one
    outcome: float | None = None  # verifier outcome (+1 / -1) of the complete answer, terminal nodes only
    rollouts: list = field(default_factory=list)  # [(completion text, outcome, ended by EOS)] of the MC rollouts
    self_eval: float | None = None
    N: int = 0
    V: float = 0.0
    Q: float = 0.0
    children: list = field(default_factory=list)

    @property
    def r(self) -> float:
        return self.value if self.parent is None else self.value - self.parent.value

    def prior(self, length_penalty: float) -> float | None:
        if self.logprob is None:
            return None
        return math.exp(self.logprob / max(self.n_tokens, 1) ** length_penalty)

    def path(self) -> list["Node"]:
        node, out = self, []
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def text(self) -> str:
        """The answer so far: every step of the path with its delimiter (the prefix the next step continues)."""
        return "".join(n.step + n.delimiter for n in self.path()[1:])


@dataclass
class Tree:
    prompt_id: str
    messages: list[dict]
    reference: str
    seed: int
    root: Node = field(default_factory=lambda: Node(id=0, parent=None))
    nodes: list = field(default_factory=list)
    rollouts_used: int = 0

    def __post_init__(self):
        if not self.nodes:
            self.nodes = [self.root]

    def add(self, parent: Node, **kw) -> Node:
        node = Node(id=len(self.nodes), parent=parent, depth=parent.depth + 1, **kw)
        self.nodes.append(node)
        parent.children.append(node)
        return node

    def conversation(self, node: Node) -> list[dict]:
        """The prompt that continues the answer after `node` (a partial assistant turn, unless at the root)."""
        prefix = node.text()
        return list(self.messages) + ([{"role": "assistant", "content": prefix}] if prefix else [])

    def node_seed(self, node: Node, kind: str) -> int:
        # depends on the tree only, never on the batch around it: the same prompt grows the same tree
        return int(ids.stable_hash(kind, self.seed, self.prompt_id, node.id), 16) % (2**31 - 1)

    def to_json(self) -> dict:
        return {"prompt_id": self.prompt_id, "reference": self.reference, "rollouts_used": self.rollouts_used,
                "nodes": [{"id": n.id, "parent": None if n.parent is None else n.parent.id, "depth": n.depth,
                           "step": n.step, "delimiter": n.delimiter, "N": n.N, "V": n.V, "Q": n.Q, "r": n.r,
                           "value": n.value, "logprob": n.logprob, "n_tokens": n.n_tokens, "terminal": n.terminal,
                           "complete": n.complete, "outcome": n.outcome, "self_eval": n.self_eval,
                           "rollout_outcomes": [r[1] for r in n.rollouts],
                           "rollout_complete": [r[2] for r in n.rollouts]} for n in self.nodes]}


# ---- selection and backup: pure arithmetic, tested on hand-built trees -------------------------------------------

def puct(child: Node, parent: Node, w_exp: float, length_penalty: float) -> float:
    """MCTS-DPO's `_puct`: Q + w_exp * p * sqrt(N_parent) / (1 + N); p = 1/b when the sampler gave no log-probs."""
    p = child.prior(length_penalty)
    if p is None:
        p = 1.0 / max(len(parent.children), 1)
    return child.Q + w_exp * p * math.sqrt(parent.N) / (1 + child.N)


def select(root: Node, w_exp: float = 1.0, length_penalty: float = 1.25) -> list[Node]:
    """Root-to-leaf path, taking the PUCT-best child at each node (ties: the earlier child)."""
    path = [root]
    while path[-1].children:
        parent = path[-1]
        path.append(max(parent.children, key=lambda c: puct(c, parent, w_exp, length_penalty)))
    return path


def backup(path: list[Node], gamma: float = 1.0) -> None:
    """MCTS-DPO `_back_propagate`, with the leaf's V recomputed when it has (fresh) children."""
    for node in reversed(path):
        if node.children:
            weights = [max(1, c.N) for c in node.children]
            node.V = sum(w * c.Q for w, c in zip(weights, node.children)) / sum(weights)
        node.N += 1
        if node.parent is not None:
            node.Q = node.r + gamma * node.V


# ---- one batched search ------------------------------------------------------------------------------------------

@dataclass
class SearchStats:
    rounds: int = 0
    engine_calls: dict = field(default_factory=lambda: {"expand": 0, "rollout": 0, "self_eval": 0})
    tokens: dict = field(default_factory=lambda: {"expand": 0, "rollout": 0, "self_eval": 0})  # sampled, by kind
    nodes: int = 0
    rollouts: int = 0

    def count(self, kind: str, outputs) -> None:
        """One engine call of `kind` and the tokens it sampled (the unit of cost on CPU)."""
        self.engine_calls[kind] = self.engine_calls.get(kind, 0) + 1
        self.tokens[kind] = self.tokens.get(kind, 0) + sum(g.completion_tokens for gens in outputs for g in gens)


SELF_EVAL_PROMPT = ("Question: {question}\n\nPartial solution:\n{solution}\n\n"
                    "Is the last step of the partial solution correct? Answer Yes or No.")


def search(trees: list[Tree], sampler, outcome: Callable[[str, str], float], cfg,
           stats: SearchStats | None = None) -> SearchStats:
    """Run cfg.iterations rounds over all trees; every model call covers every tree of the round."""
    stats = stats or SearchStats()
    for _ in range(cfg.iterations):
        stats.rounds += 1
        expand_paths = []
        for tree in trees:
            path = select(tree.root, cfg.w_exp, cfg.length_penalty)
            leaf = path[-1]
            if leaf.terminal or leaf.depth >= cfg.max_depth:
                backup(path, cfg.gamma)  # nothing to expand: the visit still counts (as in MCTS-DPO)
            else:
                expand_paths.append((tree, path))
        if not expand_paths:
            continue
        outputs = sampler.generate([t.conversation(p[-1]) for t, p in expand_paths], cfg.branching,
                                   [t.node_seed(p[-1], "expand") for t, p in expand_paths],
                                   continue_final=True, stop=list(cfg.delimiters), max_new_tokens=cfg.step_tokens)
        stats.count("expand", outputs)
        fresh: list[tuple[Tree, Node]] = []
        for (tree, path), gens in zip(expand_paths, outputs):
            children = add_children(tree, path[-1], gens)
            leaf = path[-1]
            blank = next((g.stop_reason for g in gens if g.stop_reason and not g.text.strip()), None)
            if not children and blank and leaf.parent is not None and leaf.delimiter.count(blank) < 3:
                # the policy's next "step" is one more delimiter (a blank line after a "\n" step): keep it in the
                # leaf's delimiter, as split_steps does, and expand the leaf again in a later round
                leaf.delimiter += blank
            elif not children:  # every sample was empty or a repeat: the answer cannot go on from here
                leaf.terminal, leaf.outcome = True, outcome(leaf.text(), tree.reference)
                leaf.value = leaf.outcome
            fresh += [(tree, c) for c in children]
        evaluate(fresh, sampler, outcome, cfg, stats)
        for tree, path in expand_paths:
            for child in path[-1].children:
                if child.N == 0:
                    child.Q = path[-1].V + child.r
            backup(path, cfg.gamma)
        stats.nodes += len(fresh)
    return stats


def add_children(tree: Tree, leaf: Node, gens) -> list[Node]:
    """New child steps from b generations: repeats merged, empty non-final steps skipped (they carry nothing)."""
    seen = {(c.step, c.delimiter) for c in leaf.children}
    children = []
    for g in gens:
        ended = g.stop_reason is None and g.finish_reason == "stop"  # EOS: the policy finished its answer
        step = g.text.strip("\n") if not ended else g.text.rstrip()
        if (not step.strip() and not ended) or (step, g.stop_reason or "") in seen:
            continue
        seen.add((step, g.stop_reason or ""))
        children.append(tree.add(leaf, step=step, delimiter=g.stop_reason or "", logprob=g.logprob_sum,
                                 n_tokens=g.completion_tokens, terminal=ended, complete=ended))
    return children


def evaluate(fresh: list[tuple[Tree, Node]], sampler, outcome, cfg, stats: SearchStats) -> None:
    """Values of new nodes: verifier for final steps, Monte Carlo rollouts (one call) for the rest, self-eval."""
    need_rollouts = []
    for tree, node in fresh:
        if node.terminal:
            node.outcome = outcome(node.text(), tree.reference)
            node.value = node.outcome
        elif cfg.rollouts > 0 and tree.rollouts_used + cfg.rollouts <= cfg.max_rollouts:
            tree.rollouts_used += cfg.rollouts
            need_rollouts.append((tree, node))
        else:
            node.value = node.parent.value  # no estimate left in the budget: r = 0
    if need_rollouts:
        outputs = sampler.generate([t.conversation(n) for t, n in need_rollouts], cfg.rollouts,
                                   [t.node_seed(n, "rollout") for t, n in need_rollouts],
                                   continue_final=True, max_new_tokens=cfg.rollout_tokens)
        stats.count("rollout", outputs)
        stats.rollouts += cfg.rollouts * len(need_rollouts)
        for (tree, node), gens in zip(need_rollouts, outputs):
            prefix = node.text()
            # a rollout cut at rollout_tokens is scored as it stands (no final answer yet: usually -1), like
            # MCTS-DPO's unfinished paths; it is kept out of trajectory pairs (pipelines/step_pairs.py)
            node.rollouts = [(g.text, outcome(prefix + g.text, tree.reference), g.finish_reason == "stop"
                              and g.stop_reason is None) for g in gens]
            node.value = sum(r[1] for r in node.rollouts) / len(node.rollouts)
    if cfg.self_eval and fresh:
        convs = [[{"role": "user", "content": SELF_EVAL_PROMPT.format(
            question=t.messages[-1]["content"], solution=n.text())}] for t, n in fresh]
        outputs = sampler.generate(convs, cfg.self_eval_samples, [t.node_seed(n, "self_eval") for t, n in fresh],
                                   max_new_tokens=3)
        stats.count("self_eval", outputs)
        for (tree, node), gens in zip(fresh, outputs):
            node.self_eval = sum(g.text.strip().lower().startswith("yes") for g in gens) / len(gens)
            node.value += cfg.self_eval_weight * node.self_eval / max(node.parent.depth - 3, 1)
