"""Regenerate data/math_prompts.jsonl: small arithmetic word problems with exact answers.

Run: python data/make_math_prompts.py  (deterministic: the same seed writes the same file, byte for byte).

Why synthetic: no GSM8K/MATH copy ships inside a PyPI wheel, and the embedded default must run offline.
The problems are easy on purpose: SmolLM2-135M-Instruct gets some right and some wrong, which is the
variance preference pairs are made from.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Iris", "Jonas", "Kemi", "Liam",
         "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq"]
THINGS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "shells", "stamps", "cards", "coins"]


def _problem(rng: random.Random, template: str) -> tuple[str, int]:
    name, other = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    if template == "add":
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        return f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b
    if template == "sub":
        a = rng.randint(8, 30)
        b = rng.randint(2, a - 2)
        return f"{name} had {a} {thing} and gave {b} of them to {other}. How many {thing} does {name} have left?", a - b
    if template == "mul":
        a, b = rng.randint(2, 5), rng.randint(2, 6)
        return f"{name} buys {a} bags with {b} {thing} in each bag. How many {thing} does {name} buy in total?", a * b
    if template == "div":
        b, q = rng.randint(2, 5), rng.randint(2, 6)
        return (f"{name} shares {b * q} {thing} equally among {b} friends. How many {thing} does each friend get?", q)
    if template == "two_step":
        a, b, c = rng.randint(5, 15), rng.randint(2, 4), rng.randint(1, 5)
        return (f"{name} has {a} {thing}. {other} gives {name} {b} packs of 2 {thing}, and then {name} loses {c}. "
                f"How many {thing} does {name} have?", a + 2 * b - c)
    raise ValueError(template)


def make(n: int = 240, seed: int = 2024) -> list[dict]:
    rng = random.Random(seed)
    templates = ["add", "sub", "mul", "div", "two_step"]
    rows, seen = [], set()
    while len(rows) < n:
        template = templates[len(rows) % len(templates)]
        question, answer = _problem(rng, template)
        if question in seen:
            continue
        seen.add(question)
        rows.append({"id": f"arith-{len(rows):04d}", "prompt": question, "answer": str(answer), "template": template})
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("math_prompts.jsonl")
    with out.open("w") as f:
        for row in make():
            f.write(json.dumps(row) + "\n")
    print(f"wrote {out}")
