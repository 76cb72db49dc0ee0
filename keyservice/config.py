"""Key service configuration: the ``[keyservice]`` table of a TOML file, then env overrides.

The standalone server and the gateway's embedded key service read the same table, so
``build_api`` (which turns a config into a ready ``KmsApi``) lives here for both.
"""
from __future__ import annotations

import base64
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common.accesslog import check_destination, check_format
from common.connections import ServerLimits
from common.digits import parse_decimal
from common.logsetup import parse_level
from keyservice.api import AUDIT_POLICIES, KmsApi
from keyservice.audit import AuditLog
from keyservice.clock import Clock, OffsetFileClock
from common.files import private_dir
from keyservice.multiregion import follow_maintenance
from keyservice.peers import Peer, PeerConfigError, apply_peer_env, parse_peers
from keyservice.pkcs11backend import TokenConfig, TokenConfigError, apply_token_env, parse_tokens
from keyservice.principals import principal_account  # noqa: F401  (re-exported)
from keyservice.quota import QuotaLimiter
from keyservice.rootkey import decode_root_key, load_root_key
from keyservice.service import KeyService

DEFAULT_LISTEN = "127.0.0.1:7000"
DEFAULT_ACCOUNT = "111122223333"
DEFAULT_REGION = "us-east-1"
DEFAULT_PURGE_INTERVAL = 60.0
# The other tables of a gateway's file, whose [keyservice] table its embedded key service reads.
GATEWAY_SECTIONS = ("gateway", "upstream", "kms", "buckets")
NO_CREDENTIAL = ("no credential is configured, so every request would be refused: add a "
                 "[[keyservice.credentials]] table or set KEYSERVICE_ACCESS_KEY and KEYSERVICE_SECRET_KEY")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting is wrong."""


@dataclass(frozen=True)
class Credential:
    """One SigV4 access key and the IAM principal it acts as."""

    access_key: str
    secret_key: str
    principal: str

    @property
    def account_id(self) -> str:
        """The caller's account comes from its principal, never from the service's own account:
        a principal of another account must be treated as a cross-account caller."""
        account = principal_account(self.principal)
        if account is None:
            raise ConfigError(f"credential {self.access_key}: principal {self.principal!r} is not an IAM "
                              "or STS principal ARN (arn:aws:iam::ACCOUNT:...)")
        return account


@dataclass
class KeyServiceConfig:
    """Every setting of the key service; ``load`` reads file then environment."""

    listen: str = DEFAULT_LISTEN
    data_dir: Path = Path("./data/keyservice")
    root_key_file: Path | None = None
    root_key: str | None = None          # base64, from KEYSERVICE_ROOT_KEY only
    root_passphrase: str | None = None   # from KEYSERVICE_ROOT_PASSPHRASE only
    account_id: str = DEFAULT_ACCOUNT
    region: str = DEFAULT_REGION
    audit_log: Path | None = None
    credentials: tuple[Credential, ...] = ()
    quotas: dict[str, float] = field(default_factory=dict)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    clock_file: Path | None = None
    purge_interval: float = DEFAULT_PURGE_INTERVAL
    audit_on_failure: str = "refuse"     # "refuse" or "warn": cryptographic calls whose record is lost
    log_level: str = "INFO"              # `keyservice serve`'s own loggers (libraries stay capped)
    header_timeout: float = ServerLimits.header_timeout
    idle_timeout: float = ServerLimits.idle_timeout
    body_timeout: float = ServerLimits.body_timeout
    send_timeout: float = ServerLimits.send_timeout
    max_connections: int = ServerLimits.max_connections
    body_min_rate: float = ServerLimits.body_min_rate
    max_connections_per_ip: int = ServerLimits.max_connections_per_ip
    pkcs11: dict[str, TokenConfig] = field(default_factory=dict)  # [keyservice.pkcs11.NAME]: custom key stores
    # The admin endpoints (health, metrics: common/admin.py) listen here; empty: not served (and no metrics).
    admin_listen: str = ""
    access_log: str = "stdout"           # stdout, stderr, off, or a file path (common/accesslog.py)
    access_log_format: str = "json"      # json or text
    store_url: str | None = None         # postgresql://USER[:PASSWORD]@HOST:PORT/DB; None: SQLite in data_dir
    peers: dict[str, Peer] = field(default_factory=dict)  # [[keyservice.peers]]: other regions (multi-region keys)
    workers: int = 0                     # `keyservice serve` processes (common/workers.py); 0: one per core

    @property
    def limits(self) -> ServerLimits:
        return ServerLimits.of(self)

    @property
    def audit_path(self) -> Path:
        return self.audit_log or self.data_dir / "audit.log"

    @property
    def root_principal(self) -> str:
        return f"arn:aws:iam::{self.account_id}:root"

    def host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port (``[::1]:7000`` style for IPv6)."""
        return _host_port("listen", self.listen)

    def admin_host_port(self) -> tuple[str, int] | None:
        """``admin_listen`` split into host and port; None when the admin endpoints are not served."""
        return _host_port("admin_listen (KEYSERVICE_ADMIN_LISTEN)", self.admin_listen) if self.admin_listen else None

    def credential_for(self, access_key: str) -> Credential | None:
        for cred in self.credentials:
            if cred.access_key == access_key:
                return cred
        return None

    @classmethod
    def load(cls, path: Path | None, env: Mapping[str, str], *,
             default_data_dir: Path | None = None) -> "KeyServiceConfig":
        """The file's ``[keyservice]`` table (if a file is given), then the environment.

        ``default_data_dir``: where the store lives when neither the table's ``data_dir`` nor
        KEYSERVICE_DATA_DIR says (the gateway puts its embedded key service under its own data dir)."""
        table = _read_table(path) if path is not None else {}
        config = _from_table(table)
        if default_data_dir is not None and "data_dir" not in table:
            config = replace(config, data_dir=default_data_dir)
        return _checked(_apply_env(config, env))


