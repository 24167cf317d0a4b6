"""Package hygiene (issue 11 items 9 and 10): Google docstrings with
Args/Returns/Raises on every public function, test modules organised in
classes, and source that parses as the lowest declared Python."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ztensor"
TESTS = Path(__file__).resolve().parent
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _public_functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    out: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append((node.name, node))
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for m in node.body:
                if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out.append((f"{node.name}.{m.name}", m))
    return [(q, f) for q, f in out if not f.name.startswith("_")]


def _missing_sections(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    decorators = [ast.unparse(d) for d in fn.decorator_list]
    if any(d.endswith(".setter") for d in decorators):
        return []
    doc = ast.get_docstring(fn) or ""
    if not doc:
        return ["docstring"]
    if "property" in decorators:
        return [] if "Raises:" in doc or not _raises(fn) else ["Raises"]
    args = [a.arg for a in fn.args.args + fn.args.kwonlyargs if a.arg not in ("self", "cls")]
    if fn.args.vararg or fn.args.kwarg:
        args.append("*")
    missing = []
    if args and "Args:" not in doc:
        missing.append("Args")
    returns = fn.returns is not None and ast.unparse(fn.returns) != "None"
    if returns and "Returns:" not in doc and "Yields:" not in doc:
        missing.append("Returns")
    if _raises(fn) and "Raises:" not in doc:
        missing.append("Raises")
    return missing


def _raises(fn: ast.AST) -> bool:
    return any(isinstance(n, ast.Raise) for n in ast.walk(fn))


class TestDocstrings:
    """Every public function documents its arguments, result and errors."""

    def test_public_functions_have_google_sections(self) -> None:
        problems = []
        for path in sorted(PACKAGE.glob("*.py")):
            tree = ast.parse(path.read_text())
            for qualname, fn in _public_functions(tree):
                missing = _missing_sections(fn)
                if missing:
                    problems.append(f"{path.name}:{fn.lineno} {qualname}: {', '.join(missing)}")
        assert not problems, "\n".join(problems)


class TestTestModules:
    """Tests live in pytest classes."""

    def test_no_module_level_test_functions(self) -> None:
        loose = []
        for path in sorted(TESTS.glob("test_*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                    loose.append(f"{path.name}:{node.lineno} {node.name}")
        assert not loose, "\n".join(loose)


class TestLowestPython:
    """The source parses as the lowest Python the package declares."""

    def test_sources_parse_as_the_declared_minimum(self) -> None:
        found = re.search(r'requires-python = ">=3\.(\d+)"', PYPROJECT.read_text())
        assert found is not None
        minor = int(found.group(1))
        assert minor == 9
        for path in sorted(PACKAGE.glob("*.py")) + sorted(TESTS.glob("*.py")):
            ast.parse(path.read_text(), filename=str(path), feature_version=(3, minor))

    def test_module_level_aliases_avoid_the_union_operator(self) -> None:
        """`X | Y` outside annotations runs at import time, which 3.9 cannot."""
        offenders = []
        for path in sorted(PACKAGE.glob("*.py")):
            for node in ast.parse(path.read_text()).body:
                value = node.value if isinstance(node, ast.Assign) else None
                if value is not None and any(
                    isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)
                    for n in ast.walk(value)
                ):
                    offenders.append(f"{path.name}:{node.lineno}")
        assert not offenders, offenders
