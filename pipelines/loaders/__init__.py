"""Prompt loaders: a file (JSONL, JSON, Parquet, CSV), a Hugging Face dataset (a Hub name or a local dataset
directory) or a dataset shipped in a package -> PROMPTS + drop rows.

    load_prompts(PromptsConfig) -> (prompts, drops)

`prompts.format` picks the loader (`auto`: by what `prompts.path` is, PromptsConfig.source_kind): a file format
reads the file (pipelines/loaders/files.py), `dataset` a Hugging Face dataset (pipelines/loaders/hf_datasets.py);
`humaneval` and `mtbench` read the data inside their PyPI packages. All go through `records_to_prompts`
(pipelines/loaders/records.py), so the same drop and error rules hold everywhere. `prompts.split` keeps one side
of the held-out split by prompt hash (`split_of`), before `limit` counts.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipelines.core.config import FILE_FORMATS
from pipelines.core.registry import lookup
from pipelines.loaders.files import read_records
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
    kind = cfg.source_kind()
    if kind == "dataset":
        from pipelines.loaders.hf_datasets import read_rows, source_name
        records, source = read_rows(cfg), source_name(cfg)
    else:
        path = Path(cfg.path)
        if not path.is_file():
            raise PromptFileError(f"prompts file not found: {path}")
        records, source = read_records(path, kind), str(path)
    return records_to_prompts(records, source, cfg.prompt_field, cfg.reference_field, cfg.system_prompt,
                              cfg.limit, split, fraction)
