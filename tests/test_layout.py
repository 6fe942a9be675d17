"""The package's two layers: the library at the top of ``perflab/`` and the workbench in
``perflab/workbench/``; imports run from the workbench into the library, never back, and
data types sit below the code that uses them."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "perflab"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LIBRARY = sorted(p for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "cli.py"))


def imported_modules(path: Path) -> set[str]:
    """Every perflab module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("perflab"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("perflab"))
    return found


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.name)
def test_the_library_never_imports_the_workbench(path: Path) -> None:
    assert not {m for m in imported_modules(path) if m.startswith("perflab.workbench")}


@pytest.mark.parametrize(
    ("lower", "upper"),
    [("profile_result", "profiler"), ("profile_result", "advice"), ("results", "analysis")],
)
def test_data_types_sit_below_the_code_that_uses_them(lower: str, upper: str) -> None:
    assert f"perflab.{upper}" not in imported_modules(PACKAGE / f"{lower}.py")
    source = (PACKAGE / f"{upper}.py").read_text()
    assert "TYPE_CHECKING:\n    from perflab." + lower not in source


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
