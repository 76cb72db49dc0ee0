"""Run a bench as its users do: ``python -m bench.NAME ARGS`` from the repository root, in a process
of its own, with a time limit."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_bench(name: str, *args: str, timeout: float = 300) -> str:
    """The bench's standard output, once it has exited 0 (the assertion shows all it printed)."""
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def table_rows(output: str, first_cell: str | None = None) -> list[list[str]]:
    """The cells of the Markdown-style table rows (``| a | b |``) printed, optionally only those whose
    first cell is ``first_cell``; header and separator rows included unless filtered out."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in output.splitlines() if line.startswith("|")]
    return [row for row in rows if first_cell is None or row[0] == first_cell]
