"""The import graph of the middle: nothing below the pipeline reaches back up to the gateway, and
filters never import each other. Checked on the source (ast), so TYPE_CHECKING imports count."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Above the pipeline: the gateway itself and the program that runs it.
ABOVE = {"proxy/gateway.py", "proxy/server.py", "proxy/__main__.py"}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)  # from . import gateway
    return out


def sources() -> list[Path]:
    return sorted(p for d in ("proxy", "filters") for p in (ROOT / d).rglob("*.py"))


def test_the_scan_sees_an_import_of_the_gateway():
    assert "proxy.gateway" in imports(ROOT / "proxy" / "server.py")


def test_no_module_below_the_pipeline_imports_the_gateway():
    offenders = [str(p.relative_to(ROOT)) for p in sources()
                 if str(p.relative_to(ROOT)) not in ABOVE and "proxy.gateway" in imports(p)]
    assert offenders == []


def test_filters_import_no_other_filter():
    for path in (ROOT / "filters").glob("*.py"):
        if path.name == "__init__.py":
            continue
        others = {m for m in imports(path) if m.startswith("filters.") and m.split(".")[1] != "base"}
        assert others == set(), f"{path.name} imports {others}"
