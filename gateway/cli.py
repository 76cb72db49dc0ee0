"""``gateway serve --config FILE [--listen HOST:PORT] [--admin-listen HOST:PORT] [--workers N]``: load and validate settings,
then serve.
``gateway migrate s3://BUCKET[/PREFIX] ...``: encrypt legacy objects in place (gateway/tools/migrate.py)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from gateway.config import ConfigError, GatewayConfig, load_config, secrets_of
from common.eventloop import run
from common.workers import serve_workers, share_key_store, worker_count, workers_wanted
from common.logsetup import RedactingFilter, configure_logging, failure_line, parse_level


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="S3 encrypting gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML settings file (GATEWAY_* environment variables override it)")
    serve.add_argument("--listen", help="HOST:PORT, overriding the file and GATEWAY_LISTEN (port 0: any)")
    serve.add_argument("--admin-listen", help="HOST:PORT of the admin endpoints (health, metrics), overriding the "
                                              "file and GATEWAY_ADMIN_LISTEN")
    serve.add_argument("--workers", type=worker_count, help="processes serving the listener, overriding the file "
                                                            "and GATEWAY_WORKERS (0, the default: one per core)")
    from gateway.tools import migrate
    migrate.add_parser(sub)
    _add_key_tools(sub)
    return parser


def _add_key_tools(sub: argparse._SubParsersAction) -> None:
    """``gateway rewrap`` and ``gateway keys usage`` (gateway/tools): their own modules parse and run."""
    from gateway.tools import keys_usage, rewrap
    rewrap.add_arguments(sub.add_parser("rewrap", help="seal objects under another CMK without moving data"))
    keys = sub.add_parser("keys", help="key reports").add_subparsers(dest="keys_command", required=True)
    keys_usage.add_arguments(keys.add_parser("usage", help="objects only a CMK can read"))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "migrate":
        from gateway.tools import migrate
        return migrate.main(args)
    if args.command in ("rewrap", "keys"):
        return _run_key_tool(args)
    try:
        config = load_config(args.config, os.environ, args.listen, args.admin_listen)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    redactor = configure_logging(parse_level(config.log_level), secrets_of(config))
    from common.connections import refused_aiohttp
    if (status := refused_aiohttp("gateway", redactor.redact)) is not None:
        return status
    count = workers_wanted(args.workers, config.workers)
    if count > 1 and not config.upstream.url:
        # The development upstream keeps objects in the memory of the process that starts it: with several
        # workers each would have its own, and an object written through one would be missing through another.
        logging.getLogger("gateway").warning(
            "no upstream.url configured: the development upstream keeps objects in this process's memory, so "
            "one worker serves (workers = %d ignored)", count)
        count = 1
    if count == 1:
        return _serve(config, redactor)
    try:
        return serve_workers(count, config.listen_host_port, config.admin_host_port, bool(config.tls_cert_file),
                             lambda: _serve(config, redactor), prepare=lambda: _share_key_store(config))
    except ValueError as exc:  # the embedded key service's settings (keyservice.config.ConfigError)
        print(f"gateway: {redactor.redact(failure_line(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # a port in use, a key store in use: one line
        print(f"gateway: {redactor.redact(failure_line(exc))}", file=sys.stderr)
        return 1


def _share_key_store(config: GatewayConfig) -> Callable[[], None]:
    """Before the workers are forked: the embedded key service's SQLite store shared by them all."""
    if config.kms.endpoint:
        return lambda: None
    from keyservice.config import KeyServiceConfig
    return share_key_store(KeyServiceConfig.load(config.config_path, os.environ,
                                                 default_data_dir=config.data_dir / "keyservice"))


def _serve(config: GatewayConfig, redactor: RedactingFilter) -> int:
    """Serve in this process until SIGTERM/SIGINT: the exit status."""
    from gateway.app import serve
    from keyservice.embedded import ConfigError as KeyServiceConfigError

    try:
        run(serve(config))
    except (ConfigError, KeyServiceConfigError) as exc:
        print(f"gateway: {redactor.redact(failure_line(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # a port in use, an unreadable root key or store ...: one line, no traceback
        print(f"gateway: {redactor.redact(failure_line(exc))}", file=sys.stderr)
        return 1
    return 0


def _run_key_tool(args: argparse.Namespace) -> int:
    from gateway.tools import keys_usage, rewrap
    return rewrap.main(args) if args.command == "rewrap" else keys_usage.main(args)


if __name__ == "__main__":
    sys.exit(main())
