"""Both commands run on uvloop where it is installed and on asyncio's loop where it is not (Windows:
pyproject installs uvloop only for ``sys_platform != 'win32'``)."""
from __future__ import annotations

import subprocess
import sys

WITHOUT_UVLOOP = """
import sys
sys.modules["uvloop"] = None  # what an interpreter without uvloop sees: import uvloop fails
import gateway.cli, keyservice.cli
from common import eventloop

async def loop_module():
    import asyncio
    return type(asyncio.get_running_loop()).__module__

print(eventloop.run(loop_module()))
"""


def test_the_commands_import_and_run_on_asyncio_without_uvloop():
    proc = subprocess.run([sys.executable, "-c", WITHOUT_UVLOOP], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (0, "asyncio.unix_events"), proc.stderr


def test_run_uses_uvloop_where_it_is_installed():
    from common import eventloop

    async def loop_module() -> str:
        import asyncio
        return type(asyncio.get_running_loop()).__module__

    assert eventloop.run(loop_module()) == "uvloop"
