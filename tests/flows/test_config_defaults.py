"""A flow's own defaults for a section's fields (FileConfig.SECTION_DEFAULTS: build_pairs' measured sampling,
evaluate's greedy held-out split, iterate's train split, step pairs' calculation prompt) survive a section given in
part, however it is given: a flag, a config file, a section object in Python. Without that, `--sampler.seed 3`
would quietly sample k=4 at T=0.8 (the SamplerConfig class's defaults) instead of the measured k=8 at T=0.7."""

from __future__ import annotations

import json

import pytest

from pipelines.core.config import CALCULATION_PROMPT, SHORT_ANSWER_PROMPT, PromptsConfig, SamplerConfig
from pipelines.evaluation.config import EvalConfig
from pipelines.iteration.config import IterateConfig
from pipelines.pairs.config import DEFAULT_SAMPLING, BuildConfig
from pipelines.step_pairs.config import StepPairsConfig


def sampling(cfg: SamplerConfig) -> dict:
    return {field: getattr(cfg, field) for field in DEFAULT_SAMPLING}


def printed(main, argv, capsys) -> dict:
    assert main([*argv, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_section_class_defaults_differ_so_the_checks_below_can_fail():
    assert sampling(SamplerConfig()) != DEFAULT_SAMPLING
    assert PromptsConfig().system_prompt == SHORT_ANSWER_PROMPT != CALCULATION_PROMPT


def test_a_flag_on_one_field_keeps_the_builds_other_defaults(capsys):
    from flows.build_pairs import main
    cfg = printed(main, ["--sampler.seed", "3", "--prompts.limit", "10"], capsys)
    assert {f: cfg["sampler"][f] for f in DEFAULT_SAMPLING} == DEFAULT_SAMPLING and cfg["sampler"]["seed"] == 3
    assert cfg["prompts"]["limit"] == 10 and cfg["prompts"]["system_prompt"] == SHORT_ANSWER_PROMPT
    assert cfg == BuildConfig.model_validate({"sampler": {"seed": 3}, "prompts": {"limit": 10}}).model_dump()
    # a field the flag sets wins, and what depends on it follows (batch_size from k x max_new_tokens)
    four = printed(main, ["--sampler.k", "4"], capsys)
    assert four["sampler"]["k"] == 4 and four["sampler"]["max_new_tokens"] == 96 and four["batch_size"] == 21


def test_a_partial_section_in_a_config_file_keeps_the_other_defaults(tmp_path, capsys):
    from flows.build_pairs import main
    path = tmp_path / "small.yaml"
    path.write_text("prompts:\n  limit: 10\nsampler:\n  model: embedded:smollm2-135m-instruct\n  seed: 5\n")
    from_file = BuildConfig.from_file(path)
    assert sampling(from_file.sampler) == DEFAULT_SAMPLING and from_file.sampler.seed == 5
    # the file, then flags on top of it (the CLI re-validates the file's fields with the overrides)
    cfg = printed(main, ["--config", str(path), "--sampler.temperature", "0.9"], capsys)
    assert cfg["sampler"]["temperature"] == 0.9 and cfg["sampler"]["k"] == 8 and cfg["sampler"]["seed"] == 5


def test_a_section_object_in_python_keeps_the_other_defaults():
    cfg = BuildConfig(sampler=SamplerConfig(seed=3), prompts=PromptsConfig(limit=5))
    assert sampling(cfg.sampler) == DEFAULT_SAMPLING and cfg.sampler.seed == 3 and cfg.prompts.limit == 5
    # a field the object sets, even to the class default, is kept
    assert BuildConfig(sampler=SamplerConfig(k=4, max_new_tokens=128)).sampler.max_new_tokens == 128
    assert BuildConfig() == BuildConfig.model_validate({}) == BuildConfig.model_validate(BuildConfig().model_dump())


def test_evaluate_keeps_greedy_held_out_and_the_builds_system_prompt(capsys):
    from flows.evaluate import main
    cfg = printed(main, ["--prompts.limit", "40", "--sampler.batch_prompts", "4"], capsys)
    assert (cfg["prompts"]["split"], cfg["prompts"]["limit"]) == ("eval", 40)
    assert (cfg["sampler"]["temperature"], cfg["sampler"]["max_new_tokens"]) == (0.0, 128)
    # a model trained on default pairs is evaluated with the system prompt it was trained on
    assert cfg["prompts"]["system_prompt"] == BuildConfig().prompts.system_prompt == EvalConfig().prompts.system_prompt
    assert EvalConfig(sampler=SamplerConfig(seed=1)).sampler.temperature == 0.0


def test_iterate_keeps_the_train_split_and_the_builds_defaults():
    cfg = IterateConfig.model_validate({"build": {"prompts": {"limit": 4}, "sampler": {"seed": 2}}})
    assert cfg.build.prompts.split == "train" and cfg.build.prompts.limit == 4
    assert sampling(cfg.build.sampler) == DEFAULT_SAMPLING and cfg.build.sampler.seed == 2
    assert cfg.build.selection == BuildConfig().selection and cfg.eval.prompts.split == "eval"
    assert cfg.build.prompts.system_prompt == cfg.eval.prompts.system_prompt
    assert IterateConfig(build=BuildConfig()).build.prompts.split == "train"


def test_step_pairs_keep_the_calculation_prompt(capsys):
    from flows.build_step_pairs import main
    assert StepPairsConfig().prompts.system_prompt == CALCULATION_PROMPT
    assert printed(main, ["--prompts.limit", "2"], capsys)["prompts"]["system_prompt"] == CALCULATION_PROMPT
    assert StepPairsConfig(prompts=PromptsConfig(limit=2)).prompts.system_prompt == CALCULATION_PROMPT
    assert StepPairsConfig.model_validate({"prompts": {"system_prompt": None}}).prompts.system_prompt is None


@pytest.mark.parametrize("module,flag,default", [
    ("flows.build_pairs", "--sampler.k", "8"), ("flows.build_pairs", "--sampler.temperature", "0.7"),
    ("flows.evaluate", "--sampler.temperature", "0.0"), ("flows.evaluate", "--prompts.split", "'eval'"),
    ("flows.iterate", "--build.prompts.split", "'train'"), ("flows.iterate", "--build.sampler.k", "8"),
    ("flows.build_step_pairs", "--prompts.system_prompt", repr(CALCULATION_PROMPT))])
def test_help_shows_the_flows_own_defaults(module, flag, default, capsys):
    import importlib
    with pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    entry = text.split(f" {flag} VALUE ", 1)[1]
    assert f"[default: {default}]" in entry.split(" --", 1)[0], entry[:300]
