"""The ``keyservice`` command: ``serve`` runs the HTTP server, ``audit`` searches an audit log."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.eventloop import run
from common.workers import serve_workers, share_key_store, worker_count, workers_wanted
from common.logsetup import RedactingFilter, configure_logging, failure_line, parse_level
from keyservice.audit import filter_lines, parse_time
from keyservice.config import ConfigError, KeyServiceConfig, log_secrets, require_credentials


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyservice", description="AWS-KMS-compatible key service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the AWS KMS JSON protocol over HTTP")
    serve.add_argument("--config", type=Path, help="TOML file with a [keyservice] table")
    serve.add_argument("--listen", help="HOST:PORT (overrides config and KEYSERVICE_LISTEN)")
    serve.add_argument("--admin-listen", help="HOST:PORT of the admin endpoints (health, metrics; overrides config "
                                              "and KEYSERVICE_ADMIN_LISTEN)")
    serve.add_argument("--workers", type=worker_count, help="processes serving the listener (overrides config and "
                                                            "KEYSERVICE_WORKERS; 0, the default: one per core)")
    audit = commands.add_parser("audit", help="print the audit lines matching every filter")
    audit.add_argument("file", type=Path)
    audit.add_argument("--key", help="key ARN or key id")
    audit.add_argument("--operation", help="operation name, e.g. Decrypt")
    audit.add_argument("--since", type=parse_time, help="ISO 8601 instant (inclusive)")
    audit.add_argument("--until", type=parse_time, help="ISO 8601 instant (exclusive)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "audit":
        return _audit(args)
    return _serve(args)


def _audit(args: argparse.Namespace) -> int:
    try:
        with open(args.file, encoding="utf-8") as f:
            for line in filter_lines(f, key=args.key, operation=args.operation,
                                     since=args.since, until=args.until):
                print(line)
    except OSError as e:
        print(f"keyservice: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        config = KeyServiceConfig.load(args.config, os.environ)
        if args.listen:
            config.listen = args.listen
        if args.admin_listen:
            config.admin_listen = args.admin_listen
        config.host_port()
        config.admin_host_port()
        require_credentials(config)
        level = parse_level(config.log_level)
    except (ConfigError, ValueError) as e:
        print(f"keyservice: {e}", file=sys.stderr)
        return 2
    redactor = configure_logging(level, log_secrets(config))
    from common.connections import refused_aiohttp
    if (status := refused_aiohttp("keyservice", redactor.redact)) is not None:
        return status
    count = workers_wanted(args.workers, config.workers)
    if count == 1:
        return _serve_here(config, redactor)
    try:
        return serve_workers(count, config.host_port(), config.admin_host_port(), config.tls_cert_file is not None,
                             lambda: _serve_here(config, redactor), prepare=lambda: share_key_store(config))
    except Exception as e:  # a port in use, a key store in use: one line
        print(f"keyservice: {redactor.redact(failure_line(e))}", file=sys.stderr)
        return 1


def _serve_here(config: KeyServiceConfig, redactor: RedactingFilter) -> int:
    """Serve in this process until SIGTERM/SIGINT: the exit status."""
    from keyservice.server import serve  # the server pulls in aiohttp and botocore
    try:
        run(serve(config))
    except Exception as e:  # a port in use, an unreadable root key, a store it does not open: one line
        print(f"keyservice: {redactor.redact(failure_line(e))}", file=sys.stderr)
        return 1
    return 0
