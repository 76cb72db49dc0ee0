"""bench/slow_clients.py at tiny size: the script keeps working (it once broke on a renamed helper
without any test noticing), and a handful of slow clients leave a normal client served without errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SLOW_CLIENTS = Path(__file__).resolve().parents[2] / "bench" / "slow_clients.py"


def test_slow_clients_bench_runs_and_a_few_slow_clients_cause_no_errors():
    proc = subprocess.run([sys.executable, str(SLOW_CLIENTS), "--levels", "0,4", "--ops", "5", "--seconds", "5"],
                          capture_output=True, text=True, timeout=180)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.strip()[:1].isdigit() and "|" in line]
    assert [int(row[0]) for row in rows] == [0, 4], report
    assert all(row[4].strip() == "-" for row in rows), report  # no errors at either level
