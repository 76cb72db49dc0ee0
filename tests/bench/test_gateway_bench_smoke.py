"""bench/gateway_bench.py at tiny size, moto included: the script keeps working and prints its tables."""
from __future__ import annotations

from tests.bench.runner import run_bench, table_rows


def test_gateway_bench_moves_a_small_object_through_every_path_and_prints_its_tables():
    output = run_bench("gateway_bench", "--size-mib", "2", "--small-count", "10", "--concurrency", "2", "--moto")
    assert "== 2 MiB single object (MiB/s) ==" in output, output
    [header] = table_rows(output, "op")
    assert header[1:6] == ["direct", "passthrough", "gateway", "moto", "gateway+moto"], output
    for op in ("PUT", "GET"):
        [row] = table_rows(output, op)
        assert all(float(cell) > 0 for cell in row[1:6]), output
    small = {(row[0], row[1], row[2]) for row in table_rows(output) if row[0] in ("direct", "gateway")}
    assert small == {(target, op, conc) for target in ("direct", "gateway") for op in ("PUT", "GET")
                     for conc in ("1", "2")}, output
    assert "VmHWM (whole run)" in output, output
