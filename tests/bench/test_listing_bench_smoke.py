"""bench/listing_bench.py at a tiny size: the script keeps working and prints its table."""
from __future__ import annotations

from tests.bench.runner import run_bench, table_rows


def test_listing_bench_lists_each_kind_of_page_and_prints_its_table():
    output = run_bench("listing_bench", "--entries", "20", "--repeats", "1")
    rows = table_rows(output)[1:]
    assert [row[0] for row in rows] == [
        "direct (upstream's own listing)", "gateway, bucket holding no plaintext",
        "gateway, mixed bucket, first listing (20 HEADs)", "gateway, mixed bucket, repeated (cached)"], output
    assert all(float(row[1]) > 0 for row in rows), output
