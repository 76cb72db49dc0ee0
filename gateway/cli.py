"""``gateway serve --config FILE [--listen HOST:PORT] [--admin-listen HOST:PORT]``: load and validate settings,
then serve.
``gateway migrate s3://BUCKET[/PREFIX] ...``: encrypt legacy objects in place (gateway/tools/migrate.py)."""
from __future__ import annotations

import argparse
import os
import sys

from gateway.config import ConfigError, load_config, secrets_of
from common.eventloop import run
from common.logsetup import configure_logging, failure_line, parse_level


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="S3 encrypting gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML settings file (GATEWAY_* environment variables override it)")
    serve.add_argument("--listen", help="HOST:PORT, overriding the file and GATEWAY_LISTEN (port 0: any)")
    serve.add_argument("--admin-listen", help="HOST:PORT of the admin endpoints (health, metrics), overriding the "
                                              "file and GATEWAY_ADMIN_LISTEN")
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
    from gateway.app import serve
    from common.connections import UnsupportedAiohttp, check_aiohttp
    from keyservice.embedded import ConfigError as KeyServiceConfigError

    try:
        check_aiohttp()  # before anything is started or written
        run(serve(config))
    except (ConfigError, KeyServiceConfigError, UnsupportedAiohttp) as exc:
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
