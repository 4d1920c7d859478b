"""Prompt loaders: a file (JSONL, JSON, Parquet, CSV) or a dataset shipped in a package -> PROMPTS + drop rows.

    load_prompts(PromptsConfig) -> (prompts, drops)

`prompts.format` picks the loader: a file format reads `prompts.path` (pipelines/loaders/files.py); `humaneval`
and `mtbench` read the data inside their PyPI packages. All go through `records_to_prompts`
(pipelines/loaders/records.py), so the same drop and error rules hold everywhere. `prompts.split` keeps one side
of the held-out split by prompt hash (`split_of`), before `limit` counts.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipelines.core.config import FILE_FORMATS
from pipelines.core.registry import lookup
from pipelines.loaders.files import detect_format, read_records
from pipelines.loaders.records import PromptFileError, records_to_prompts, split_of

__all__ = ["LOADERS", "FILE_FORMATS", "PromptFileError", "load_prompts", "records_to_prompts", "split_of"]

# Datasets inside pip packages: format name -> "module:function(PromptsConfig) -> (prompts, drops)", imported lazily.
LOADERS: dict[str, str] = {
    "humaneval": "pipelines.loaders.humaneval:load_humaneval",
    "mtbench": "pipelines.loaders.mtbench:load_mtbench",
}


def load_prompts(cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PromptsConfig -> (prompts, drops)."""
    split, fraction = getattr(cfg, "split", "all"), getattr(cfg, "eval_fraction", 0.2)
    if cfg.format in LOADERS:
        loader = lookup(LOADERS, cfg.format, "prompts format")
        if split == "all":
            return loader(cfg)
        # split first, then the limit: the first N prompts *of the split*
        prompts, drops = loader(cfg.model_copy(update={"limit": None}))
        keep = [split_of(list(m), fraction) == split for m in prompts["messages"]]
        prompts = prompts[keep].head(cfg.limit).reset_index(drop=True) if cfg.limit else \
            prompts[keep].reset_index(drop=True)
        return prompts, drops[drops["prompt_id"].isin(prompts["prompt_id"])].reset_index(drop=True)
    path = Path(cfg.path)
    if not path.exists():
        raise FileNotFoundError(f"prompts file not found: {path}")
    fmt = detect_format(path) if cfg.format == "auto" else cfg.format
    return records_to_prompts(read_records(path, fmt), str(path), cfg.prompt_field, cfg.reference_field,
                              cfg.system_prompt, cfg.limit, split, fraction)
