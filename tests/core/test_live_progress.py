"""Live progress inside a batch: the sampler's reports -> lines (prompts done, tokens/s, ETA) and a fraction for
the Prefect progress bar; vLLM's progress callback turned into the same reports. No model here."""

from __future__ import annotations

from pipelines.core import progress
from pipelines.core.progress import SamplingProgress, listening, report_generated, sampling


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_reports_become_lines_with_rate_and_eta_and_a_fraction():
    clock, lines, fractions = Clock(), [], []
    live = SamplingProgress("batch 1/2", 16, lines.append, every=5.0, on_fraction=fractions.append, clock=clock)
    with listening(live):
        clock.now = 10.0
        report_generated(4, 200)   # first report: a line at once
        clock.now = 12.0
        report_generated(4, 100)   # 2 s later: throttled
        clock.now = 16.0
        report_generated(4, 300)   # 6 s after the last line
        clock.now = 20.0
        report_generated(4, 200)   # all done: the batch's own line follows, none here
    assert lines == ["batch 1/2: 4/16 prompts sampled, 200 tokens, 20.0 tok/s, ETA 30s",
                     "batch 1/2: 12/16 prompts sampled, 600 tokens, 37.5 tok/s, ETA 5s"]
    assert fractions == [0.25, 0.5, 0.75, 1.0]


def test_no_listener_no_effect_and_listeners_nest():
    report_generated(3, 30)  # nobody listens: nothing happens, nothing fails
    outer, inner = [], []
    with listening(lambda p, t: outer.append((p, t))):
        report_generated(1, 10)
        with listening(lambda p, t: inner.append((p, t))):
            report_generated(2, 20)
        report_generated(3, 30)
    report_generated(4, 40)
    assert outer == [(1, 10), (3, 30)] and inner == [(2, 20)]


def test_without_a_prompt_count_the_line_shows_tokens_and_rate_only():
    clock, lines = Clock(), []
    live = SamplingProgress("batch 2/3", None, lines.append, clock=clock)
    clock.now = 4.0
    live(5, 120)
    assert lines == ["batch 2/3: 120 tokens, 30.0 tok/s"]


def test_sampling_context_listens_only_inside(monkeypatch):
    lines = []
    with sampling("batch 1/1", 2, lines.append, every=0.0) as live:
        report_generated(1, 7)
    report_generated(1, 7)
    assert live.prompts == 1 and live.tokens == 7 and len(lines) == 1
    assert progress._LISTENER.get() is None


def test_vllm_progress_hook_turns_its_engine_loop_into_reports(monkeypatch):
    """Drive the hook exactly as vLLM's LLM._run_engine drives its tqdm: rendering wraps an iterable, the engine
    loop reads format_dict['elapsed'], sets postfix to its running rates, then calls update(len(outputs))."""
    from samplers import vllm_backend
    times = iter([100.0, 101.0, 101.0, 103.0, 103.0])  # attach, then two elapsed reads per finished request
    monkeypatch.setattr(vllm_backend.time, "perf_counter", lambda: next(times))
    reports = []
    hook = vllm_backend.ProgressHook(k=4)
    conversations = [["a"], ["b"]]
    with listening(lambda p, t: reports.append((p, t))):
        assert hook.attach(conversations, desc="Rendering conversations") is conversations
        bar = hook.attach(total=8, desc="Processed prompts", dynamic_ncols=True, postfix="")
        assert bar is hook
        total_out = 0
        for out_tokens in (40, 60):  # two requests finish, each with k=4 completions
            total_out += out_tokens
            elapsed = bar.format_dict["elapsed"]
            bar.postfix = f"est. speed input: 1.00 toks/s, output: {total_out / elapsed:.2f} toks/s"
            bar.update(4)
        hook.finish(2, 101)  # the exact total from the outputs: the remainder is reported
    assert reports == [(1, 40), (1, 60), (0, 1)]
    assert sum(p for p, _ in reports) == 2 and sum(t for _, t in reports) == 101