def _host_port(name: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or (number := parse_decimal(port, 65536)) is None or number > 65535:
        raise ConfigError(f"{name} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), number


def _read_table(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path} is not valid TOML: {e}") from None
    unknown = sorted(set(doc) - {"keyservice", *GATEWAY_SECTIONS})
    if unknown:  # a misspelt [keyservce] would otherwise start a key service on every default
        raise ConfigError(f"unknown section(s) in {path}: {', '.join(f'[{name}]' for name in unknown)} "
                          "(the key service reads [keyservice])")
    table = doc.get("keyservice", {})
    if not isinstance(table, dict):
        raise ConfigError("[keyservice] must be a table")
    return table


_STR_KEYS = ("listen", "account_id", "region", "audit_on_failure", "log_level", "admin_listen", "access_log",
             "access_log_format", "store_url")
_PATH_KEYS = ("data_dir", "root_key_file", "audit_log", "tls_cert_file", "tls_key_file")
# Positive numbers: the TOML key, its KEYSERVICE_* variable, and whether it must be whole.
_NUMBER_KEYS = {"purge_interval": False, "header_timeout": False, "idle_timeout": False, "body_timeout": False,
                "send_timeout": False, "max_connections": True}
_RATE_KEYS = {"body_min_rate": False, "max_connections_per_ip": True, "workers": True}  # >= 0 (0: no limit); whole?


def _from_table(table: dict[str, Any]) -> KeyServiceConfig:
    known = set(_STR_KEYS) | set(_PATH_KEYS) | set(_NUMBER_KEYS) | set(_RATE_KEYS) | {"credentials", "quotas"}
    known.add("pkcs11")  # [keyservice.pkcs11.NAME] tables: tokens of custom key stores
    known.add("peers")  # [[keyservice.peers]]: the deployments of other regions (keyservice/peers.py)
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown [keyservice] settings: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for key in _STR_KEYS:
        if key in table:
            values[key] = _expect(table[key], str, key)
    for key in _PATH_KEYS:
        if key in table:
            values[key] = Path(_expect(table[key], str, key))
    for key, whole in _NUMBER_KEYS.items():
        if key in table:
            values[key] = _whole(_positive(table[key], key), key) if whole else _positive(table[key], key)
    for key, whole in _RATE_KEYS.items():
        if key in table:
            values[key] = _whole(_rate(table[key], key), key) if whole else _rate(table[key], key)
    values["quotas"] = _quotas(table.get("quotas", {}))
    values["pkcs11"] = _as_config_error(lambda: parse_tokens(table.get("pkcs11", {})))
    values["peers"] = _as_config_error(lambda: parse_peers(table.get("peers", [])))
    config = KeyServiceConfig(**values)
    config.credentials = _credentials(table.get("credentials", []))
    return config


def _expect(value: Any, kind: type, name: str) -> Any:
    if not isinstance(value, kind):
        raise ConfigError(f"{name} must be a {kind.__name__}")
    return value


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigError(f"{name} must be a positive number")
    return float(value)


def _rate(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ConfigError(f"{name} must be a number >= 0 (0: no limit)")
    return float(value)


def _whole(value: float, name: str) -> int:
    if value != int(value):
        raise ConfigError(f"{name} must be a whole number")
    return int(value)


def _quotas(table: Any) -> dict[str, float]:
    _expect(table, dict, "[keyservice.quotas]")
    return {str(name): _positive(rate, f"quota {name}") for name, rate in table.items()}


def _as_config_error(read: Any) -> dict[str, Any]:
    """The PKCS#11 tokens (keyservice/pkcs11backend.py reads them) or the peers (keyservice/peers.py),
    their mistakes as ConfigError."""
    try:
        return read()
    except (TokenConfigError, PeerConfigError) as exc:
        raise ConfigError(str(exc)) from None


def _credentials(entries: Any) -> tuple[Credential, ...]:
    _expect(entries, list, "[[keyservice.credentials]]")
    creds = []
    for entry in entries:
        _expect(entry, dict, "[[keyservice.credentials]]")
        access = _expect(entry.get("access_key"), str, "credentials.access_key")
        secret = _expect(entry.get("secret_key"), str, "credentials.secret_key")
        principal = _expect(entry.get("principal", ""), str, "credentials.principal")
        creds.append(Credential(access, secret, principal))
    return tuple(creds)


def _apply_env(config: KeyServiceConfig, env: Mapping[str, str]) -> KeyServiceConfig:
    changes: dict[str, Any] = {}
    for name, attr in (("KEYSERVICE_LISTEN", "listen"), ("KEYSERVICE_ACCOUNT_ID", "account_id"),
                       ("KEYSERVICE_AUDIT_ON_FAILURE", "audit_on_failure"), ("KEYSERVICE_LOG_LEVEL", "log_level"),
                       ("KEYSERVICE_REGION", "region"), ("KEYSERVICE_ROOT_KEY", "root_key"),
                       ("KEYSERVICE_ADMIN_LISTEN", "admin_listen"), ("KEYSERVICE_ACCESS_LOG", "access_log"),
                       ("KEYSERVICE_ACCESS_LOG_FORMAT", "access_log_format"),
                       ("KEYSERVICE_ROOT_PASSPHRASE", "root_passphrase"), ("KEYSERVICE_STORE_URL", "store_url")):
        if env.get(name):
            changes[attr] = env[name]
    for name, attr in (("KEYSERVICE_DATA_DIR", "data_dir"), ("KEYSERVICE_ROOT_KEY_FILE", "root_key_file"),
                       ("KEYSERVICE_AUDIT_LOG", "audit_log"), ("KEYSERVICE_TLS_CERT_FILE", "tls_cert_file"),
                       ("KEYSERVICE_TLS_KEY_FILE", "tls_key_file"), ("KEYSERVICE_CLOCK_FILE", "clock_file")):
        if env.get(name):
            changes[attr] = Path(env[name])
    for key, whole in _NUMBER_KEYS.items():
        name = f"KEYSERVICE_{key.upper()}"
        if env.get(name, "").strip():
            value = _positive(_number(env[name]), name)
            changes[key] = _whole(value, name) if whole else value
    for key, whole in _RATE_KEYS.items():
        name = f"KEYSERVICE_{key.upper()}"
        if env.get(name, "").strip():
            value = _rate(_number(env[name]), name)
            changes[key] = _whole(value, name) if whole else value
    changes["pkcs11"] = _as_config_error(lambda: apply_token_env(config.pkcs11, env))
    changes["peers"] = _as_config_error(lambda: apply_peer_env(config.peers, env))
    config = replace(config, **changes)
    access, secret = env.get("KEYSERVICE_ACCESS_KEY"), env.get("KEYSERVICE_SECRET_KEY")
    if bool(access) != bool(secret):
        raise ConfigError("KEYSERVICE_ACCESS_KEY and KEYSERVICE_SECRET_KEY must be set together")
    if access and secret:
        others = tuple(c for c in config.credentials if c.access_key != access)
        config.credentials = (Credential(access, secret, config.root_principal),) + others
    return config


def _checked(config: KeyServiceConfig) -> KeyServiceConfig:
    """Final checks once file and environment are merged. Credentials without a principal act as the account root of the *final* account id (the
    environment may change it after the file was read); every principal must name its account."""
    if config.audit_on_failure not in AUDIT_POLICIES:
        raise ConfigError(f"audit_on_failure must be one of {', '.join(AUDIT_POLICIES)}, "
                          f"not {config.audit_on_failure!r}")
    try:
        parse_level(config.log_level)
    except ValueError as exc:
        raise ConfigError(f"log_level (KEYSERVICE_LOG_LEVEL): {exc}") from None
    try:
        check_destination("access_log (KEYSERVICE_ACCESS_LOG)", config.access_log)
        check_format("access_log_format (KEYSERVICE_ACCESS_LOG_FORMAT)", config.access_log_format)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    config.admin_host_port()
    if config.store_url is not None and not config.store_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("store_url (KEYSERVICE_STORE_URL) must be postgresql://USER[:PASSWORD]@HOST:PORT/DB")
    if config.region in config.peers:
        raise ConfigError(f"[[keyservice.peers]]: region {config.region} is this key service's own region")
    config.credentials = tuple(c if c.principal else replace(c, principal=config.root_principal)
                               for c in config.credentials)
    for cred in config.credentials:
        _ = cred.account_id  # raises ConfigError for a principal whose account cannot be told
    return config


def require_credentials(config: KeyServiceConfig) -> None:
    """A standalone key service accepts only configured credentials: without one it could serve nobody,
    which is a mistake to report at start rather than as every client's UnrecognizedClientException."""
    if not config.credentials:
        raise ConfigError(NO_CREDENTIAL)


def log_secrets(config: KeyServiceConfig) -> list[str]:
    """Every secret the settings hold, for the log filter to redact wherever it turns up: the
    credentials' secret keys, the passphrase, and the root key as configured (KEYSERVICE_ROOT_KEY, or
    the text of root_key_file) and in the other textual forms it could be printed in (hex, base64)."""
    found = [c.secret_key for c in config.credentials] + [peer.secret_key for peer in config.peers.values()]
    if config.root_passphrase:
        found.append(config.root_passphrase)
    if config.store_url and (password := urlsplit(config.store_url).password):
        found.append(password)
    texts: list[bytes] = []
    if config.root_key:
        texts.append(config.root_key.encode())
    if config.root_key_file is not None:
        try:
            texts.append(config.root_key_file.read_bytes())
        except OSError:
            pass  # reported when the key service opens it
    for raw in texts:
        found.extend(_key_forms(raw))
    return found


def _key_forms(raw: bytes) -> list[str]:
    forms = [raw.decode("utf-8", "replace").strip()] if raw.strip() else []
    try:
        key = decode_root_key(raw, "root key")
    except ValueError:
        return forms
    forms += [key.hex(), key.hex().upper(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()]
    return forms


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"not a number: {text!r}") from None


def build_api(config: KeyServiceConfig) -> KmsApi:
    """Open the root key, the key store and service, the quotas and the audit log."""
    private_dir(config.data_dir)
    root_key = load_root_key(key_file=config.root_key_file, env_value=config.root_key,
                             passphrase=config.root_passphrase, data_dir=config.data_dir)
    service = KeyService.open(config.data_dir, root_key, account_id=config.account_id,
                              region=config.region, clock=_clock(config), tokens=config.pkcs11,
                              store_url=config.store_url)
    service.peers = dict(config.peers)
    service.peer_secrets = {c.access_key: c.secret_key for c in config.credentials}
    api = KmsApi(service, QuotaLimiter(config.quotas), AuditLog(config.audit_path),
                 audit_on_failure=config.audit_on_failure)
    api.add_change_listener(follow_maintenance(api))
    return api


def _clock(config: KeyServiceConfig) -> Clock | None:
    """The test hook: KEYSERVICE_CLOCK_FILE shifts the key service's notion of now."""
    return OffsetFileClock(config.clock_file) if config.clock_file is not None else None
