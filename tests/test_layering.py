"""The layers point one way: the API layer reaches the engines only through the protocol in
insieme/engine/base.py, never into the llama.cpp backend (issue 14). Checked on the import
graph of the package's own source, and by importing the API with llama-cpp-python blocked."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "insieme"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (at any depth of the file, lazy imports included)."""
    found: set[str] = set()
    package = module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def reachable(start: str) -> set[str]:
    seen, pending = set(), [start]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        pending.extend(GRAPH.get(name, ()))
    return seen


def test_the_api_never_reaches_the_llama_backend() -> None:
    for module in sorted(m for m in GRAPH if m.startswith("insieme.api")):
        bad = sorted(m for m in reachable(module)
                     if m.startswith(("insieme.engine.llama", "llama_cpp")))
        assert not bad, f"{module} reaches {bad}"


def test_the_engines_never_import_the_api() -> None:
    for module in sorted(m for m in GRAPH if m.startswith("insieme.engine")):
        assert not any(m.startswith("insieme.api") for m in GRAPH[module]), module


def test_the_api_imports_without_llama_cpp() -> None:
    code = ("import sys; sys.modules['llama_cpp'] = None\n"
            "import insieme.api.app, insieme.engine.fake\n"
            "from insieme.api.app import create_app\n"
            "from insieme.config import ServerConfig\n"
            "create_app(insieme.engine.fake.FakeEngine(), ServerConfig())\n"
            "assert not any(m.startswith('insieme.engine.llama') for m in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=120)
    assert done.returncode == 0, done.stderr
