"""--dry-run: prompts loaded and counted, the batch plan, the token bound (+ judge calls), the budget's reach and a
time estimate from a configured or measured rate; no sampler, no model, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines.core import cost


def words(messages) -> int:
    return sum(len(m["content"].split()) for m in messages)


@pytest.fixture
def counted_by_words(monkeypatch):
    """Count prompt tokens by words (the real tokenizer is checked in the subprocess test below), and make any
    sampler use an error."""
    monkeypatch.setattr(cost, "prompt_counter", lambda cfg: (words, "counted by words"))

    def no_sampler(cfg):
        raise AssertionError("a dry run must not load a sampler")
    monkeypatch.setattr("samplers.get_sampler", no_sampler)


def dry(argv, capsys, module="flows.build_pairs") -> str:
    import importlib
    assert importlib.import_module(module).main(["--dry-run", *argv]) == 0
    return capsys.readouterr().out


def shipped_words(limit: int) -> int:
    from pipelines.core.config import PromptsConfig
    from pipelines.loaders import load_prompts
    prompts, _ = load_prompts(PromptsConfig(limit=limit))
    return sum(words(list(m)) for m in prompts["messages"])


def test_plan_bound_budget_and_configured_rate(tmp_path, capsys, counted_by_words):
    out = dry(["--output_dir", str(tmp_path / "runs"), "--prompts.limit", "20", "--batch_size", "8",
               "--sampler.k", "4", "--sampler.max_new_tokens", "128",
               "--budget.max_total_tokens", "9000", "--budget.tokens_per_second", "25"], capsys)
    prompt = shipped_words(20)
    generated = 20 * 4 * 128
    assert "prompts: 20 from " in out and "batches: 3 (8, 8, 4 prompts)" in out
    assert f"token bound: {prompt:,} prompt + {generated:,} generated (20 prompts x 4 x 128) = " \
           f"{prompt + generated:,} tokens; prompt tokens counted by words" in out
    # a batch's bound: 4 x 128 per prompt + its prompt tokens; 9,000 covers the first two (not three)
    first_two = shipped_words(16) + 16 * 4 * 128
    assert first_two <= 9000 < first_two + 4 * 4 * 128
    assert "budget: max_total_tokens 9,000 covers 2 of 3 batches at their bound" in out
    assert f"time: sampling at most {cost.duration(generated / 25)} at 25.0 generated tokens/s " \
           "(budget.tokens_per_second)" in out
    assert not (tmp_path / "runs").exists()  # nothing written


def test_the_rate_measured_by_an_earlier_run_of_the_same_sampler_and_model(tmp_path, capsys, counted_by_words):
    from pipelines.pairs.config import BuildConfig
    runs = tmp_path / "runs"
    for name, model, rate in (("old", "embedded:smollm2-135m-instruct", 31.5), ("other", "some/other-model", 999)):
        (runs / name).mkdir(parents=True)
        sampler = BuildConfig().sampler.model_dump() | {"model": model}
        (runs / name / "manifest.json").write_text(json.dumps(
            {"config": {"sampler": sampler}, "token_use": {"generated_per_second": rate}}))
    out = dry(["--output_dir", str(runs), "--prompts.limit", "4"], capsys)
    k, new_tokens = BuildConfig().sampler.k, BuildConfig().sampler.max_new_tokens  # the defaults the run uses
    assert f"at 31.5 generated tokens/s (measured in {runs / 'old'})" in out
    assert f"time: sampling at most {cost.duration(4 * k * new_tokens / 31.5)}" in out
    none = dry(["--output_dir", str(tmp_path / "empty"), "--prompts.limit", "4"], capsys)
    assert "time: unknown (no tokens/s: set --budget.tokens_per_second" in none


def test_judge_calls_are_bounded_beside_the_policy(tmp_path, capsys, counted_by_words):
    out = dry(["--config", "configs/mtbench-judge.yaml", "--output_dir", str(tmp_path)], capsys)
    line = next(x for x in out.splitlines() if x.startswith("judge calls: judge (pointwise)"))
    assert line.startswith("judge calls: judge (pointwise): 32 calls, <= ")  # 8 prompts x k=4, one call each
    tokens = int(line.split("<= ")[1].split(" tokens")[0].replace(",", ""))
    assert tokens > 32 * (256 + 256)  # each call: the rendered judge prompt + the answer + the judge's reply


def test_step_pairs_dry_run_uses_the_cost_formula(tmp_path, capsys, counted_by_words):
    from pipelines.step_pairs.config import StepPairsConfig
    out = dry(["--config", "configs/step_pairs_small.yaml", "--output_dir", str(tmp_path)], capsys,
              module="flows.build_step_pairs")
    cfg = StepPairsConfig.from_file("configs/step_pairs_small.yaml")
    per_prompt = sum(cfg.token_bound().values())
    n = int(next(x for x in out.splitlines() if x.startswith("prompts: ")).split()[1])
    assert f"+ {n * per_prompt:,} generated ({n} prompts x {per_prompt:,} per prompt: " in out


def test_dry_run_loads_the_tokenizer_only(tmp_path):
    """In a fresh interpreter: the real tokenizer counts, and no sampler module or model class is imported."""
    code = ("import sys, flows.build_pairs as f\n"
            f"rc = f.main(['--dry-run', '--prompts.limit', '3', '--output_dir', {str(tmp_path / 'r')!r}])\n"
            "loaded = sorted(m for m in sys.modules if m == 'samplers' or m.startswith('samplers.') or "
            "'modeling_llama' in m or m == 'vllm')\n"
            "print('RC', rc, 'LOADED', loaded)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "RC 0 LOADED []" in out.stdout, out.stdout + out.stderr
    assert "prompt tokens counted with the model's tokenizer" in out.stdout
    assert not (tmp_path / "r").exists()
