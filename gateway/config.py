"""The gateway's settings: a TOML file, overridden by GATEWAY_* environment variables.

Everything is validated once at start so a typo fails loudly with the setting's name instead of
surfacing as a confusing error on the first request.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from common.accesslog import check_destination, check_format
from common.logsetup import parse_level
from common.connections import ServerLimits
from common.digits import parse_decimal
from gateway.datakeys import CacheLimits

ENCRYPTION_MODES = ("aws:kms", "passthrough")
DEFAULT_KEY_ALIAS = "alias/s3-gateway-default"


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""


@dataclass(frozen=True)
class Credential:
    """A client's SigV4 key pair, the IAM principal the gateway uses KMS keys as for it, and the upstream
    credential its requests are re-signed with (empty: the ``[upstream]`` one, shared by every such client)."""

    access_key: str
    secret_key: str
    principal: str = ""  # empty: arn:aws:iam::ACCOUNT:user/ACCESS_KEY (``principal_in``)
    upstream_access_key: str = ""
    upstream_secret_key: str = ""

    @property
    def upstream_user(self) -> tuple[str, str] | None:
        """The upstream key pair this client acts as upstream, or None for the gateway's ``[upstream]`` one."""
        return (self.upstream_access_key, self.upstream_secret_key) if self.upstream_access_key else None

    def principal_in(self, account_id: str) -> str:
        """The principal ARN key policies and grants name this credential by: the configured one, else
        one IAM user per access key in the key service's account."""
        return self.principal or f"arn:aws:iam::{account_id}:user/{self.access_key}"


@dataclass(frozen=True)
class BucketPolicy:
    encryption: str = "aws:kms"
    kms_key_id: str = ""


DEFAULT_UPSTREAM_READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class UpstreamConfig:
    url: str = ""
    region: str = "us-east-1"
    access_key: str = ""
    secret_key: str = ""
    pool_size: int = 100
    pool_wait: float = 10.0
    # Seconds the upstream may stay silent while the gateway waits for an answer or the next body
    # bytes: bounds what a half-open upstream connection holds a request (and its client) for.
    read_timeout: float = DEFAULT_UPSTREAM_READ_TIMEOUT
    # Tries of an idempotent upstream request that meets a 500, a 503 or a reset (gateway/s3client.py).
    max_attempts: int = 3


@dataclass(frozen=True)
class KmsConfig:
    endpoint: str = ""
    region: str = "us-east-1"
    access_key: str = ""
    secret_key: str = ""
    timeout: float = 5.0     # seconds one remote KMS call may take in all, retries included
    max_attempts: int = 3    # attempts per remote KMS call (first try included), within ``timeout``
    # Data-key caching (Bucket Keys on writes, unwrapped data keys on reads; gateway/datakeys.py), for the
    # embedded and a remote key service alike: a cached key is used for at most this many seconds (0: no
    # caching), objects and plaintext bytes. A disabled CMK or revoked grant takes effect within max_age.
    data_key_max_age: float = 60.0
    data_key_max_objects: int = 10_000
    data_key_max_bytes: int = 1 << 40
    throttle_budget: float = 2.0  # seconds a throttled KMS call is retried for before 503 SlowDown

    @property
    def cache_limits(self) -> CacheLimits:
        return CacheLimits(max_age=self.data_key_max_age, max_objects=self.data_key_max_objects,
                           max_bytes=self.data_key_max_bytes, throttle_budget=self.throttle_budget)


