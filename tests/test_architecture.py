"""Architecture rules that import-linter cannot express (its contracts run in ``make test``):
no private name imported across modules, short functions, a short training core."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "headstart"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def private_imports(root: Path = SRC) -> list[str]:
    """``module imports source._name`` for every underscore name (dunders allowed) imported
    from another headstart module."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _resolve(node, module, path.name == "__init__.py")
            if not source.startswith("headstart") or source == module:
                continue
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                    found.append(f"{module} imports {source}.{name}")
    return found


def long_functions(root: Path = SRC, limit: int = 80) -> list[str]:
    """Functions longer than ``limit`` lines outside cli.py (whose commands declare options)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length})")
    return found


def test_no_private_name_is_imported_across_modules() -> None:
    assert private_imports() == []


def test_no_function_outside_the_cli_is_longer_than_80_lines() -> None:
    assert long_functions() == []


def test_the_training_core_stays_short() -> None:
    lines = (SRC / "training" / "fit.py").read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"training/fit.py has {lines} lines: move a stage into its own module"


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """The rules above must be able to fail."""
    pkg = tmp_path / "headstart"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text(
        "from headstart.sub.b import _hidden, public, __version__\n"
        "from .b import _also\n"
        "def f():\n" + "    x = 1\n" * 81
    )
    assert private_imports(pkg) == [
        "headstart.sub.a imports headstart.sub.b._hidden",
        "headstart.sub.a imports headstart.sub.b._also",
    ]
    assert long_functions(pkg) == ["sub/a.py:3 f (82)"]
