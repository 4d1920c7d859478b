"""Content-hash ids and per-prompt seeds: the same input gives the same id on every machine and rerun.

- prompt_id    = hash(messages)                          (the conversation, not the file row)
- candidate_id = hash(prompt_id, model, seed, sample_index, text)
- prompt_seed  = hash(seed, prompt_id): a prompt's samples do not depend on the batch it lands in
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_hash(*parts: Any, length: int = 16) -> str:
    """Hex digest of the JSON encoding of parts: stable across processes, machines and Python versions."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.blake2b(blob.encode("utf-8"), digest_size=32).hexdigest()[:length]


def prompt_id(messages: list[dict]) -> str:
    return stable_hash("prompt", [(m["role"], m["content"]) for m in messages])


def candidate_id(prompt_id_: str, model: str, seed: int, sample_index: int, text: str) -> str:
    return stable_hash("candidate", prompt_id_, model, seed, sample_index, text)


def prompt_seed(seed: int, prompt_id_: str) -> int:
    """Per-prompt seed: the same prompt gets the same samples whatever batch it lands in."""
    return int(stable_hash("seed", seed, prompt_id_), 16) % (2**31 - 1)
