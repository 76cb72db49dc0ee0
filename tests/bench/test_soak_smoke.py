"""A few seconds of the soak (bench/soak.py) at tiny size: the script itself keeps working, and a
short mixed load with slow and aborting clients gives zero wrong bytes, zero 5xx, no error lines."""
from __future__ import annotations

from tests.bench.runner import run_bench


def test_short_soak_reads_every_byte_right_with_no_server_errors():
    report = run_bench("soak", "--seconds", "3", "--workers", "4")
    lines = dict(line.split(":", 1) for line in report.splitlines() if ":" in line and not line.startswith(" "))
    assert lines["wrong bytes"].strip() == "0", report
    assert lines["5xx answers"].strip() == "0", report
    assert lines["result"].strip() == "PASS", report
    assert int(lines["cut on purpose"]) > 0, report  # the aborting clients did run