@dataclass(frozen=True)
class GatewayConfig:
    listen: str = "127.0.0.1:8080"
    data_dir: Path = Path("./data")
    region: str = "us-east-1"
    tls_cert_file: str = ""
    tls_key_file: str = ""
    trust_forwarded_proto: bool = False
    # Virtual-hosted-style requests: BUCKET.<domain> names the bucket (MinIO's MINIO_DOMAIN); empty: path style only.
    domain: str = ""
    # The Host the client signed is X-Forwarded-Host (a TLS-terminating proxy in front sets it); off by default.
    trust_forwarded_host: bool = False
    allow_ssec_over_http: bool = False
    allow_unencrypted_reads: bool = True
    default_encryption: str = "aws:kms"
    default_kms_key_id: str = ""
    secret_file: str = ""
    log_level: str = "INFO"
    header_timeout: float = ServerLimits.header_timeout
    idle_timeout: float = ServerLimits.idle_timeout
    body_timeout: float = ServerLimits.body_timeout
    send_timeout: float = ServerLimits.send_timeout
    max_connections: int = ServerLimits.max_connections
    body_min_rate: float = ServerLimits.body_min_rate
    max_connections_per_ip: int = ServerLimits.max_connections_per_ip
    # Seconds a process trusts its cached copy of a bucket's encryption configuration (set through the S3
    # API by another process); 0 reads it for every write (gateway/bucketencryption.py).
    bucket_config_ttl: float = 5.0
    # Bytes of memory for holding PutObject bodies whose checksum comes in a trailer (SDKs streaming over https)
    # until that checksum is known, so it can be stored with the object (up to 8 MiB each); 0 never holds one.
    trailer_checksum_buffer: int = 64 * 1024 * 1024
    # The admin endpoints (health, metrics: common/admin.py) listen here; empty: not served (and no metrics).
    admin_listen: str = ""
    access_log: str = "stdout"       # stdout, stderr, off, or a file path (common/accesslog.py)
    access_log_format: str = "json"  # json (one object per line) or text
    # Verify before listening that the upstream answers a signed request with the configured credential
    # (gateway/probes.py); off only for a gateway that must start while its upstream is down.
    startup_checks: bool = True
    # Processes serving the listener (common/workers.py); 0: one per core.
    workers: int = 0
    credentials: tuple[Credential, ...] = ()
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    kms: KmsConfig = field(default_factory=KmsConfig)
    buckets: Mapping[str, BucketPolicy] = field(default_factory=dict)
    config_path: Path | None = None

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return parse_listen(self.listen)

    @property
    def admin_host_port(self) -> tuple[str, int] | None:
        return parse_listen(self.admin_listen) if self.admin_listen else None

    @property
    def limits(self) -> ServerLimits:
        return ServerLimits.of(self)

    @property
    def secret_path(self) -> Path:
        return Path(self.secret_file) if self.secret_file else self.data_dir / "gateway.secret"

    def bucket_policy(self, bucket: str) -> BucketPolicy:
        """The bucket's own table, or the gateway-wide default."""
        return self.buckets.get(bucket) or BucketPolicy(self.default_encryption, self.default_kms_key_id)


class Rate(float):
    """The kind of a setting that is a number >= 0, where 0 turns the limit off."""


class Count(int):
    """The kind of a setting that is a whole number >= 0, where 0 turns the limit off."""


