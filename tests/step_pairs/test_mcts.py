"""MCTS arithmetic, pair extraction and call batching on hand-built trees and a scripted fake sampler (no model)."""

from __future__ import annotations

import math

import pytest

from pipelines.core import schema
from pipelines.step_pairs import extract, first_error, mcts
from pipelines.step_pairs.config import CorrectionConfig, MCTSConfig
from samplers import Generation
from tests.helpers import ScriptedSampler, prompts_frame

QUESTION = [{"role": "system", "content": "sys"}, {"role": "user", "content": "What is 40 + 1?"}]


def outcome(text: str, reference: str) -> float:
    """Fake verifier: the answer is right when the text's last token is the reference."""
    words = text.split()
    return 1.0 if words and words[-1] == reference else -1.0


def tree_with(values: dict[str, float]) -> mcts.Tree:
    """A tree whose nodes are named by their path ("a", "a.x"); values set by hand."""
    tree = mcts.Tree(prompt_id="p", messages=QUESTION, reference="41", seed=0)
    by_name = {"": tree.root}
    for name in sorted(values, key=lambda n: n.count(".")):
        parent = by_name[name.rpartition(".")[0]]
        by_name[name] = tree.add(parent, step=name.rpartition(".")[2].upper(), delimiter="\n\n", value=values[name])
    return tree, by_name


# ---- backup and PUCT arithmetic ---------------------------------------------------------------------------------

def test_backup_follows_the_mcts_dpo_rule():
    tree, n = tree_with({"a": 0.5, "b": -0.5})
    root, a, b = n[""], n["a"], n["b"]
    for child in (a, b):                      # fresh children: Q = V(parent) + r, V(root) = 0
        child.Q = root.V + child.r
    assert (a.Q, b.Q) == (0.5, -0.5)
    mcts.backup([root])                       # root expanded: V = mean of children Q (weights max(1, N) = 1)
    assert (root.V, root.N) == (0.0, 1)

    a1 = tree.add(a, step="A1", value=1.0, terminal=True, outcome=1.0)
    assert a1.r == 0.5                        # r = value - parent value
    a1.Q = a.V + a1.r
    mcts.backup([root, a])
    assert a.V == 0.5 and a.N == 1
    assert a.Q == 0.5 + 0.5                   # Q = r + gamma * V
    assert root.V == (1 * 1.0 + 1 * -0.5) / 2 and root.N == 2

    mcts.backup([root, a, a1])                # re-visit a final leaf: Q = r, visits weight the mean
    assert (a1.Q, a1.N, a1.V) == (0.5, 1, 0.0)
    assert (a.V, a.N, a.Q) == (0.5, 2, 1.0)
    assert root.V == pytest.approx((2 * 1.0 + 1 * -0.5) / 3) and root.N == 3


def test_backup_discounts_with_gamma():
    tree, n = tree_with({"a": 0.2, "a.x": 1.0})
    mcts.backup([n[""], n["a"], n["a.x"]], gamma=0.5)
    assert n["a.x"].Q == pytest.approx(0.8)                 # r = 1.0 - 0.2, V = 0
    assert n["a"].V == pytest.approx(0.8)
    assert n["a"].Q == pytest.approx(0.2 + 0.5 * 0.8)
    assert n[""].V == pytest.approx(0.6)


def test_puct_score_and_selection():
    tree, n = tree_with({"a": 0.0, "b": 0.0})
    root, a, b = n[""], n["a"], n["b"]
    root.N = 4
    a.Q, a.N, a.logprob, a.n_tokens = 0.2, 1, -2.0, 4
    b.Q, b.N, b.logprob, b.n_tokens = 0.5, 5, -1.0, 4
    p_a = math.exp(-2.0 / 4 ** 1.25)
    assert mcts.puct(a, root, 1.0, 1.25) == pytest.approx(0.2 + p_a * 2 / 2)
    p_b = math.exp(-1.0 / 4 ** 1.25)
    assert mcts.puct(b, root, 1.0, 1.25) == pytest.approx(0.5 + p_b * 2 / 6)
    assert mcts.select(root)[-1] is a                       # 0.902 > 0.779: exploration wins here
    assert mcts.select(root, w_exp=0.0)[-1] is b            # pure exploitation takes the higher Q
    a.logprob = b.logprob = None                            # no log-probs: uniform prior 1/b
    assert mcts.puct(a, root, 1.0, 1.25) == pytest.approx(0.2 + 0.5 * 2 / 2)


