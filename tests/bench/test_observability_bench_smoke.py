"""bench/observability_bench.py at tiny size: the script keeps working, checks every request was logged and
counted, and prints its table (off, access log only, access log and metrics)."""
from __future__ import annotations

from tests.bench.runner import run_bench, table_rows


def test_observability_bench_runs_the_three_gateways_and_prints_the_cost_of_observing():
    output = run_bench("observability_bench", "--count", "20", "--rounds", "1", "--concurrency", "2")
    assert "wrote 240 access-log lines (its workload: 240)" in output, output
    for op in ("PUT", "GET"):
        rows = table_rows(output, op)
        assert [row[1] for row in rows] == ["off", "log", "on"], output
        assert all(float(row[2]) > 0 and float(row[4]) > 0 for row in rows), output
