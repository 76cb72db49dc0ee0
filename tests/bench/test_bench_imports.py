"""The benches import the project as a package: no ``sys.path`` edits, nothing from ``tests``."""
from __future__ import annotations

import ast

from tests.bench.runner import REPO_ROOT


def offences(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "tests"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tests":
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and "." not in node.module \
                and (REPO_ROOT / "bench" / f"{node.module}.py").exists():
            found.append(f"from {node.module} import ... (a sibling bench module not imported as bench.{node.module})")
        elif isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
            found.append("sys.path")
    return found


def test_no_bench_edits_sys_path_or_imports_the_tests():
    found = {path.name: offences(path.read_text()) for path in sorted((REPO_ROOT / "bench").glob("*.py"))}
    assert {name: hits for name, hits in found.items() if hits} == {}
    assert len(found) >= 9  # every bench module was read
