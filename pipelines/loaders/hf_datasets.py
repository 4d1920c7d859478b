"""Hugging Face datasets as prompts (`prompts.format: dataset`, or `auto` when `prompts.path` is a directory or a
Hub dataset name) -> (row number, record) pairs for `records_to_prompts`.

- a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` is opened with `load_from_disk`
  (a DatasetDict by `prompts.dataset_split`);
- any other directory (data files, with or without a dataset card whose YAML header declares `configs`) and a Hub
  name go through `load_dataset(path, name=prompts.dataset_config, split=prompts.dataset_split,
  streaming=prompts.streaming)`; offline (HF_DATASETS_OFFLINE=1) a Hub name works once it is in the cache.

Rows are numbered from 1 within the split, so a drop's detail reads `<path>[<config>/<split>]:<row>`. Records
are read lazily: `limit` stops the reading, and with `streaming: true` nothing is downloaded or prepared beyond
the rows read. A missing dataset, config, split or column is a PromptFileError naming it; message-list columns
(UltraFeedback's `messages`, `chosen`) and plain-text columns both work (pipelines/loaders/records.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipelines.core.errors import MissingDependency
from pipelines.loaders.records import PromptFileError


def source_name(cfg) -> str:
    """How prompts of this dataset are named in details: path[config/split] (path[split] without a config)."""
    inner = f"{cfg.dataset_config}/{cfg.dataset_split}" if cfg.dataset_config else cfg.dataset_split
    return f"{cfg.path}[{inner}]"


def is_saved_dataset(path: Path) -> bool:
    """A `save_to_disk` directory: a Dataset (state.json) or a DatasetDict (dataset_dict.json)."""
    return path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists())


@contextmanager
def _quiet(datasets):
    """datasets' own progress bars ("Generating train split") are not the run's progress: off while loading."""
    was_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_off:
            datasets.enable_progress_bars()


def open_dataset(cfg):
    """The split to read, as a datasets Dataset or IterableDataset."""
    try:
        import datasets
    except ModuleNotFoundError:
        raise MissingDependency("a dataset as prompts.path needs the datasets package: pip install datasets") \
            from None
    path, source = Path(cfg.path), source_name(cfg)
    with _quiet(datasets):
        if is_saved_dataset(path):
            if cfg.dataset_config:
                raise PromptFileError(f"{path}: a save_to_disk directory has no configs (prompts.dataset_config "
                                      f"{cfg.dataset_config!r} applies to load_dataset sources)")
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if cfg.dataset_split not in ds:
                    raise PromptFileError(f"{path}: no split {cfg.dataset_split!r} (splits: {sorted(ds)})")
                ds = ds[cfg.dataset_split]
            return ds.to_iterable_dataset() if cfg.streaming else ds
        try:
            return datasets.load_dataset(str(path), name=cfg.dataset_config, split=cfg.dataset_split,
                                         streaming=cfg.streaming)
        except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as e:
            raise PromptFileError(f"{source}: no such file, dataset directory or Hub dataset "
                                  f"({_first_line(e)})") from None
        except ValueError as e:  # unknown split or config, a config name missing: datasets lists the choices
            raise PromptFileError(f"{source}: {_first_line(e)}") from None


def read_rows(cfg) -> Iterator[tuple[int, dict]]:
    """Yield (1-based row number within the split, record)."""
    ds = open_dataset(cfg)
    columns = getattr(ds, "column_names", None)  # None for some streamed sources until the first row
    if columns is not None and cfg.prompt_field not in columns:
        raise PromptFileError(f"{source_name(cfg)}: no column {cfg.prompt_field!r} (columns: {sorted(columns)})")
    for row, record in enumerate(ds, start=1):
        yield row, record


def _first_line(error: Exception) -> str:
    """datasets' message on one line (it lists the configs or splits to choose from), without its usage example."""
    text = str(error).split("Example of usage")[0]
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(error).__name__
