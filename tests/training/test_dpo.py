"""DPO training: bad input, config validation, and a real CPU smoke run (LoRA, SmolLM2, two curriculum tiers)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from pydantic import ValidationError

from pipelines.core import io, schema
from pipelines.core.config import PromptsConfig
from pipelines.loaders import load_prompts
from pipelines.training.config import TrainConfig, trl_loss_types
from pipelines.training.dpo import PairsFileError, check_pairs_files


def write_pairs(path, n: int = 4, tiers: int = 2):
    """Valid PAIRS rows on real shipped prompts: chosen states the reference answer, rejected a wrong one."""
    prompts, _ = load_prompts(PromptsConfig(limit=n, split="train"))
    rows = []
    for i, p in enumerate(prompts.itertuples(index=False)):
        good, bad = f"{p.reference}", f"{int(p.reference) + 3}"
        rows.append(dict(
            pair_id=f"pair{i}", prompt_id=p.prompt_id, prompt=list(p.messages),
            chosen=[{"role": "assistant", "content": f"The calculation gives {good}. The answer is {good}."}],
            rejected=[{"role": "assistant", "content": f"The calculation gives {bad}. The answer is {bad}."}],
            chosen_id=f"c{i}", rejected_id=f"r{i}", chosen_score=1.0, rejected_score=0.0, margin=1.0,
            rule="max_min", weight=1.0 if i else 0.5, tier=i % tiers, model="hand-written"))
    io.write_table(schema.frame(rows, schema.PAIRS), path, schema.PAIRS)
    return path


def test_loss_types_come_from_installed_trl():
    known = trl_loss_types()
    assert {"sigmoid", "ipo", "robust", "hinge"} <= known
    assert TrainConfig(loss_type="ipo").loss_type == ["ipo"]
    with pytest.raises(ValidationError, match="unknown DPO loss_type"):
        TrainConfig(loss_type="not_a_loss")
    with pytest.raises(ValidationError, match="loss_weights"):
        TrainConfig(loss_type=["sigmoid", "sft"], loss_weights=[1.0])


def test_defaults_are_what_the_efficacy_experiment_trained():
    import importlib.util

    from tests.helpers import ROOT
    spec = importlib.util.spec_from_file_location("efficacy", ROOT / "benchmarks" / "efficacy.py")
    efficacy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(efficacy)
    trained, loss = efficacy.CONFIG["training"], efficacy.CONFIG["losses"]["dpo"]
    cfg = TrainConfig()
    assert (cfg.loss_type, cfg.loss_weights) == (loss["loss_type"], loss["loss_weights"]) == (["sigmoid", "sft"],
                                                                                              [1.0, 1.0])
    assert cfg.learning_rate == trained["learning_rate"] == 2e-4 and cfg.beta == trained["beta"]
    assert cfg.lora.enabled and (cfg.lora.r, cfg.lora.alpha, cfg.lora.target_modules) == \
        (trained["lora"]["r"], trained["lora"]["alpha"], trained["lora"]["target_modules"])
    # one loss named alone gets its one weight (no [1, 1] left over), full fine-tuning the unmeasured 5e-5
    assert TrainConfig(loss_type="sigmoid").loss_weights == [1.0]
    assert TrainConfig(lora={"enabled": False}).learning_rate == 5e-5
    assert TrainConfig(lora={"enabled": False}, learning_rate=1e-6).learning_rate == 1e-6


def test_bad_pairs_files_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(PairsFileError, match="no pairs file given"):
        check_pairs_files([])
    missing = tmp_path / "nope.parquet"
    with pytest.raises(PairsFileError, match=f"pairs file not found: {missing}"):
        check_pairs_files([str(missing)])
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("not parquet")
    with pytest.raises(PairsFileError, match="garbage.parquet: not a readable Parquet"):
        check_pairs_files([str(garbage)])
    no_rejected = tmp_path / "no_rejected.parquet"
    pd.DataFrame({"prompt": ["a"], "chosen": ["b"]}).to_parquet(no_rejected)
    with pytest.raises(PairsFileError, match=r"no_rejected.parquet: missing column\(s\) \['rejected'\]"):
        check_pairs_files([str(no_rejected)])
    wrong_type = tmp_path / "wrong_type.parquet"
    pd.DataFrame({"prompt": ["a"], "chosen": ["b"], "rejected": [3]}).to_parquet(wrong_type)
    with pytest.raises(PairsFileError, match=r"wrong_type.parquet: column\(s\) \['rejected'\] must be text"):
        check_pairs_files([str(wrong_type)])
    empty = tmp_path / "empty.parquet"
    io.write_table(schema.empty(schema.PAIRS), empty, schema.PAIRS)
    with pytest.raises(PairsFileError, match=r"empty.parquet: no pairs \(0 rows\)"):
        check_pairs_files([str(empty)])


def test_tiers_and_weights_are_counted(tmp_path):
    info = check_pairs_files([str(write_pairs(tmp_path / "p.parquet", n=5, tiers=2))])
    assert info == {"rows": 5, "tiers": {0: 3, 1: 2}, "weighted": 1}


def _weights(model_dir):
    from safetensors.torch import load_file
    return load_file(f"{model_dir}/model.safetensors")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smollm_dir):
    from pipelines.training.dpo import run
    tmp = tmp_path_factory.mktemp("train")
    pairs = write_pairs(tmp / "pairs.parquet", n=4, tiers=2)
    cfg = TrainConfig(pairs=[str(pairs)], output_dir=str(tmp / "out"), max_steps=1, batch_size=2,
                      max_length=160, learning_rate=1e-3, lora={"r": 4, "alpha": 8})
    return run(cfg)


@pytest.mark.slow
def test_two_tiers_train_in_order_with_previous_tier_reference(trained, smollm_dir):
    m = trained
    assert [t["tier"] for t in m["tiers"]] == [0, 1]
    assert [t["pairs"] for t in m["tiers"]] == [2, 2]
    tier0, tier1 = m["tiers"]
    assert tier0["start_model"] == smollm_dir and tier0["reference_model"] == smollm_dir
    assert tier1["start_model"] == tier0["model"] == tier1["reference_model"]  # sDPO: reference = tier 0's model
    for t in m["tiers"]:
        assert t["steps"] == 1 and t["log"], t
        for row in t["log"]:
            assert {"loss", "rewards/accuracies", "rewards/margins"} <= set(row)
            assert math.isfinite(row["loss"])
        # the step-1 policy equals its reference (fresh LoRA adapter, B = 0): all implicit rewards are 0.
        # For tier 1 this holds only because the reference is the tier-0 model, not the initial one.
        assert t["log"][0]["rewards/margins"] == 0.0
    saved = json.load(open(f"{m['output_dir']}/metrics.json"))
    assert saved["tiers"][1]["log"] == tier1["log"] and saved["weights"]["pairs_with_weight_not_1"] == 1


@pytest.mark.slow
def test_saved_model_loads_and_differs_from_initial(trained, smollm_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(trained["model"])
    AutoTokenizer.from_pretrained(trained["model"])
    assert not any("lora" in k for k in model.state_dict())  # merged, a plain model
    before, after = _weights(smollm_dir), _weights(trained["model"])
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert changed and all("proj" in k for k in changed)  # LoRA touched the linear projections only
    tier0 = _weights(trained["tiers"][0]["model"])
    assert any(not torch.equal(tier0[k], after[k]) for k in changed)  # tier 1 trained on top of tier 0


@pytest.mark.slow
def test_reference_initial_uses_the_starting_model(tmp_path, smollm_dir):
    from pipelines.training.dpo import run
    pairs = write_pairs(tmp_path / "pairs.parquet", n=4, tiers=2)
    m = run(TrainConfig(pairs=[str(pairs)], output_dir=str(tmp_path / "out"), max_steps=1, batch_size=2,
                        max_length=160, learning_rate=1e-3, lora={"r": 4, "alpha": 8}, reference="initial"))
    tier1 = m["tiers"][1]
    assert tier1["reference_model"] == smollm_dir != tier1["start_model"]
    # the policy starts from the tier-0 model, so against the initial reference its rewards are not 0 at step 1
    assert tier1["log"][0]["rewards/chosen"] != 0.0
