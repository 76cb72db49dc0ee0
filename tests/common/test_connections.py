"""The aiohttp internals common/connections.py relies on are checked at start-up (check_aiohttp), so
an aiohttp without them refuses to start in one line instead of serving without its slow-client guards."""
from __future__ import annotations

from pathlib import Path
import aiohttp
import pytest
from aiohttp import web

from common import connections
from common.connections import (ConnectionGuard, GuardedAppRunner, ServerLimits, UnsupportedAiohttp,
                                 check_aiohttp)


def test_the_installed_aiohttp_has_every_internal_the_guards_use():
    check_aiohttp()


class _HandlerWithoutWaiter(connections.RequestHandler):
    """A RequestHandler as a future aiohttp might have it: no ``_waiter``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self._waiter


class _ServerWithoutKwargs(web.Server):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self._kwargs


def test_an_aiohttp_lacking_an_internal_is_refused_in_one_line_naming_its_version(monkeypatch):
    monkeypatch.setattr(connections, "RequestHandler", _HandlerWithoutWaiter)
    monkeypatch.setattr(connections.web, "Server", _ServerWithoutKwargs)
    monkeypatch.setattr(aiohttp, "__version__", "3.99.0")
    with pytest.raises(UnsupportedAiohttp) as refused:
        check_aiohttp()
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("aiohttp 3.99.0 is not supported (need >=3.12,<3.15)")
    assert "RequestHandler._waiter" in message and "web.Server._kwargs" in message


def test_a_guarded_runner_is_never_made_on_an_unsupported_aiohttp(monkeypatch):
    monkeypatch.setattr(connections, "RequestHandler", _HandlerWithoutWaiter)
    with pytest.raises(UnsupportedAiohttp, match="RequestHandler._waiter"):
        GuardedAppRunner(web.Application(), ConnectionGuard(ServerLimits(), b"", "test"))


def test_the_pin_in_pyproject_is_the_range_the_check_names():
    pyproject = str(Path(connections.__file__).parents[1] / "pyproject.toml")
    with open(pyproject, encoding="utf-8") as f:
        assert f'"aiohttp{connections.SUPPORTED_AIOHTTP}"' in f.read()


@pytest.mark.parametrize("program", ["gateway", "keyservice"])
def test_serve_on_an_unsupported_aiohttp_exits_2_with_one_line_before_starting_anything(
        program, monkeypatch, capsys, tmp_path):
    """Exit status 2, as for any dependency refused by a check (README, "Troubleshooting"), from both servers."""
    import importlib

    from common.logsetup import RedactingFilter
    cli = importlib.import_module(f"{program}.cli")
    monkeypatch.setattr(cli, "configure_logging", lambda *args: RedactingFilter())
    monkeypatch.setattr(connections, "RequestHandler", _HandlerWithoutWaiter)
    monkeypatch.setenv("KEYSERVICE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KEYSERVICE_ACCESS_KEY", "AKIDCHECK")
    monkeypatch.setenv("KEYSERVICE_SECRET_KEY", "check-secret")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["serve", "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{program}: aiohttp ") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []  # no data directory, secret, key store or development upstream


@pytest.mark.parametrize("server", ["gateway", "keyservice"])
def test_connection_lines_go_to_the_servers_own_namespace_and_show_at_its_debug_level(server, caplog):
    """logsetup applies GATEWAY_LOG_LEVEL / KEYSERVICE_LOG_LEVEL to gateway.* / keyservice.* only: a
    logger named plain "connections" stayed at the root's INFO and its DEBUG lines never showed."""
    import logging

    from common.logsetup import CAPPED_LOGGERS, PROJECT_LOGGERS, configure_logging
    guard = ConnectionGuard(ServerLimits(), b"", server)
    assert guard.log.name == f"{server}.connections"
    root = logging.getLogger()
    handlers, levels = root.handlers[:], {name: logging.getLogger(name).level
                                          for name in ("", *PROJECT_LOGGERS, *CAPPED_LOGGERS)}
    try:
        configure_logging(logging.DEBUG)
        assert guard.log.isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:] = handlers
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