# ---- pair extraction on hand-built trees -----------------------------------------------------------------------

def searched_tree():
    tree, n = tree_with({"a": 0, "b": 0, "c": 0, "a.x": 0, "a.y": 0})
    for name, (q, visits) in {"a": (0.8, 5), "b": (-0.2, 1), "c": (0.3, 2), "a.x": (1.0, 2), "a.y": (-1.0, 1)}.items():
        n[name].Q, n[name].N = q, visits
    return tree, n


def test_step_pairs_along_the_best_path():
    tree, n = searched_tree()
    assert [x.step for x in extract.best_path(tree.root)] == ["", "A", "X"]
    rows, why = extract.step_pairs(tree)
    assert why == ""
    assert [(r["prefix"], r["chosen"], r["rejected"]) for r in rows] == [("", "A", "B"), ("A\n\n", "X", "Y")]
    first, second = rows
    assert (first["chosen_q"], first["rejected_q"], first["margin"]) == (0.8, -0.2, pytest.approx(1.0))
    assert (first["chosen_visits"], first["rejected_visits"]) == (5, 1)
    assert (second["prefix_steps"], second["chosen_node"], second["rejected_node"]) == (1, str(n["a.x"].id),
                                                                                         str(n["a.y"].id))
    runner_up, _ = extract.step_pairs(tree, rejected="runner_up")
    assert runner_up[0]["rejected"] == "C" and runner_up[0]["rejected_q"] == 0.3


def test_step_pairs_need_a_q_margin_and_say_why():
    tree, n = searched_tree()
    rows, why = extract.step_pairs(tree, min_q_margin=1.5)     # margins 1.0 and 2.0: only depth 1 survives
    assert [r["chosen"] for r in rows] == ["X"]
    rows, why = extract.step_pairs(tree, min_q_margin=2.5)
    assert rows == [] and "depth 0: Q 0.800 vs -0.200" in why
    lonely = mcts.Tree(prompt_id="p", messages=QUESTION, reference="41", seed=0)
    lonely.add(lonely.root, step="only")
    assert extract.step_pairs(lonely) == ([], "no node on the best path has two children (2 nodes)")


def test_trajectory_pair_best_vs_worst_complete_solution():
    tree, n = searched_tree()
    for name, result in (("a.x", 1.0), ("a.y", -1.0)):
        n[name].terminal, n[name].complete, n[name].outcome, n[name].delimiter = True, True, result, ""  # EOS
    n["b"].rollouts = [(" so 40", -1.0, True)]
    n["c"].rollouts = [(" so 41 and then", 1.0, False)]   # cut at the token cap: not a solution, even if "right"
    rows, why = extract.trajectory_pair(tree)
    (row,) = rows
    assert row["chosen"] == "A\n\nX" and row["chosen_q"] == 1.0
    # two wrong solutions (b's rollout at Q -0.2, a.y at Q -1.0): the lower Q one is rejected
    assert row["rejected"] == "A\n\nY" and row["rejected_node"] == str(n["a.y"].id)
    n["a.x"].outcome = -1.0
    assert extract.trajectory_pair(tree)[0] == []      # c's cut-off "right" rollout does not make a pair
    for name in ("a.x", "a.y"):
        n[name].complete = False                          # a leaf closed because nothing could follow it
    n["b"].rollouts = [(" so 40", -1.0, False)]
    assert extract.trajectory_pair(tree) == ([], "the search reached no complete solution (2 rollouts cut at "
                                                     "the token cap)")


def test_rendered_prompt_is_question_plus_prefix():
    tree, _ = searched_tree()
    rows, _ = extract.step_pairs(tree)
    seen = []
    extract.render_prompts(rows, lambda m, cont: seen.append((m, cont)) or f"{len(m)}:{cont}")
    assert [r["prompt"] for r in rows] == ["2:False", "3:True"]
    assert seen[1][0][-1] == {"role": "assistant", "content": "A\n\n"}
    table = schema.frame([dict(r, model="m") for r in rows], schema.STEP_PAIRS)
    assert list(table.columns) == schema.STEP_PAIRS.names and len(table) == 2


# ---- batching: one sampler call per round, whatever the number of trees ----------------------------------------

def answer_so_far(conversation) -> str:
    return conversation[-1]["content"] if conversation[-1]["role"] == "assistant" else ""


