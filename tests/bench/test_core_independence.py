"""The benchmark package is a leaf: users' runs never import it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mllm"
# The CLI verbs that run the benchmark; every other module is core.
BENCH_VERBS = {"commands/scenes.py", "commands/eval.py", "commands/quickstart.py"}


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _core_files() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py"))
            if p.relative_to(PACKAGE).parts[0] != "bench" and p.relative_to(PACKAGE).as_posix() not in BENCH_VERBS]


def test_no_core_module_imports_the_benchmark():
    offenders = {p.relative_to(PACKAGE).as_posix(): sorted(n for n in _imported_modules(p)
                                                           if n == "mllm.bench" or n.startswith("mllm.bench."))
                 for p in _core_files()}
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_the_check_sees_bench_imports():
    # The walker itself must find a bench import where there is one (the quickstart verb has one).
    assert any(n.startswith("mllm.bench") for n in _imported_modules(PACKAGE / "commands" / "quickstart.py"))


def test_importing_the_core_loads_no_benchmark_module():
    modules = [".".join(("mllm", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
               for p in _core_files()]
    modules = [m for m in modules if "remote_code" not in m]  # bundled export files use relative imports
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.startswith('mllm.bench')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
