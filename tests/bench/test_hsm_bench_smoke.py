"""bench/hsm_bench.py for a fraction of a second: the script keeps working and prints its table."""
from __future__ import annotations

import pytest

from bench.softhsm import missing_reason
from tests.bench.runner import run_bench, table_rows


@pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")
def test_hsm_bench_measures_a_key_in_the_token_against_a_key_in_the_store_and_prints_its_table():
    output = run_bench("hsm_bench", "--seconds", "0.3")
    rows = [row for row in table_rows(output) if row[0] in ("store", "token")]
    assert [(row[0], row[1]) for row in rows] == [("store", "GenerateDataKey"), ("store", "Decrypt"),
                                                  ("token", "GenerateDataKey"), ("token", "Decrypt")], output
    assert all(float(row[2].replace(",", "")) > 0 for row in rows), output
