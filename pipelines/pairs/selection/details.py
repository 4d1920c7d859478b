"""Drop-row detail text for many rows at once, as arrow string arrays (no Python loop per row)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TEXT = pa.large_string()  # the type of schema.DROPS' string columns once drop_rows has them


def format_g6(values, prefix: str = "") -> pa.Array:
    """[f"{prefix}{v:.6g}" for v in values] as an arrow string array, without a Python loop per row.

    %.6g rounds to 6 significant digits, m * 10^(e-5) with 10^5 <= m < 10^6, and prints the value positionally
    when -4 <= e < 6, trailing zeros (then the point) removed. The digits come from arrow's integer-to-string cast
    of m with a leading sentinel digit that also carries the leading zeros: 0.0409735 is m = 409735, e = -2, so
    10^7 + m prints "10409735"; trailing zeros are trimmed and the sentinel "1" is replaced by prefix + "0.".
    Values >= 1 are the integer part and the fraction (sentinel 10^f + fraction) joined. m = rint(|v| * 10^(5-e))
    is off by far less than 1e-6, so it is the correctly rounded value unless the product lies within 1e-6 of a
    half (where round-half-even on the exact binary value decides): those, exponent-form values (e < -4 or
    e >= 6), inf and NaN are formatted by Python, as is every row when there are only a few. e is taken from
    log10 and checked by m's range: a wrong e (log10 off by one next to 10^k, an exponent outside [-4, 5]) puts
    m outside [10^5, 10^6)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    n = len(x)
    if n < 64:
        return pa.array([f"{prefix}{v:.6g}" for v in x.tolist()], type=TEXT)
    unit = 0 < x.min() and x.max() < 1  # rewards in (0, 1) (NaN fails both): one kind of text, no sign
    a = x if unit else np.abs(x)
    # in place where it can: at 800k rows every fresh temporary is 6.4 MB of pages to fault in
    scaled, work = np.empty(n), np.empty(n)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0, inf, NaN: any e (they are set apart below)
        np.floor(np.log10(a, out=scaled), out=scaled)  # 10^e <= a < 10^(e+1), but off by one next to 10^k
        e = scaled.astype(np.int8)
    np.clip(e, -4, 5, out=e)
    e = e.astype(np.intp)  # (gathers with intp indices are twice as fast)
    np.multiply(a, np.take(_POW10F, 6 - e, out=scaled), out=scaled)
    m = np.rint(scaled)
    with np.errstate(invalid="ignore"):  # NaN, inf - inf
        # python: near a half; or m out of [10^5, 10^6): e was wrong (exponent form, off by one, a clipped
        # NaN/inf/0) or 999999.7 rounded up to the next power of ten
        ok = np.abs(np.subtract(scaled, m, out=work), out=work) <= 0.5 - 1e-6
        ok &= np.abs(np.subtract(scaled, 549999.5, out=work), out=work) <= 450000.0
        python = ~ok
        np.copyto(work.view(np.int64), m, casting="unsafe")
        m = work.view(np.int64)
    if unit:  # kind 0 everywhere but the python rows
        common, other = 0, np.flatnonzero(python)
        kind = np.where(python, np.int8(6), np.int8(0)) if len(other) else None
    else:
        kind = (e >= 0).view(np.int8) * 2 + np.signbit(x).view(np.int8)  # 0: (0, 1), 1: (-1, 0), 2: >= 1, 3: <= -1
        zero = a == 0
        if zero.any():
            kind[zero] += 4  # 4: 0, 5: -0 (the signbit is kept, as Python prints it)
            python &= ~zero
        kind[python] = 6
        common = int(np.bincount(kind[::max(1, n // 4096)], minlength=7).argmax())  # a sample: which is common
        other = np.flatnonzero(kind != common)
    text = _texts(common, e, m, x, prefix)  # computed for every row; the other rows are replaced below
    if not len(other):
        return text
    kinds = kind[other]
    parts = [(np.flatnonzero(kinds == k), None) for k in np.unique(kinds).tolist()]
    parts = [(at, _texts(int(kinds[at[0]]), e[other[at]], m[other[at]], x[other[at]], prefix)) for at, _ in parts]
    return _replace_rows(text, other, _in_row_order(len(other), parts))


def _texts(kind: int, e: np.ndarray, m: np.ndarray, x: np.ndarray, prefix: str) -> pa.Array:
    """The text of rows of one kind (see format_g6); garbage, never an error, for rows of another kind."""
    sign = "-" if kind in (1, 3, 5) else ""
    if kind in (0, 1):
        sentinel = np.take(_POW10I, 5 - e)
        return _fraction(np.add(sentinel, m, out=sentinel), prefix + sign + "0.")
    if kind in (2, 3):
        whole, part = np.divmod(m, _POW10I[5 - e])
        fraction = pc.ascii_rtrim(_fraction(_POW10I[5 - e] + part, "."), ".")  # no point without a fraction
        return join(prefix + sign, pc.cast(pa.array(whole), TEXT), fraction)
    if kind in (4, 5):
        return pa.repeat(pa.scalar(prefix + sign + "0", TEXT), len(x))
    return pa.array([f"{prefix}{v:.6g}" for v in x.tolist()], type=TEXT)


def _fraction(sentinel_digits: np.ndarray, head: str) -> pa.Array:
    """The digits after a leading sentinel digit, trailing zeros trimmed, with head in place of the sentinel."""
    text = pc.ascii_rtrim(pc.cast(pa.array(sentinel_digits), TEXT), "0")
    return pc.binary_replace_slice(text, 0, 1, head)


def _in_row_order(n: int, parts: list) -> pa.Array:
    """One array from (rows, texts) parts whose rows partition range(n)."""
    if len(parts) == 1:
        return parts[0][1]
    order = np.concatenate([rows for rows, _ in parts])
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return pa.concat_arrays([text for _, text in parts]).take(pa.array(inverse))


def _replace_rows(text: pa.Array, rows: np.ndarray, new: pa.Array) -> pa.Array:
    """text with text[rows[i]] = new[i]. A few rows are spliced in (replace_with_mask or a take rewrite the whole
    array: several times slower for a handful); many through one take."""
    if len(rows) > 2000:
        index = np.arange(len(text))
        index[rows] = len(text) + np.arange(len(rows))
        return pa.concat_arrays([text, new]).take(pa.array(index))
    pieces, start = [], 0
    for j, i in enumerate(rows.tolist()):
        pieces += [text.slice(start, i - start), new.slice(j, 1)]
        start = i + 1
    return pa.concat_arrays([*pieces, text.slice(start)])


_POW10F = 10.0 ** np.arange(-1, 11)  # _POW10F[6 - e] = 10^(5 - e) for e in [-5, 6]
_POW10I = 10 ** np.arange(19, dtype=np.int64)


def join(*parts) -> pa.Array:
    """Element-wise concatenation of arrow string arrays and str scalars."""
    return pc.binary_join_element_wise(*(pa.scalar(p, TEXT) if isinstance(p, str) else p for p in parts),
                                       pa.scalar("", TEXT))


def ints_to_str(ints: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.asarray(ints, dtype=np.int64)), TEXT)
