"""Time sources, injected so key deletion, rotation and expiry can be tested without waiting."""

import time
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current time in epoch seconds."""

    def now(self) -> float: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when told to (in-process tests)."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


class OffsetFileClock:
    """Real time plus an offset read from a file, so tests can move a separate server process in time."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)

    def _offset(self) -> float:
        try:
            text = self._path.read_text().strip()
        except FileNotFoundError:
            return 0.0
        return float(text) if text else 0.0

    def now(self) -> float:
        return time.time() + self._offset()
