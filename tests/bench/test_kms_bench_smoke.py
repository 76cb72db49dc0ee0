"""bench/kms_bench.py for a fraction of a second: the script keeps working and prints its table."""
from __future__ import annotations

from tests.bench.runner import run_bench, table_rows


def test_kms_bench_calls_the_key_service_in_process_and_over_http_and_prints_its_table():
    output = run_bench("kms_bench", "--seconds", "0.3", "--concurrency", "4", "--client-processes", "1")
    rows = [row for row in table_rows(output) if row[0] in ("in-process", "http")]
    assert [(row[0], row[1]) for row in rows] == [("in-process", "GenerateDataKey"), ("in-process", "Decrypt"),
                                                  ("http", "GenerateDataKey"), ("http", "Decrypt")], output
    assert all(float(row[2].replace(",", "")) > 0 for row in rows), output
