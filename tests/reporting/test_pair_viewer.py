"""The pair viewer in report.html: a seeded sample of pairs with prompt, chosen and rejected side by side,
scores, margin and the drop reasons of the prompt's other candidates; escaped (a response holding a script
shows as text), self-contained, and checked as a browser renders it (headless Chromium, as
tests/flows/test_prefect_ui.py).

No model: candidates and scores are written as the batch shards pipelines.pairs.build.finalize reads, so the
real finalize (selection, report writing) runs on them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html import escape

import numpy as np
import pandas as pd
import pytest

from pipelines.core import io, schema
from pipelines.pairs import build
from pipelines.pairs.config import BuildConfig
from pipelines.reporting import pair_viewer

K = 4
PAYLOAD = ("<script>document.title='PWNED';document.documentElement.setAttribute('data-pwned','script')</script>"
           "<img src=x onerror=\"document.documentElement.setAttribute('data-pwned','img')\"> & 5 < 7")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _shards(run: build.Run) -> list[build.BatchResult]:
    """Per prompt: candidate 0 correct, the others correct by chance; the first prompt's candidate 0 is the
    script payload (the most confident: its chosen response) and its candidate 3 has a scorer error."""
    prompts = run.prompts()
    first = prompts["prompt_id"].iloc[0]
    rng = np.random.default_rng(0)
    results = []
    for b in run.batches:
        cands, scores = [], []
        for pid in b.prompt_ids:
            for j in range(K):
                cid = f"{pid[:8]}-{j}"
                text = PAYLOAD if (pid == first and j == 0) else f"answer {j} to {pid[:6]}"
                cands.append(dict(candidate_id=cid, prompt_id=pid, sample_index=j, text=text, finish_reason="stop",
                                  prompt_tokens=20, completion_tokens=10 + j, logprob_sum=-3.0 - j,
                                  sampler="openai", model="test-model", seed=7))
                error = "boom: no answer" if (pid == first and j == 3) else None
                scores.append(dict(candidate_id=cid, prompt_id=pid, scorer="math_verify", details="{}", error=error,
                                   score=None if error else float(j == 0 or rng.random() < 0.3)))
                scores.append(dict(candidate_id=cid, prompt_id=pid, scorer="confidence", details="{}", error=None,
                                   score=0.99 if text == PAYLOAD else float(rng.uniform(0.1, 0.9))))
        io.write_table(schema.frame([], schema.DROPS), run.shard(b, "sample", "drops"), schema.DROPS)
        io.write_table(schema.frame(cands, schema.CANDIDATES), run.shard(b, "sample", "candidates"), schema.CANDIDATES)
        io.write_table(schema.frame(scores, schema.SCORES), run.shard(b, "score"), schema.SCORES)
        results.append(build.BatchResult(b.index, len(b.prompt_ids), False, {"sample": 1}, {"sample": 0.5}))
    return results


@pytest.fixture
def run(tmp_path):
    # one pair per prompt (mu_2sigma): every prompt then has other candidates, whose drop reasons the viewer shows
    config = BuildConfig.model_validate({"run_id": "viewer", "output_dir": str(tmp_path), "prompts": {"limit": 10},
                                         "batch_size": 5, "sampler": {"k": K}, "selection": {"rule": "mu_2sigma"}})
    r = build.prepare(config)
    manifest = build.finalize(r, _shards(r))
    return manifest, open(manifest["reports"]["report_html"], encoding="utf-8").read()


def test_every_pair_shows_prompt_both_sides_scores_margin_and_the_other_candidates(run):
    manifest, html = run
    pairs = pd.read_parquet(f"{manifest['run_dir']}/pairs.parquet")
    drops = pd.read_parquet(f"{manifest['run_dir']}/drops.parquet")
    assert f"<h2 id='pairs'>Pairs: {len(pairs)} of {len(pairs)}</h2>" in html
    blocks = re.findall(r"<details class='pair'.*?</details>", html, re.S)
    assert len(blocks) == len(pairs) >= 5
    for block, pair in zip(blocks, pairs.itertuples(index=False)):
        assert f"margin {pair.margin:.4g}</span>" in block
        chosen, rejected = block.split("class='side rejected'")
        assert escape(pair.chosen[-1]["content"]) in chosen and f"reward {pair.chosen_score:.4g}" in chosen
        assert escape(pair.rejected[-1]["content"]) in rejected and f"reward {pair.rejected_score:.4g}" in rejected
        assert escape(pair.prompt[-1]["content"]) in block and "math_verify " in chosen and "confidence " in chosen
        others = drops[(drops["prompt_id"] == pair.prompt_id) & drops["candidate_id"].notna()
                       & ~drops["candidate_id"].isin([pair.chosen_id, pair.rejected_id])]
        assert len(others) >= 1
        for reason in others["reason"]:
            assert f"select/{reason}" in block
    assert blocks[0].startswith("<details class='pair' open>") and all("open" not in b[:30] for b in blocks[1:])
    # the first prompt: the payload is its chosen side (as text), the errored candidate shows reason and error
    (first,) = [b for b in blocks if escape(PAYLOAD) in b]
    assert escape(PAYLOAD) in first.split("class='side rejected'")[0].split("class='side chosen'")[1]
    assert "select/score_error: math_verify: boom: no answer" in first


def test_responses_are_escaped_and_the_page_has_no_script(run):
    _, html = run
    assert "<script" not in html and "<img src=x" not in html and "<link" not in html
    assert escape(PAYLOAD) in html  # shown as text
    assert "&amp; 5 &lt; 7" in html


def test_the_sample_is_seeded_capped_and_long_texts_are_cut(run):
    manifest, _ = run
    section = pair_viewer.pair_viewer_html(manifest["run_dir"], n=3, max_chars=8)
    assert section.count("<details class='pair'") == 3 and "Pairs: 3 of " in section
    assert section == pair_viewer.pair_viewer_html(manifest["run_dir"], n=3, max_chars=8)
    assert re.search(r"\[… \d+ more characters\]", section)
    shown = re.findall(r"prompt <code>(\w+)</code>", section)
    order = list(pd.read_parquet(f"{manifest['run_dir']}/pairs.parquet")["prompt_id"])
    assert shown == sorted(shown, key=order.index)  # file order


def test_a_run_without_pairs_says_so(tmp_path):
    assert "has no pairs" in pair_viewer.pair_viewer_html(tmp_path)


def _dom(path, tmp_path, name: str) -> str:
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / ('profile-' + name)}", "--virtual-time-budget=3000",
                          "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install-cpu.sh installs it)")
def test_chromium_renders_the_viewer_and_runs_no_response_script(run, tmp_path):
    from pathlib import Path
    manifest, html = run
    dom = _dom(Path(manifest["reports"]["report_html"]), tmp_path, "report")
    assert "data-pwned" not in dom.split("<body", 1)[0] and "<title>PWNED" not in dom  # nothing ran
    assert "<title>pairsmith run viewer</title>" in dom and '<a href="#pairs">Read the pairs</a>' in dom
    assert len(re.findall(r"<details class=\"pair\"", dom)) == len(pd.read_parquet(
        f"{manifest['run_dir']}/pairs.parquet"))
    assert '<details class="pair" open="">' in dom and "&lt;script&gt;document.title" in dom
    # the same payload unescaped does run in this browser: the check above can fail
    control = tmp_path / "control.html"
    control.write_text(html.replace(escape(PAYLOAD), PAYLOAD), encoding="utf-8")
    assert 'data-pwned="' in _dom(control, tmp_path, "control").split("<body", 1)[0]
    shot = tmp_path / "viewer.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile-shot'}", "--window-size=1200,4200",
                    f"--screenshot={shot}", Path(manifest["reports"]["report_html"]).as_uri()],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000
    if os.environ.get("PAIRSMITH_UI_SHOTS"):  # keep the screenshot (e.g. for docs/); it stays in tmp_path otherwise
        shutil.copy(shot, Path(os.environ["PAIRSMITH_UI_SHOTS"]) / "report-pair-viewer.png")
