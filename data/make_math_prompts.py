"""Regenerate data/math_prompts.jsonl: arithmetic problems in several families and difficulty levels.

Run: python data/make_math_prompts.py  (deterministic: the same seed writes the same file, byte for byte).

Why synthetic: no GSM8K/MATH copy ships inside a PyPI wheel, and the embedded default must run offline.
The levels are calibrated on SmolLM2-135M-Instruct (data/README.md has the measured accuracies): it should be
right on some samples of a prompt and wrong on others, which is the variance preference pairs are made from.

Each row: id, prompt, answer (a positive integer, as text), family, difficulty (1 = easiest).
- A family is an operation in one surface form (plain arithmetic or a word problem), phrased by several
  templates; a level is a range of operands (OPERANDS), the same for the plain and the word form.
- No two problems share family, template and numbers: a held-out problem is never a training problem with
  other names or objects in it.
- Every (family, level) cell draws from its own random stream (seeded by seed, family and level), so changing
  one cell's size leaves the problems of every other cell unchanged.
- Rows are interleaved by their relative position within their cell, so any prefix of the file (the default run
  uses the first 32; the efficacy experiment the first train-split prompts) has about the whole file's mix.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Iris", "Jonas", "Kemi", "Liam",
         "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq"]
THINGS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "shells", "stamps", "cards", "coins"]


def _add(rng, level):
    if level == 1:
        return rng.randint(2, 9), rng.randint(2, 9)
    if level == 2:
        return rng.randint(10, 19), rng.randint(2, 9)
    return rng.randint(20, 59), rng.randint(10, 39)


def _sub(rng, level):
    if level == 1:
        a = rng.randint(4, 12)
        return a, rng.randint(2, min(9, a - 2))
    if level == 2:
        return rng.randint(13, 29), rng.randint(2, 9)
    return rng.randint(30, 99), rng.randint(10, 29)


def _mul(rng, level):
    if level == 1:
        return rng.randint(2, 5), rng.randint(2, 5)
    if level == 2:
        while True:  # one-digit factors, at least one of them above 5 (so never a level-1 problem)
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            if max(a, b) >= 6:
                return a, b
    return rng.randint(11, 19), rng.randint(2, 9)


# operation -> (operands for a level, answer); division draws (divisor, quotient) like a product's factors
OPERANDS = {"add": (_add, lambda a, b: a + b), "sub": (_sub, lambda a, b: a - b),
            "mul": (_mul, lambda a, b: a * b), "div": (_mul, lambda b, q: q)}

# family -> (operation, templates). Fields: {a} {b} the operands ({ab} = a*b, the dividend of a division),
# {name} {other} two different names, {things} a plural object.
FAMILIES = {
    "sum": ("add", ["What is {a} + {b}?", "Add {a} and {b}.", "What is the sum of {a} and {b}?",
                    "Calculate {a} + {b}."]),
    "difference": ("sub", ["What is {a} - {b}?", "Subtract {b} from {a}.", "What is {a} minus {b}?",
                           "Calculate {a} - {b}."]),
    "product": ("mul", ["What is {a} × {b}?", "Multiply {a} by {b}.", "What is {a} times {b}?",
                        "Calculate {a} × {b}."]),
    "quotient": ("div", ["What is {ab} ÷ {a}?", "Divide {ab} by {a}.", "What is {ab} divided by {a}?",
                         "Calculate {ab} ÷ {a}."]),
    "word_add": ("add", [
        "{name} has {a} {things} and gets {b} more. How many {things} does {name} have now?",
        "{name} has {a} {things}. {other} gives {name} {b} more. How many {things} does {name} have now?",
        "{name} has {a} {things} and {other} has {b} {things}. How many {things} do they have together?",
        "There are {a} {things} in a box and {b} {things} on the table. How many {things} are there in all?"]),
    "word_sub": ("sub", [
        "{name} had {a} {things} and gave {b} of them to {other}. How many {things} does {name} have left?",
        "{name} has {a} {things} and loses {b} of them. How many {things} does {name} have left?",
        "There are {a} {things} in a box. {name} takes out {b}. How many {things} are still in the box?",
        "{name} has {a} {things}. {other} has {b} fewer. How many {things} does {other} have?"]),
    "word_mul": ("mul", [
        "{name} buys {a} bags with {b} {things} in each bag. How many {things} does {name} buy in total?",
        "There are {a} boxes with {b} {things} in each box. How many {things} are there in all?",
        "{name} has {a} friends and gives each friend {b} {things}. How many {things} does {name} give away?",
        "{name} puts {b} {things} in each of {a} rows. How many {things} are there?"]),
    "word_div": ("div", [
        "{name} shares {ab} {things} equally among {a} friends. How many {things} does each friend get?",
        "{name} puts {ab} {things} into {a} equal bags. How many {things} are in each bag?",
        "There are {ab} {things} in {a} equal rows. How many {things} are in each row?",
        "{name} splits {ab} {things} into {a} equal piles. How many {things} are in each pile?"]),
}
TWO_STEP = {  # level -> template, operands, answer
    1: ("{name} has {a} {things}. {other} gives {name} {b} more, and then {c} more. "
        "How many {things} does {name} have now?", lambda r: (r.randint(2, 9), r.randint(2, 9), r.randint(2, 9)),
        lambda a, b, c: a + b + c),
    2: ("{name} has {a} {things}. {other} gives {name} {b} more, and then {name} loses {c}. "
        "How many {things} does {name} have now?", lambda r: (r.randint(10, 19), r.randint(2, 9), r.randint(2, 9)),
        lambda a, b, c: a + b - c),
    3: ("{name} buys {a} boxes of {b} {things} and gives {c} of them to {other}. How many {things} does {name} "
        "have left?", lambda r: (r.randint(2, 5), r.randint(3, 9), r.randint(2, 9)), lambda a, b, c: a * b - c),
}

# Problems per (family, level), chosen from the calibration (data/README.md): most problems at the levels where
# the embedded model's sampled accuracy lies in the ~15-70% band, a few harder ones (level 3, two-step, word
# division) where it is mostly wrong. Cells marked "all" hold every problem the level has (operand pairs x
# templates); a problem-free cell would be an error, not a silent shortfall (make_cell).
CELL_SIZES = {
    "sum": {1: 256, 2: 300, 3: 60},          # level 1: all
    "difference": {1: 176, 2: 250, 3: 40},   # level 1: all
    "product": {1: 64, 2: 192, 3: 80},       # levels 1, 2: all
    "quotient": {1: 64, 2: 192, 3: 60},      # levels 1, 2: all
    "word_add": {1: 256, 2: 300, 3: 40},     # level 1: all
    "word_sub": {1: 176, 2: 80, 3: 30},      # level 1: all
    "word_mul": {1: 64, 2: 192, 3: 80},      # levels 1, 2: all
    "word_div": {1: 64, 2: 40, 3: 30},       # level 1: all
    "two_step": {1: 40, 2: 40, 3: 30},
}


def problem(rng: random.Random, family: str, level: int) -> tuple[str, int, tuple]:
    """(prompt, answer, key): key identifies the problem up to names and objects."""
    name, other = rng.sample(NAMES, 2)
    things = rng.choice(THINGS)
    if family == "two_step":
        template, draw, answer = TWO_STEP[level]
        a, b, c = draw(rng)
        if answer(a, b, c) <= 0:
            return problem(rng, family, level)
        return template.format(a=a, b=b, c=c, name=name, other=other, things=things), answer(a, b, c), (a, b, c)
    operation, templates = FAMILIES[family]
    draw, answer = OPERANDS[operation]
    a, b = draw(rng, level)
    t = rng.randrange(len(templates))
    prompt = templates[t].format(a=a, b=b, ab=a * b, name=name, other=other, things=things)
    return prompt, answer(a, b), (t, a, b)


def make_cell(family: str, level: int, n: int, seed: int) -> list[dict]:
    """n distinct problems of one (family, level), from the cell's own random stream."""
    rng = random.Random(f"{seed}:{family}:{level}")
    rows, seen, tries = [], set(), 0
    while len(rows) < n:
        tries += 1
        if tries > 200 * n:
            raise ValueError(f"{family} level {level}: only {len(rows)} distinct problems, {n} asked")
        prompt, answer, key = problem(rng, family, level)
        if key in seen:
            continue
        seen.add(key)
        rows.append({"prompt": prompt, "answer": str(answer), "family": family, "difficulty": level})
    return rows


def make(seed: int = 2024, sizes: dict[str, dict[int, int]] = CELL_SIZES) -> list[dict]:
    cells = [make_cell(family, level, n, seed) for family, levels in sizes.items() for level, n in levels.items()]
    # interleave by relative position in the cell: every prefix of the file has about the whole file's mix
    order = sorted(((i + 0.5) / len(cell), c, i) for c, cell in enumerate(cells) for i in range(len(cell)))
    rows, prompts = [], set()
    for _, c, i in order:
        row = cells[c][i]
        if row["prompt"] in prompts:
            raise ValueError(f"duplicate prompt across cells: {row['prompt']!r}")
        prompts.add(row["prompt"])
        rows.append({"id": f"math-{len(rows):05d}", **row})
    return rows


def write(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    out = Path(__file__).with_name("math_prompts.jsonl")
    rows = make()
    write(out, rows)
    print(f"wrote {len(rows)} problems to {out}")
