"""common/serving.py: what both servers promise the scripts that start them -- the listening URL with the
port actually bound, brackets around an IPv6 host, TLS from the configured files."""
from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from common.serving import listen, listening_url, server_ssl_context
from tests.support.tls import write_self_signed


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def _app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", _hello)
    return app


@pytest.mark.parametrize("host,tls,url", [
    ("127.0.0.1", False, "http://127.0.0.1:8080"),
    ("0.0.0.0", True, "https://0.0.0.0:8080"),
    ("::1", False, "http://[::1]:8080"),
    ("localhost", False, "http://localhost:8080"),
])
def test_the_listening_url_puts_an_ipv6_host_in_brackets(host, tls, url):
    assert listening_url(host, 8080, tls) == url


async def test_listening_on_port_0_gives_the_url_of_the_port_bound():
    runner = web.AppRunner(_app())
    await runner.setup()
    try:
        url = await listen(runner, "127.0.0.1", 0, None)
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        async with aiohttp.ClientSession() as session, session.get(url + "/") as response:
            assert (response.status, await response.text()) == (200, "hello")
    finally:
        await runner.cleanup()


async def test_a_second_site_of_a_runner_reports_its_own_port():
    runner = web.AppRunner(_app())
    await runner.setup()
    try:
        first, second = [await listen(runner, "127.0.0.1", 0, None) for _ in range(2)]
        assert first != second
        assert second.rsplit(":", 1)[1] == str(runner.addresses[1][1])
    finally:
        await runner.cleanup()


async def test_with_a_certificate_the_server_speaks_https(tmp_path: Path):
    certs = write_self_signed(tmp_path)
    runner = web.AppRunner(_app())
    await runner.setup()
    try:
        url = await listen(runner, "127.0.0.1", 0, server_ssl_context(certs.cert_file, certs.key_file))
        assert url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(certs.cert_file))
        async with aiohttp.ClientSession() as session, session.get(url + "/", ssl=trust) as response:
            assert (response.status, await response.text()) == (200, "hello")
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("cert", [None, ""])
def test_without_a_certificate_there_is_no_tls(cert):
    assert server_ssl_context(cert, None) is None


def test_a_missing_certificate_file_fails_before_anything_starts_naming_it(tmp_path: Path):
    with pytest.raises(ValueError) as refused:
        server_ssl_context(tmp_path / "absent.pem", tmp_path / "absent.key")
    assert str(refused.value) == (f"the TLS certificate {tmp_path / 'absent.pem'} and key {tmp_path / 'absent.key'} "
                                  "cannot be read: No such file or directory")


def test_a_file_that_is_no_pem_certificate_fails_naming_it(tmp_path: Path):
    (tmp_path / "tls.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError) as refused:
        server_ssl_context(tmp_path / "tls.pem", None)
    assert str(refused.value) == (f"the TLS certificate {tmp_path / 'tls.pem'} and key {tmp_path / 'tls.pem'} are not "
                                  "a PEM certificate chain and its private key")


async def test_what_start_up_made_is_out_of_the_collectors_reach_once_started() -> None:
    """Both servers end start-up with `freeze_startup_objects`: later full collections skip it."""
    import gc

    from common.serving import freeze_startup_objects
    gc.unfreeze()
    made_at_start_up = [{"table": list(range(10))} for _ in range(1000)]
    await freeze_startup_objects(web.Application())
    try:
        assert gc.get_freeze_count() >= len(made_at_start_up)
    finally:
        gc.unfreeze()


def test_the_gateway_freezes_its_start_up_objects_last() -> None:
    from common.serving import freeze_startup_objects
    from gateway.app import create_app
    from gateway.config import GatewayConfig
    assert list(create_app(GatewayConfig()).on_startup)[-1] is freeze_startup_objects
