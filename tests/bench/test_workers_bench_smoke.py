"""bench/workers_bench.py at tiny sizes: the script keeps working and prints both tables, every target and mode."""
from __future__ import annotations

from tests.bench.runner import run_bench, table_rows


def test_workers_bench_drives_every_target_and_key_service_mode_and_prints_its_tables():
    output = run_bench("workers_bench", "--count", "40", "--concurrency", "4", "--seconds", "0.3",
                       "--kms-concurrency", "4", "--client-processes", "1")
    objects = [(row[0], row[1]) for row in table_rows(output) if row[0] in ("direct", "passthrough", "gateway-w1",
                                                                             "gateway-w2")]
    assert objects == [(target, op) for target in ("direct", "passthrough", "gateway-w1", "gateway-w2")
                       for op in ("PUT", "GET")], output
    calls = [row for row in table_rows(output) if row[0] in ("sqlite-w1", "sqlite-w2")]
    assert [(row[0], row[1]) for row in calls] == [(mode, op) for mode in ("sqlite-w1", "sqlite-w2")
                                                   for op in ("GenerateDataKey", "Decrypt")], output
    assert all(float(row[2].replace(",", "")) > 0 and row[5].strip() != "-" for row in calls), output