def add_or_subtract(conversation, n, *, stop, **options):
    """The script of the search tests, keyed by the answer so far (3 tokens a sample)."""
    prefix = answer_so_far(conversation)
    if stop:   # an expansion: two different next steps
        if not prefix:
            texts = [("Add forty and one", "\n\n"), ("Subtract one", "\n\n")]
        else:
            answer = "41" if prefix.startswith("Add") else "39"
            texts = [(f"So {answer}", None), (f"Thus {answer}", None)]
    else:      # a rollout: finish the answer
        texts = [(" so 41" if prefix.startswith("Add") else " so 39", None)] * n
    return [Generation(t, "stop", 10, 3, -1.0, stop_reason=s) for t, s in texts[:n]]


def scripted(reply=add_or_subtract) -> ScriptedSampler:
    return ScriptedSampler(reply, name="fake", model_name="fake-model")


def run_search(n_trees: int, **cfg):
    trees = [mcts.Tree(prompt_id=f"p{i}", messages=QUESTION, reference="41", seed=i) for i in range(n_trees)]
    sampler = scripted()
    config = MCTSConfig(**{**dict(iterations=3, branching=2, max_depth=3, step_tokens=7, rollouts=1,
                                  rollout_tokens=9), **cfg})
    stats = mcts.search(trees, sampler, outcome, config)
    return trees, sampler, stats


