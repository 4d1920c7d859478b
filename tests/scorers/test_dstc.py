"""The DSTC scorer's pieces: assert statements taken from a written test response, pass-matrix scores and weights."""

from __future__ import annotations

import pytest


def test_dstc_assert_extraction_and_matrix_weights():
    from scorers.dstc import extract_asserts, matrix_scores
    text = ("```python\nassert f(1) == 2\nassert f(1) == 2\nassert True\nassert g(3) == 1\n"
            "assert f(2) == 3  # ok\nassert f(\n```")
    assert extract_asserts(text, "f") == ["assert f(1) == 2", "assert f(2) == 3"]
    scores, weights = matrix_scores([[True, False, False], [True, True, False]], unpassed_weight=0.5)
    assert weights == [1.0, 1.0, 0.5]
    assert scores == pytest.approx([1 / 2.5, 2 / 2.5])