_GATEWAY_ENV: dict[str, tuple[str, type]] = {
    "listen": ("GATEWAY_LISTEN", str),
    "data_dir": ("GATEWAY_DATA_DIR", str),
    "region": ("GATEWAY_REGION", str),
    "tls_cert_file": ("GATEWAY_TLS_CERT_FILE", str),
    "tls_key_file": ("GATEWAY_TLS_KEY_FILE", str),
    "trust_forwarded_proto": ("GATEWAY_TRUST_FORWARDED_PROTO", bool),
    "domain": ("GATEWAY_DOMAIN", str),
    "trust_forwarded_host": ("GATEWAY_TRUST_FORWARDED_HOST", bool),
    "allow_ssec_over_http": ("GATEWAY_ALLOW_SSEC_OVER_HTTP", bool),
    "allow_unencrypted_reads": ("GATEWAY_ALLOW_UNENCRYPTED_READS", bool),
    "default_encryption": ("GATEWAY_DEFAULT_ENCRYPTION", str),
    "default_kms_key_id": ("GATEWAY_DEFAULT_KMS_KEY_ID", str),
    "secret_file": ("GATEWAY_SECRET_FILE", str),
    "header_timeout": ("GATEWAY_HEADER_TIMEOUT", float),
    "idle_timeout": ("GATEWAY_IDLE_TIMEOUT", float),
    "body_timeout": ("GATEWAY_BODY_TIMEOUT", float),
    "send_timeout": ("GATEWAY_SEND_TIMEOUT", float),
    "max_connections": ("GATEWAY_MAX_CONNECTIONS", int),
    "body_min_rate": ("GATEWAY_BODY_MIN_RATE", Rate),
    "max_connections_per_ip": ("GATEWAY_MAX_CONNECTIONS_PER_IP", Count),
    "log_level": ("GATEWAY_LOG_LEVEL", str),
    "bucket_config_ttl": ("GATEWAY_BUCKET_CONFIG_TTL", Rate),
    "trailer_checksum_buffer": ("GATEWAY_TRAILER_CHECKSUM_BUFFER", Count),
    "admin_listen": ("GATEWAY_ADMIN_LISTEN", str),
    "access_log": ("GATEWAY_ACCESS_LOG", str),
    "access_log_format": ("GATEWAY_ACCESS_LOG_FORMAT", str),
    "workers": ("GATEWAY_WORKERS", Count),
    "startup_checks": ("GATEWAY_STARTUP_CHECKS", bool),
}
# The file's top-level tables; any other (a misspelt ``[gatway]``) would be silently ignored and the gateway
# start on development defaults, so it is refused. ``[keyservice]`` is the embedded key service's.
SECTIONS = ("gateway", "upstream", "kms", "buckets", "keyservice")
_SECTION_ENV: dict[str, tuple[str, dict[str, type]]] = {
    "upstream": ("GATEWAY_UPSTREAM_", {"url": str, "region": str, "access_key": str, "secret_key": str,
                                       "pool_size": int, "pool_wait": float,
                                       "read_timeout": float, "max_attempts": int}),
    "kms": ("GATEWAY_KMS_", {"endpoint": str, "region": str, "access_key": str, "secret_key": str,
                             "timeout": float, "max_attempts": int, "data_key_max_age": Rate,
                             "data_key_max_objects": Count, "data_key_max_bytes": Count,
                             "throttle_budget": Rate}),
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port); port 0 means any free port."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or (number := parse_decimal(port, 65536)) is None or number > 65535:
        raise ConfigError(f"listen must be HOST:PORT, got {value!r}")
    return host.strip("[]"), number


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _as_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value


def _as_positive(name: str, value: Any, kind: type) -> float | int:
    """A number > 0 (``kind`` Rate: >= 0) from TOML (int or float) or the environment (text); ``kind``
    int refuses fractions."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if kind in (Rate, Count):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if kind is Count:
            if value != int(value):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
            return int(value)
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    if kind is int:
        if value != int(value):
            raise ConfigError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _lookup(env: Mapping[str, str], env_name: str, table: Mapping[str, Any], key: str, kind: type) -> Any:
    """The environment's value, else the file's; an empty variable unsets a number (keeps its default)."""
    if env_name in env and not (kind in (int, float, Rate, Count) and not env[env_name].strip()):
        return env[env_name]
    return table.get(key)


def _convert(name: str, value: Any, kind: type) -> Any:
    """A setting's value as its kind: str, bool, or a positive int/float."""
    if kind is bool:
        return _as_bool(name, value)
    if kind is str:
        return _as_str(name, value)
    return _as_positive(name, value, kind)


def _read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _check_sections(doc: Mapping[str, Any], path: Path | None) -> None:
    """Every top-level entry is one of the known tables (a key outside any table is refused too)."""
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s) in {path}: {', '.join(f'[{name}]' for name in unknown)} "
                          f"(known: {', '.join(f'[{name}]' for name in SECTIONS)})")


