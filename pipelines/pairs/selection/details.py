"""Drop-row detail text for many rows at once, as arrow string arrays (no Python loop per row)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def format_g6(values) -> pa.Array:
    """[f"{v:.6g}" for v in values] as an arrow string array, without a Python loop.

    %.6g prints a value rounded to 6 significant digits in its shortest form, and positionally when its decimal
    exponent is in [-4, 6); there that is arrow's shortest float-to-string of the double nearest to the rounded
    decimal (m / 10^k, k <= 9, is exact division: that double). Values whose rounding is within 1e-6 of a half
    (where a*10^k's own rounding error could flip it), exponent-form values, inf and NaN go through Python."""
    x = np.asarray(values, dtype=np.float64)
    a = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.floor(np.log10(a))
    e = np.clip(np.nan_to_num(e, nan=0.0, posinf=5.0, neginf=0.0), -4, 5).astype(np.intp)
    scaled = a * _POW10[5 - e]
    off = (scaled >= 1e6).view(np.int8) - (scaled < 1e5).view(np.int8)  # log10 is off by one next to 10^k
    if off.any():
        e = np.clip(e + off, -4, 5)
        scaled = a * _POW10[5 - e]
    m = np.rint(scaled)
    with np.errstate(invalid="ignore"):  # inf - inf
        python = ~np.isfinite(x) | ((a > 0) & ((np.abs(scaled - m) > 0.5 - 1e-6) | (scaled < 1e5)
                                               | (m > 1e6) | ((m == 1e6) & (e == 5))))
    rounded = np.where(a > 0, np.copysign(m / _POW10[5 - e], x), x)
    rounded[python] = 0.0
    out = pc.cast(pa.array(rounded), pa.string())
    at = np.flatnonzero(python)
    if len(at) > 1000:
        out = pc.replace_with_mask(out, pa.array(python), pa.array([f"{v:.6g}" for v in x[at].tolist()]))
    elif len(at):  # usually a handful: splice them in (replace_with_mask rewrites the whole array: 10x slower)
        pieces, start = [], 0
        for i, v in zip(at.tolist(), x[at].tolist()):
            pieces += [out.slice(start, i - start), pa.array([f"{v:.6g}"], pa.string())]
            start = i + 1
        out = pa.concat_arrays([*pieces, out.slice(start)])
    return out


_POW10 = 10.0 ** np.arange(10)


def join(*parts) -> pa.Array:
    """Element-wise concatenation of arrow string arrays and str scalars."""
    return pc.binary_join_element_wise(*parts, "")


def ints_to_str(ints: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.asarray(ints, dtype=np.int64)), pa.string())
