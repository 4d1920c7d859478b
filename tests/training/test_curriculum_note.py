"""train_dpo with curriculum: true on pairs of one tier says so (log, summary, metrics.json) and trains them as
one tier; several tiers train in order without a note. train_tier is replaced by a recorder: no model here."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.training import dpo
from pipelines.training.config import TrainConfig


def pairs_file(path, tiers: list[int]) -> str:
    rows = [{"prompt": [{"role": "user", "content": f"q{i}?"}], "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": "b"}], "tier": t, "weight": 1.0}
            for i, t in enumerate(tiers)]
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


@pytest.fixture
def trained(monkeypatch):
    calls = []

    def train_tier(cfg, dataset, tier, start, reference, dest, work, log=print):
        calls.append((tier, len(dataset)))
        return {"tier": tier, "pairs": len(dataset), "steps": 0, "train_loss": None, "log": [], "model": str(dest)}
    monkeypatch.setattr(dpo, "train_tier", train_tier)
    monkeypatch.setattr(dpo, "resolve_model", lambda name: name)
    return calls


def test_one_tier_with_curriculum_says_so(tmp_path, trained):
    cfg = TrainConfig(pairs=[pairs_file(tmp_path / "p.parquet", [0, 0, 0])], output_dir=str(tmp_path / "out"),
                      curriculum=True)
    lines = []
    metrics = dpo.run(cfg, log=lines.append)
    note = "curriculum: true, but every pair is in tier 0 (3 pairs): training them as one tier"
    assert any(line.startswith(note) for line in lines)
    assert metrics["curriculum_note"].startswith(note) and note in dpo.summary_text(metrics)
    assert trained == [(0, 3)]


def test_several_tiers_train_in_order_without_a_note(tmp_path, trained):
    cfg = TrainConfig(pairs=[pairs_file(tmp_path / "p.parquet", [1, 0, 1, 2])], output_dir=str(tmp_path / "out"),
                      curriculum=True)
    lines = []
    metrics = dpo.run(cfg, log=lines.append)
    assert trained == [(0, 1), (1, 2), (2, 1)]
    assert metrics["curriculum_note"] is None and not any("curriculum" in line for line in lines)
    off = TrainConfig(pairs=cfg.pairs, output_dir=str(tmp_path / "off"), curriculum=False)
    assert dpo.curriculum_note(off, dpo.check_pairs_files(off.pairs), True) is None
