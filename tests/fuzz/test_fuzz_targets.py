"""A short coverage-guided run of every fuzz target (atheris), as CI's guard that the parsers still
survive what the fuzzer reaches quickly from the seeds. Longer runs: scripts/fuzz --seconds S."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fuzz.run import ROOT
from tests.fuzz.targets import BYTE_TARGETS, SEEDS

RUNS = 3000  # inputs per target: ~2 s each, most of it the child's start-up and instrumentation


@pytest.mark.parametrize("target", sorted(BYTE_TARGETS))
def test_fuzz_target_survives_a_bounded_coverage_guided_run(target):
    result = subprocess.run([sys.executable, "-m", "tests.fuzz.run", target, "--runs", str(RUNS)], cwd=ROOT,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Done {RUNS} runs" in result.stderr


@pytest.mark.parametrize("target", sorted(BYTE_TARGETS))
def test_fuzz_seeds_run_clean(target):
    for seed in SEEDS[target]():
        BYTE_TARGETS[target](seed)
