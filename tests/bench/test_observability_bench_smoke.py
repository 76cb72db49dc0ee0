"""bench/observability_bench.py at tiny size: the script keeps working, checks every request was logged and
counted, and prints its table."""
from __future__ import annotations

from tests.bench.runner import run_bench, table_rows


def test_observability_bench_runs_both_gateways_and_prints_the_cost_of_observing():
    output = run_bench("observability_bench", "--count", "20", "--rounds", "1", "--concurrency", "2")
    assert "wrote 240 access-log lines (its workload: 240)" in output, output
    for op in ("PUT", "GET"):
        [row] = table_rows(output, op)
        assert float(row[1]) > 0 and float(row[2]) > 0, output
