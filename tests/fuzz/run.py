"""Coverage-guided fuzzing of the gateway's parsers with atheris (libFuzzer for Python).

    scripts/fuzz [TARGET ...] [--runs N | --seconds S]      (no TARGET: every target in turn)

Each target runs in its own process (libFuzzer ends the process when a run is over), starting from
the seeds in tests/fuzz/targets.py SEEDS, in a throw-away corpus directory. A finding stops that
target with the input saved under fuzz-artifacts/ and a non-zero exit; replay it with
`python -m tests.fuzz.run TARGET --replay FILE`.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "fuzz-artifacts"
CHILD = "--child"  # argv[1] of the per-target process: `--child TARGET LIBFUZZER_ARGS...`


def _fuzz_one(target: str, libfuzzer_args: list[str]) -> None:
    """In this process: instrument the gateway, then hand the target to libFuzzer (never returns)."""
    import atheris

    with atheris.instrument_imports(include=["gateway"]):  # coverage of our code, not the libraries'
        from tests.fuzz import targets
    atheris.Setup([sys.argv[0], *libfuzzer_args], targets.BYTE_TARGETS[target])
    atheris.Fuzz()


def _replay(target: str, path: Path) -> None:
    from tests.fuzz import targets
    targets.BYTE_TARGETS[target](path.read_bytes())
    print(f"{target}: {path} runs clean")


def _spawn(target: str, runs: int | None, seconds: int | None) -> int:
    """Run one target in a child process over a fresh corpus seeded from SEEDS; its exit status."""
    from tests.fuzz import targets
    ARTIFACTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as corpus:
        for index, seed in enumerate(targets.SEEDS[target]()):
            Path(corpus, f"seed-{index}").write_bytes(seed)
        limits = [f"-runs={runs}"] if runs is not None else [f"-max_total_time={seconds}"]
        args = [*limits, "-max_len=16384", "-print_final_stats=1",
                f"-artifact_prefix={ARTIFACTS}/{target}-", corpus]
        return subprocess.run([sys.executable, "-m", "tests.fuzz.run", CHILD, target, *args], cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD]:
        _fuzz_one(argv[1], argv[2:])
    from tests.fuzz.targets import BYTE_TARGETS
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"one of {', '.join(BYTE_TARGETS)}")
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--runs", type=int, help="inputs to try per target")
    limit.add_argument("--seconds", type=int, help="time per target (default 60)")
    parser.add_argument("--replay", type=Path, help="run one saved input through TARGET")
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in BYTE_TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(BYTE_TARGETS)}")
    if args.replay is not None:
        if len(args.targets) != 1:
            parser.error("--replay needs exactly one TARGET")
        _replay(args.targets[0], args.replay)
        return 0
    seconds = None if args.runs is not None else (args.seconds or 60)
    failed = [t for t in args.targets or BYTE_TARGETS if _spawn(t, args.runs, seconds) != 0]
    if failed:
        print(f"fuzz findings in: {', '.join(failed)} (inputs under {ARTIFACTS})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
