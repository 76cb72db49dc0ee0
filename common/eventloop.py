"""The event loop every command of the project runs on: uvloop where it is installed, else asyncio's.

uvloop is a dependency on every platform but Windows (``sys_platform != 'win32'`` in pyproject), so
nothing may import it unconditionally.
"""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # Windows: asyncio's own loop
    uvloop = None  # type: ignore[assignment]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A fresh loop: uvloop's when installed (a ``loop_factory`` for ``asyncio.Runner``)."""
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on ``new_event_loop()``."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
