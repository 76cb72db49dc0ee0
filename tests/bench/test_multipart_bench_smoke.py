"""bench/multipart_bench.py at tiny size (two 8 MiB parts, two rounds): the script keeps working and prints its
tables."""
from __future__ import annotations

from tests.bench.runner import run_bench, table_rows


def test_multipart_bench_moves_a_two_part_file_through_every_path_and_prints_its_tables():
    output = run_bench("multipart_bench", "--size-mib", "16", "--rounds", "2")
    assert "== 16 MiB multipart, boto3 transfer manager (MiB/s, median of 2 rounds) ==" in output, output
    for op in ("upload", "download"):
        throughput, cpu = table_rows(output, op)
        assert len(throughput) == 6 and all(float(cell) > 0 for cell in throughput[1:4]), output
        assert len(cpu) == 4 and all(float(cell) >= 0 for cell in cpu[1:4]), output
    assert "gateway managed copy (UploadPartCopy, decrypt + re-encrypt):" in output, output
    assert output.count("multipart gateway/proxy >= 90%") == 2 and output.count("(rounds: ") == 2, output