def _gateway_settings(table: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    unknown = set(table) - set(_GATEWAY_ENV) - {"credentials"}
    if unknown:
        raise ConfigError(f"unknown setting(s) in [gateway]: {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name, (env_name, kind) in _GATEWAY_ENV.items():
        value = _lookup(env, env_name, table, name, kind)
        if value is None:
            continue
        out[name] = _convert(f"gateway.{name} ({env_name})", value, kind)
    if "data_dir" in out:
        out["data_dir"] = Path(out["data_dir"])
    return out


def _section(name: str, table: Mapping[str, Any], env: Mapping[str, str], cls: type) -> Any:
    prefix, keys = _SECTION_ENV[name]
    unknown = set(table) - set(keys)
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{name}]: {', '.join(sorted(unknown))}")
    values = {}
    for key, kind in keys.items():
        env_name = prefix + key.upper()
        value = _lookup(env, env_name, table, key, kind)
        if value is not None:
            values[key] = _convert(f"{name}.{key} ({env_name})", value, kind)
    return cls(**values)


def _credentials(table: Mapping[str, Any], env: Mapping[str, str]) -> tuple[Credential, ...]:
    creds = []
    for i, entry in enumerate(table.get("credentials", [])):
        if not isinstance(entry, dict) or not entry.get("access_key") or not entry.get("secret_key"):
            raise ConfigError(f"gateway.credentials[{i}] needs access_key and secret_key")
        if set(entry) - set(_CREDENTIAL_FIELDS):
            raise ConfigError(f"gateway.credentials[{i}] takes only {', '.join(_CREDENTIAL_FIELDS)}")
        name = f"gateway.credentials[{i}]"
        creds.append(Credential(_as_str(f"{name}.access_key", entry["access_key"]),
                                _as_str(f"{name}.secret_key", entry["secret_key"]),
                                _principal(f"{name}.principal", entry.get("principal", "")),
                                *_upstream_user(f"{name}.upstream_access_key", f"{name}.upstream_secret_key",
                                                entry.get("upstream_access_key", ""),
                                                entry.get("upstream_secret_key", ""))))
    env_user = _upstream_user(*_ENV_UPSTREAM_USER, *(env.get(name, "") for name in _ENV_UPSTREAM_USER))
    if env.get("GATEWAY_ACCESS_KEY") or env.get("GATEWAY_SECRET_KEY"):
        if not (env.get("GATEWAY_ACCESS_KEY") and env.get("GATEWAY_SECRET_KEY")):
            raise ConfigError("GATEWAY_ACCESS_KEY and GATEWAY_SECRET_KEY must be set together")
        creds.append(Credential(env["GATEWAY_ACCESS_KEY"], env["GATEWAY_SECRET_KEY"],
                                _principal("GATEWAY_PRINCIPAL", env.get("GATEWAY_PRINCIPAL", "")), *env_user))
    elif env_user[0]:
        raise ConfigError(f"{' and '.join(_ENV_UPSTREAM_USER)} are the upstream user of GATEWAY_ACCESS_KEY, "
                          "which is not set")
    return tuple(creds)


_CREDENTIAL_FIELDS = ("access_key", "secret_key", "principal", "upstream_access_key", "upstream_secret_key")
# The environment credential's upstream user (GATEWAY_UPSTREAM_* without USER_ is the [upstream] table's).
_ENV_UPSTREAM_USER = ("GATEWAY_UPSTREAM_USER_ACCESS_KEY", "GATEWAY_UPSTREAM_USER_SECRET_KEY")


def _upstream_user(access_name: str, secret_name: str, access_key: Any, secret_key: Any) -> tuple[str, str]:
    """A credential's own upstream key pair (both halves, or neither: then the ``[upstream]`` one)."""
    access_key, secret_key = _as_str(access_name, access_key), _as_str(secret_name, secret_key)
    if bool(access_key) != bool(secret_key):
        raise ConfigError(f"{access_name} and {secret_name} must be set together")
    return access_key, secret_key


_PRINCIPAL = re.compile(r"arn:aws:(?:iam|sts)::\d{12}:[A-Za-z0-9+=,.@_/:-]+")


def _principal(name: str, value: Any) -> str:
    """An IAM or STS principal ARN (the account is taken from it), or empty for the default."""
    value = _as_str(name, value)
    if value and not _PRINCIPAL.fullmatch(value):
        raise ConfigError(f"{name} must be an IAM or STS principal ARN such as "
                          f"arn:aws:iam::111122223333:user/app1, got {value!r}")
    return value


def _buckets(table: Mapping[str, Any]) -> dict[str, BucketPolicy]:
    out = {}
    for bucket, entry in table.items():
        if not isinstance(entry, dict) or set(entry) - {"encryption", "kms_key_id"}:
            raise ConfigError(f"[buckets.{bucket}] takes only encryption and kms_key_id")
        policy = BucketPolicy(_as_str(f"buckets.{bucket}.encryption", entry.get("encryption", "aws:kms")),
                              _as_str(f"buckets.{bucket}.kms_key_id", entry.get("kms_key_id", "")))
        _check_encryption(f"buckets.{bucket}.encryption", policy.encryption)
        out[bucket] = policy
    return out


def _check_encryption(name: str, value: str) -> None:
    if value not in ENCRYPTION_MODES:
        raise ConfigError(f"{name} must be one of {', '.join(ENCRYPTION_MODES)}, got {value!r}")


def _validate(cfg: GatewayConfig) -> None:
    parse_listen(cfg.listen)
    if cfg.admin_listen:
        try:
            parse_listen(cfg.admin_listen)
        except ConfigError:
            raise ConfigError(f"gateway.admin_listen (GATEWAY_ADMIN_LISTEN) must be HOST:PORT, "
                              f"got {cfg.admin_listen!r}") from None
    try:
        check_destination("gateway.access_log (GATEWAY_ACCESS_LOG)", cfg.access_log)
        check_format("gateway.access_log_format (GATEWAY_ACCESS_LOG_FORMAT)", cfg.access_log_format)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.domain and not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", cfg.domain):
        raise ConfigError(f"gateway.domain (GATEWAY_DOMAIN) must be a DNS name such as s3.example.test, "
                          f"got {cfg.domain!r}")
    _check_encryption("gateway.default_encryption", cfg.default_encryption)
    if bool(cfg.tls_cert_file) != bool(cfg.tls_key_file):
        raise ConfigError("gateway.tls_cert_file and gateway.tls_key_file must be set together")
    for name in ("tls_cert_file", "tls_key_file"):
        path = getattr(cfg, name)
        if path and not Path(path).is_file():
            raise ConfigError(f"gateway.{name}: file not found: {path}")
    up = cfg.upstream
    if up.url and not up.url.startswith(("http://", "https://")):
        raise ConfigError(f"upstream.url must start with http:// or https://, got {up.url!r}")
    if up.url and not (up.access_key and up.secret_key):
        raise ConfigError("upstream.access_key and upstream.secret_key are required with upstream.url")
    if cfg.kms.endpoint and not cfg.kms.endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"kms.endpoint must start with http:// or https://, got {cfg.kms.endpoint!r}")
    try:
        parse_level(cfg.log_level)
    except ValueError as exc:
        raise ConfigError(f"gateway.log_level (GATEWAY_LOG_LEVEL): {exc}") from None


