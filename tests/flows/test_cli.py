"""The shared flow CLI (flows/cli.py): --help imports nothing heavy, a bad config is one line and exit code 2."""

from __future__ import annotations


def test_cli_help_does_not_import_heavy_modules():
    import subprocess
    import sys
    code = ("import sys, flows.build_pairs as f, flows.cli as c; c.parser(f.BuildConfig, 'x', 'y').format_help(); "
            "print(sorted(m for m in ('torch', 'prefect', 'transformers', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_rejects_bad_config_with_exit_2(capsys):
    from flows.build_pairs import main
    assert main(["--sampler.k", "1"]) == 2
    assert "sampler.k" in capsys.readouterr().err
    assert main(["--selection.rule", "nope"]) == 2
