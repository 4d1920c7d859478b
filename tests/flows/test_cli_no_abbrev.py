"""A flag that is only a prefix of a config field is an error, not that field: argparse's abbreviations turned
`--sampler.openai.api_key sk-...` into `api_key_env = sk-...` (the secret in the manifest) and started a run."""

from __future__ import annotations

import pytest

from flows.cli import parser
from pipelines.pairs.config import BuildConfig


def test_a_prefix_of_a_flag_is_rejected(capsys):
    p = parser(BuildConfig, "build_pairs", "test")
    assert vars(p.parse_args(["--sampler.openai.api_key_env", "MY_KEY"]))["set:sampler.openai.api_key_env"] == "MY_KEY"
    with pytest.raises(SystemExit) as exit_:
        p.parse_args(["--sampler.openai.api_key", "sk-secret"])
    assert exit_.value.code == 2 and "unrecognized arguments: --sampler.openai.api_key" in capsys.readouterr().err