def secrets_of(cfg: GatewayConfig, env: Mapping[str, str] | None = None) -> list[str]:
    """Every secret the settings hold, for the log filter to redact wherever it turns up: the gateway's
    own keys and those of the embedded key service (root key, passphrase, credentials), read from the
    same file's ``[keyservice]`` table and KEYSERVICE_* variables as the key service reads them."""
    from keyservice.embedded import settings_secrets

    env = os.environ if env is None else env
    upstream_users = [c.upstream_secret_key for c in cfg.credentials if c.upstream_secret_key]
    own = [*(c.secret_key for c in cfg.credentials), *upstream_users, cfg.upstream.secret_key, cfg.kms.secret_key]
    return own + settings_secrets(cfg.config_path, env)


def load_config(path: str | Path | None, env: Mapping[str, str], listen: str | None = None,
                admin_listen: str | None = None) -> GatewayConfig:
    """Read FILE, apply the environment, then --listen and --admin-listen; raise ConfigError naming any bad
    setting."""
    file_path = Path(path) if path else None
    doc = _read_toml(file_path)
    _check_sections(doc, file_path)
    gateway_table = doc.get("gateway", {})
    settings = _gateway_settings(gateway_table, env)
    if listen:
        settings["listen"] = listen
    if admin_listen:
        settings["admin_listen"] = admin_listen
    cfg = GatewayConfig(
        **settings,
        credentials=_credentials(gateway_table, env),
        upstream=_section("upstream", doc.get("upstream", {}), env, UpstreamConfig),
        kms=_section("kms", doc.get("kms", {}), env, KmsConfig),
        buckets=_buckets(doc.get("buckets", {})),
        config_path=file_path,
    )
    _validate(cfg)
    return cfg