def test_one_engine_call_per_expansion_round_across_all_trees():
    one_tree, one_sampler, one_stats = run_search(1)
    trees, sampler, stats = run_search(5)
    # the same rounds and the same number of calls for 5 trees as for 1: every call covers every tree
    assert [(c["n_conversations"], c["stop"] is not None) for c in one_sampler.calls] == \
           [(c["n_conversations"] // 5, c["stop"] is not None) for c in sampler.calls]
    expand = [c for c in sampler.calls if c["stop"]]
    rollout = [c for c in sampler.calls if not c["stop"]]
    # round 1: expand 5 roots (1 call), roll out the 10 new steps (1 call): Add -> +1, Subtract -> -1.
    # round 2: PUCT picks Add (1 + 0.78 vs -1 + 0.78); its two children are final ("So 41"): 1 call, no rollouts.
    # round 3: Add again (1 + 0.78 * sqrt(2) / 2 > -1 + 0.78 * sqrt(2)), then its final child: a re-visit, no call.
    assert [c["n_conversations"] for c in expand] == [5, 5]
    assert [c["n_conversations"] for c in rollout] == [10]
    assert stats.engine_calls == {"expand": 2, "rollout": 1, "self_eval": 0} and stats.rounds == 3
    # sampled tokens are counted per kind: the fake gives 3 tokens a sample (2 samples for 5 + 5 leaves, 1 for 10)
    assert stats.tokens == {"expand": 3 * 2 * 10, "rollout": 3 * 1 * 10, "self_eval": 0}
    assert all(c["continue_final"] and c["stop"] == ["\n\n"] and c["max_new_tokens"] == 7 for c in expand)
    assert all(c["n"] == 2 for c in expand) and rollout[0]["max_new_tokens"] == 9
    tree = trees[0]
    add, sub = tree.root.children
    assert (add.value, sub.value) == (1.0, -1.0)            # rollout means
    assert [c.outcome for c in add.children] == [1.0, 1.0] and sub.children == []
    assert all(c.complete for c in add.children) and not add.complete      # EOS vs a step ended at "\n\n"
    assert add.rollouts == [(" so 41", 1.0, True)]                          # (text, outcome, ended by EOS)
    assert (tree.root.N, add.N, sub.N, add.children[0].N) == (3, 2, 0, 1)
    assert (add.Q, sub.Q, tree.root.V) == (1.0, -1.0, pytest.approx((2 * 1.0 + 1 * -1.0) / 3))
    rows, _ = extract.step_pairs(tree)
    assert rows[0]["chosen"] == "Add forty and one" and rows[0]["rejected"] == "Subtract one"


def test_rollout_budget_and_depth_limit():
    trees, sampler, stats = run_search(2, max_rollouts=1)   # room for 1 rollout: only the first new step gets one
    add, sub = trees[0].root.children
    assert [len(add.rollouts), len(sub.rollouts)] == [1, 0] and sub.value == trees[0].root.value
    trees, sampler, stats = run_search(2, max_depth=1)      # depth 1: nodes after the root are leaves
    assert stats.engine_calls["expand"] == 1 and all(len(t.nodes) == 3 for t in trees)


def test_a_blank_line_after_a_step_extends_its_delimiter():
    def blank_line(conversation, n, *, stop, **options):   # after "A\n" the policy writes a blank line, then the answer
        prefix = answer_so_far(conversation)
        if not stop:
            texts = [(" so 41" if prefix.startswith("A") else " so 39", None)]
        elif not prefix:
            texts = [("A", "\n"), ("B", "\n")]
        elif prefix == "A\n":
            texts = [("", "\n"), ("", "\n")]
        else:
            texts = [("So 41", None), ("Thus 41", None)]
        return [Generation(t, "stop", 10, 3, -1.0, stop_reason=s) for t, s in texts[:n]]

    tree = mcts.Tree(prompt_id="p", messages=QUESTION, reference="41", seed=0)
    mcts.search([tree], scripted(blank_line), outcome,
                MCTSConfig(iterations=3, branching=2, max_depth=3, delimiters=["\n"]))
    a = tree.root.children[0]
    # round 2 gave only blank lines after "A": not the end of the answer, and its rollout value stays
    assert (a.step, a.delimiter, a.terminal, a.value) == ("A", "\n\n", False, 1.0)
    assert [c.step for c in a.children] == ["So 41", "Thus 41"] and a.children[0].text() == "A\n\nSo 41"


def test_self_evaluation_is_one_call_per_round():
    def yes_and_no(conversation, n, **options):
        if options["max_new_tokens"] == 3:   # the self-evaluation question
            return [Generation("Yes", "stop", 1, 1, None), Generation("No", "stop", 1, 1, None)]
        return add_or_subtract(conversation, n, **options)

    trees = [mcts.Tree(prompt_id=f"p{i}", messages=QUESTION, reference="41", seed=i) for i in range(3)]
    sampler = scripted(yes_and_no)
    stats = mcts.search(trees, sampler, outcome, MCTSConfig(iterations=1, rollouts=0, self_eval=True))
    assert stats.engine_calls == {"expand": 1, "rollout": 0, "self_eval": 1}
    add = trees[0].root.children[0]
    assert add.self_eval == 0.5 and add.value == pytest.approx(0.0 + 0.5)   # parent value + conf / max(0 - 3, 1)


# ---- first-error correction ------------------------------------------------------------------------------------

def test_split_steps_is_lossless():
    for text in ["a\n\nb\n\nc", "a\n\n\n\nb", "a", "a\n\n"]:
        assert "".join(s + d for s, d in first_error.split_steps(text, ["\n\n"])) == text
    assert first_error.split_steps("a\n\nb", ["\n\n"]) == [("a", "\n\n"), ("b", "")]


def one_wrong_solution(conversation, n, *, continue_final, **options):
    """Solutions: one right, one wrong (A, B, C -> 39). Rollouts: right from "" and "A", wrong after "B"."""
    if not continue_final:
        return [Generation("A\n\nB\n\nC 39", "stop", 5, 5, -1.0), Generation("A\n\nD 41", "stop", 5, 5, -1.0)]
    text = "E\n\nF 41" if "B" not in answer_so_far(conversation) else "G 39"
    return [Generation(text, "stop", 5, 5, -1.0)] * n


def test_first_error_pair_from_rollouts():
    trees = [mcts.Tree(prompt_id=f"p{i}", messages=QUESTION, reference="41", seed=i) for i in range(2)]
    sampler, stats = scripted(one_wrong_solution), mcts.SearchStats()
    rows, drops = first_error.first_error_pairs(trees, sampler, outcome, CorrectionConfig(rollouts=2, max_steps=6),
                                                ["\n\n"], stats)
    assert {k: v for k, v in stats.engine_calls.items() if v} == {"correction_sample": 1, "correction_rollout": 1}
    assert sampler.calls[1]["n_conversations"] == 2 * 3                  # prefixes "", "A", "A B" per prompt
    assert drops == [] and len(rows) == 2
    row = rows[0]
    # prefix "A\n\n" still reaches 41, "A\n\nB\n\n" does not: B is the first wrong step, E the correction
    assert (row["prefix"], row["prefix_steps"], row["chosen"], row["rejected"]) == ("A\n\n", 1, "E", "B")
    assert (row["chosen_q"], row["rejected_q"], row["mode"]) == (1.0, -1.0, "correction")


def test_first_error_drops_are_explicit():
    def always(text, finish="stop"):   # every solution and every rollout is this text
        return scripted(lambda conversation, n, **options: [Generation(text, finish, 5, 5, -1.0)] * n)

    trees = [mcts.Tree(prompt_id="p", messages=QUESTION, reference="41", seed=0)]
    rows, drops = first_error.first_error_pairs(trees, always("A 41"), outcome, CorrectionConfig(), ["\n\n"],
                                                mcts.SearchStats())
    assert rows == [] and [d["reason"] for d in drops] == ["no_wrong_solution"]

    # wrong only because cut at solution_tokens: no final answer yet
    rows, drops = first_error.first_error_pairs(trees, always("A\n\nB 39 and", "length"), outcome,
                                                CorrectionConfig(samples=2), ["\n\n"], mcts.SearchStats())
    assert rows == [] and [(d["reason"], d["detail"]) for d in drops] == \
           [("no_wrong_solution", "2 sampled solutions: 2 cut at solution_tokens, the other 0 verified correct")]

    rows, drops = first_error.first_error_pairs(trees, always("A\n\nB 39"), outcome, CorrectionConfig(), ["\n\n"],
                                                mcts.SearchStats())
    assert rows == [] and [(d["reason"], d["detail"]) for d in drops] == \
           [("no_correction", "no rollout from the question reaches the answer")]
    assert set(d["reason"] for d in drops) <= set(schema.REASONS)


# ---- one batch end to end, fake model ----------------------------------------------------------------------------

def test_build_batch_accounts_for_every_prompt_and_mode():
    from pipelines.step_pairs import build as step_build
    from pipelines.step_pairs.config import StepPairsConfig

    prompts = prompts_frame(["What is 40 + 1?", "And 41 + 0?", "No answer known"], references=["41", "41", None])
    config = StepPairsConfig(mcts=MCTSConfig(iterations=3, max_depth=3), correction=CorrectionConfig(samples=2))
    engine = scripted()   # the script of the search tests; prompt_tokens 10, max_context 4096
    rows, drops, trees, calls, stats = step_build.build_batch(prompts, engine, outcome, config)
    pids = prompts["prompt_id"].tolist()
    assert [t.prompt_id for t in trees] == pids[:2]
    assert calls == {"expand": 2, "rollout": 1, "self_eval": 0, "correction_sample": 1, "correction_rollout": 1}
    assert stats.tokens["correction_sample"] == 2 * 2 * 3      # 2 prompts x 2 solutions x the fake's 3 tokens
    by_mode = {m: [r for r in rows if r["mode"] == m] for m in ("step", "trajectory", "correction")}
    assert [r["prompt_id"] for r in by_mode["step"]] == pids[:2]
    # right answers tie on outcome: the one under the higher-Q node wins (Add's rollout, Q 1.0, over its final
    # child "So 41", Q 0.0); the wrong ones: Subtract's rollout is the only one
    assert [(r["chosen"], r["rejected"]) for r in by_mode["trajectory"]] == \
           [("Add forty and one\n\n so 41", "Subtract one\n\n so 39")] * 2
    assert by_mode["correction"] == []       # the fake's solutions are all "so 39", and so is every rollout
    reasons = sorted((d.prompt_id == pids[2], d.reason) for d in drops.itertuples())
    assert reasons == [(False, "no_correction"), (False, "no_correction"), (True, "no_reference")]
    assert all(r["model"] == "fake-model" and r["prompt"].startswith(r["messages"][-1]["content"]) for r in rows)
    table = schema.frame(rows, schema.STEP_PAIRS)
    assert table["pair_id"].is_unique and len(table) == 4


def test_token_bound_is_the_readme_cost_formula():
    from pipelines.step_pairs.config import StepPairsConfig
    config = StepPairsConfig(mcts=MCTSConfig(iterations=6, branching=3, step_tokens=48, rollouts=1, rollout_tokens=96,
                                             max_rollouts=24),
                             correction=CorrectionConfig(samples=4, solution_tokens=128, max_wrong=1, max_steps=4,
                                                         rollouts=2, rollout_tokens=96))
    # 18 new steps at most, each with one rollout (18 <= max_rollouts 24)
    assert config.token_bound() == {"expand": 6 * 3 * 48, "rollout": 18 * 96, "self_eval": 0,
                                    "correction_sample": 4 * 128, "correction_rollout": 1 * 4 * 2 * 96}
    capped = config.model_copy(update={"mcts": config.mcts.model_copy(update={"max_rollouts": 5, "rollouts": 2}),
                                       "modes": ["step"]})
    assert capped.token_bound() == {"expand": 6 * 3 * 48, "rollout": 4 * 96, "self_eval": 0}  # 2 nodes x 2 fit in 5
