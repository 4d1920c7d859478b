"""Layers run one way: core <- samplers <- scorers <- pipelines' packages <- flows, and nothing imports upward.

Every import statement counts, the lazy ones inside functions too (they are how a layer would sneak upward).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE, SAMPLERS, SCORERS = "pipelines.core", "samplers", "scorers"
LOADERS, REPORTING = "pipelines.loaders", "pipelines.reporting"
PAIRS, STEP_PAIRS, TRAINING = "pipelines.pairs", "pipelines.step_pairs", "pipelines.training"
EVALUATION, ITERATION = "pipelines.evaluation", "pipelines.iteration"

# what each package may import from the project (itself always); flows may import anything
ALLOWED = {
    CORE: set(),
    SAMPLERS: {CORE},
    SCORERS: {CORE, SAMPLERS},  # a judge or the dstc scorer samples with the project's samplers
    LOADERS: {CORE, SCORERS},   # the MT-Bench loader reads its questions through the judges' data reader
    REPORTING: {CORE},
    PAIRS: {CORE, SAMPLERS, SCORERS, LOADERS, REPORTING},
    STEP_PAIRS: {CORE, SAMPLERS, SCORERS, LOADERS, REPORTING},
    TRAINING: {CORE},
    EVALUATION: {CORE, SAMPLERS, SCORERS, LOADERS, PAIRS},
    ITERATION: {CORE, PAIRS, TRAINING, EVALUATION},
}
PROJECT = ("pipelines", "samplers", "scorers", "flows")


def package_of(module: str) -> str:
    for package in sorted(ALLOWED, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return package
    return module.split(".")[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement of a file; `from pkg import mod` names pkg.mod."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, m) for line, m in found if m.split(".")[0] in PROJECT and m != "pipelines"]


def project_files() -> list[Path]:
    return sorted(p for top in PROJECT for p in (ROOT / top).rglob("*.py"))


def test_every_import_runs_one_way():
    wrong = []
    for path in project_files():
        here = package_of(module_name(path))
        if here in ("flows", "pipelines"):  # flows may import anything; pipelines/__init__.py: the next test
            continue
        allowed = ALLOWED[here] | {here}
        for line, target in imports(path):
            there = package_of(target)
            if there == "pipelines" or target.startswith("pipelines.") and there not in ALLOWED:
                continue  # `from pipelines.pairs import build` also yields "pipelines.pairs.build": same package
            if there not in allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_package_files_import_nothing():
    assert imports(ROOT / "pipelines" / "__init__.py") == []
    assert all(package_of(m) == CORE for _, m in imports(ROOT / "pipelines" / "core" / "__init__.py"))


def test_the_allowed_map_has_no_cycle():
    seen, done = set(), set()

    def visit(package, chain):
        assert package not in seen or package in done, f"cycle: {' -> '.join(chain + [package])}"
        if package in done:
            return
        seen.add(package)
        for below in ALLOWED[package]:
            visit(below, chain + [package])
        done.add(package)

    for package in ALLOWED:
        visit(package, [])


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pipelines.pairs import build\n    import flows.cli\n")
    assert [m for _, m in imports(bad)] == ["pipelines.pairs", "pipelines.pairs.build", "flows.cli"]
    assert package_of("pipelines.pairs.build") == PAIRS and PAIRS not in ALLOWED[SCORERS]
