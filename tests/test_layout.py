"""The package's families, one folder each, and the one direction imports run in:
workbench -> measure, profiling, exporter -> aio, jsonl -> the base (``_validate``,
``_files``); no module is exempt (the CLI lives in the workbench). Data types sit below
the code that uses them, and notebooks hold no logic."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "perflab"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)

#: The families each family may import (besides itself).
ALLOWED = {
    "base": set(),
    "aio": {"base"},
    "jsonl": {"base"},
    "measure": {"base", "aio", "jsonl"},
    "profiling": {"base", "aio", "jsonl", "measure"},  # the profiler times with measure.stats
    "exporter": {"base", "aio", "jsonl"},
    "workbench": {"base", "aio", "jsonl", "measure", "profiling", "exporter"},
}


def family(module: str) -> str:
    """``perflab.aio.taskpool`` -> "aio"; ``perflab._validate`` -> "base"."""
    parts = module.split(".")
    if len(parts) < 2:
        return "top"
    return "base" if parts[1] in ("_validate", "_files") else parts[1]


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def imported_modules(path: Path) -> set[str]:
    """Every perflab module ``path`` imports, at the top, inside a function or under
    ``TYPE_CHECKING``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("perflab"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("perflab"))
    return found


def test_every_module_belongs_to_a_family() -> None:
    assert {family(module_of(p)) for p in MODULES} == set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_of(p))
def test_imports_run_one_way(path: Path) -> None:
    own = family(module_of(path))
    wrong = {m for m in imported_modules(path) if family(m) not in ALLOWED[own] | {own}}
    assert not wrong, f"{module_of(path)} ({own}) imports {sorted(wrong)}"


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        ("perflab.profiling.result", "perflab.profiling.profiler"),
        ("perflab.profiling.result", "perflab.profiling.rules"),
        ("perflab.profiling.result", "perflab.profiling.report"),
        ("perflab.profiling.rules", "perflab.profiling.report"),
        ("perflab.measure.results", "perflab.measure.analysis"),
        ("perflab.measure.stats", "perflab.measure.timing"),
    ],
)
def test_data_types_sit_below_the_code_that_uses_them(lower: str, upper: str) -> None:
    path = PACKAGE.parent / (lower.replace(".", "/") + ".py")
    assert upper not in imported_modules(path)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_cells_define_no_function_or_class(path: Path) -> None:
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    for cell in cells:
        source = "".join(cell["source"])
        flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        tree = compile(source, path.name, "exec", flags=flags)
        defined = [
            getattr(node, "name", "lambda")
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda)
        ]
        assert not defined, f"{path.name} defines {defined}: that logic belongs in perflab.workbench"


def test_the_primitives_import_no_numpy_pandas_or_matplotlib() -> None:
    """perflab.aio and perflab.jsonl stand on the standard library and their codecs; numpy
    loads only for the reader's fallback index, where the C one was not compiled."""
    import subprocess
    import sys

    modules = [
        module_of(p)
        for p in MODULES
        if family(module_of(p)) in ("aio", "jsonl") and p.stem != "_numpy_index"  # the fallback itself
    ]
    script = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "from perflab.jsonl.readers import COMPILED_INDEX\n"
        + "heavy = [m for m in ('pandas', 'matplotlib', 'scipy', 'numpy') if m in sys.modules]\n"
        + "print(COMPILED_INDEX, ' '.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    compiled, _, heavy = done.stdout.strip().partition(" ")
    expected = "" if compiled == "True" else "numpy"
    assert heavy == expected, f"the primitives import {heavy}"
