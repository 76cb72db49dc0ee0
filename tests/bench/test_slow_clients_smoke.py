"""bench/slow_clients.py at tiny size: the script keeps working (it once broke on a renamed helper
without any test noticing), and a handful of slow clients leave a normal client served without errors."""
from __future__ import annotations

from tests.bench.runner import run_bench


def test_slow_clients_bench_runs_and_a_few_slow_clients_cause_no_errors():
    report = run_bench("slow_clients", "--levels", "0,4", "--ops", "5", "--seconds", "5")
    rows = [line.split("|") for line in report.splitlines() if line.strip()[:1].isdigit() and "|" in line]
    assert [int(row[0]) for row in rows] == [0, 4], report
    assert all(row[4].strip() == "-" for row in rows), report  # no errors at either level
