"""Key service configuration: TOML table, env overrides, validation."""
from pathlib import Path

import pytest

from keyservice.config import ConfigError, Credential, KeyServiceConfig, log_secrets

TOML = """
[keyservice]
listen = "0.0.0.0:7100"
data_dir = "/var/lib/ks"
account_id = "444455556666"
region = "eu-west-1"
purge_interval = 5

[[keyservice.credentials]]
access_key = "AKIAROOT"
secret_key = "rootsecret"

[[keyservice.credentials]]
access_key = "AKIAALICE"
secret_key = "alicesecret"
principal = "arn:aws:iam::444455556666:user/alice"

[keyservice.quotas]
symmetric = 20
CreateKey = 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ks.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_env() -> None:
    config = KeyServiceConfig.load(None, {})
    assert config.host_port() == ("127.0.0.1", 7000)
    assert config.data_dir == Path("./data/keyservice")
    assert config.audit_path == Path("./data/keyservice/audit.log")
    assert config.credentials == () and config.quotas == {}


def test_toml_table_is_read(tmp_path: Path) -> None:
    config = KeyServiceConfig.load(write(tmp_path, TOML), {})
    assert config.host_port() == ("0.0.0.0", 7100)
    assert config.account_id == "444455556666" and config.region == "eu-west-1"
    assert config.audit_path == Path("/var/lib/ks/audit.log")
    assert config.purge_interval == 5.0
    assert config.quotas == {"symmetric": 20.0, "CreateKey": 1.0}
    assert config.credentials == (
        Credential("AKIAROOT", "rootsecret", "arn:aws:iam::444455556666:root"),
        Credential("AKIAALICE", "alicesecret", "arn:aws:iam::444455556666:user/alice"),
    )


def test_env_overrides_file(tmp_path: Path) -> None:
    env = {"KEYSERVICE_LISTEN": "127.0.0.1:0", "KEYSERVICE_DATA_DIR": "/tmp/d",
           "KEYSERVICE_ACCESS_KEY": "AKIAROOT", "KEYSERVICE_SECRET_KEY": "newsecret",
           "KEYSERVICE_AUDIT_LOG": "/tmp/a.log", "KEYSERVICE_CLOCK_FILE": "/tmp/clock",
           "KEYSERVICE_ROOT_KEY": "QUJD", "KEYSERVICE_PURGE_INTERVAL": "0.5"}
    config = KeyServiceConfig.load(write(tmp_path, TOML), env)
    assert config.listen == "127.0.0.1:0" and config.data_dir == Path("/tmp/d")
    assert config.audit_path == Path("/tmp/a.log") and config.clock_file == Path("/tmp/clock")
    assert config.root_key == "QUJD" and config.purge_interval == 0.5
    assert config.credential_for("AKIAROOT") == Credential(
        "AKIAROOT", "newsecret", "arn:aws:iam::444455556666:root")
    assert config.credential_for("AKIAALICE") is not None


@pytest.mark.parametrize("text, message", [
    ("[keyservice]\nlisten = 7000\n", "listen must be a str"),
    ("[keyservice]\nbogus = 1\n", "unknown [keyservice] settings: bogus"),
    ("[keyservice.quotas]\nsymmetric = -1\n", "quota symmetric must be a positive number"),
    ("[[keyservice.credentials]]\naccess_key = \"A\"\n", "credentials.secret_key must be a str"),
    ("[keyservice\n", "not valid TOML"),
])
def test_bad_file_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        KeyServiceConfig.load(write(tmp_path, text), {})


def test_half_a_credential_in_env_is_rejected() -> None:
    with pytest.raises(ConfigError, match="set together"):
        KeyServiceConfig.load(None, {"KEYSERVICE_ACCESS_KEY": "A"})


@pytest.mark.parametrize("listen", ["7000", "host:", ":7000", "h:99999", "h:x"])
def test_bad_listen_is_rejected(listen: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        KeyServiceConfig(listen=listen).host_port()


def test_ipv6_listen() -> None:
    assert KeyServiceConfig(listen="[::1]:7000").host_port() == ("::1", 7000)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        KeyServiceConfig.load(tmp_path / "missing.toml", {})


def test_example_config_file_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "keyservice.example.toml"
    config = KeyServiceConfig.load(example, {})
    assert config.host_port() == ("127.0.0.1", 7000)
    assert [c.principal for c in config.credentials] == [
        "arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:user/alice"]
    assert config.quotas["symmetric"] == 5500


LIMITS = {"header_timeout": (30.0, 2.5), "idle_timeout": (60.0, 3.0), "body_timeout": (20.0, 4.0),
          "send_timeout": (60.0, 5.0), "max_connections": (1024, 7), "body_min_rate": (500.0, 100.0),
          "max_connections_per_ip": (0, 16)}


@pytest.mark.parametrize("name", LIMITS)
def test_slow_client_limits_have_defaults_and_come_from_the_file_or_the_environment(tmp_path: Path,
                                                                                   name: str) -> None:
    default, value = LIMITS[name]
    assert getattr(KeyServiceConfig.load(None, {}).limits, name) == default
    path = write(tmp_path, f"[keyservice]\n{name} = {value}\n")
    assert getattr(KeyServiceConfig.load(path, {}).limits, name) == value
    env = {f"KEYSERVICE_{name.upper()}": str(value * 2)}
    assert getattr(KeyServiceConfig.load(path, env).limits, name) == value * 2


def test_a_body_min_rate_of_0_turns_the_minimum_rate_off(tmp_path: Path) -> None:
    assert KeyServiceConfig.load(write(tmp_path, "[keyservice]\nbody_min_rate = 0\n"), {}).limits.body_min_rate == 0
    assert KeyServiceConfig.load(None, {"KEYSERVICE_BODY_MIN_RATE": "0"}).limits.body_min_rate == 0


@pytest.mark.parametrize("text,env,message", [
    ("[keyservice]\nbody_timeout = 0\n", {}, "body_timeout must be a positive number"),
    ("[keyservice]\nmax_connections = 1.5\n", {}, "max_connections must be a whole number"),
    ("", {"KEYSERVICE_HEADER_TIMEOUT": "soon"}, "not a number"),
    ("", {"KEYSERVICE_MAX_CONNECTIONS": "2.5"}, "KEYSERVICE_MAX_CONNECTIONS must be a whole number"),
    ("", {"KEYSERVICE_IDLE_TIMEOUT": "inf"}, "KEYSERVICE_IDLE_TIMEOUT must be a positive number"),
    ("[keyservice]\nbody_min_rate = -1\n", {}, "body_min_rate must be a number >= 0"),
    ("", {"KEYSERVICE_BODY_MIN_RATE": "-5"}, "KEYSERVICE_BODY_MIN_RATE must be a number >= 0"),
    ("[keyservice]\nmax_connections_per_ip = 2.5\n", {}, "max_connections_per_ip must be a whole number"),
    ("", {"KEYSERVICE_MAX_CONNECTIONS_PER_IP": "-1"}, "KEYSERVICE_MAX_CONNECTIONS_PER_IP must be a number >= 0"),
])
def test_invalid_limits_are_refused(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KeyServiceConfig.load(write(tmp_path, text), env)


def test_log_secrets_holds_the_root_key_in_every_textual_form_the_passphrase_and_credentials(tmp_path: Path) -> None:
    import base64
    key = bytes(range(7, 39))
    config = KeyServiceConfig.load(None, {"KEYSERVICE_ROOT_KEY": key.hex(), "KEYSERVICE_ROOT_PASSPHRASE": "open sesame",
                                          "KEYSERVICE_ACCESS_KEY": "AK", "KEYSERVICE_SECRET_KEY": "the-secret-key"})
    found = set(log_secrets(config))
    assert {key.hex(), key.hex().upper(), base64.b64encode(key).decode(), "open sesame", "the-secret-key"} <= found
    (tmp_path / "root.key").write_text(base64.b64encode(key).decode() + "\n")
    found = set(log_secrets(KeyServiceConfig.load(None, {"KEYSERVICE_ROOT_KEY_FILE": str(tmp_path / "root.key")})))
    assert {key.hex(), base64.b64encode(key).decode()} <= found


def test_log_level_comes_from_the_file_or_keyservice_log_level_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyservice.toml"
    path.write_text('[keyservice]\nlog_level = "debug"\n')
    assert KeyServiceConfig.load(None, {}).log_level == "INFO"
    assert KeyServiceConfig.load(path, {}).log_level == "debug"
    assert KeyServiceConfig.load(path, {"KEYSERVICE_LOG_LEVEL": "WARNING"}).log_level == "WARNING"
    with pytest.raises(ConfigError, match="KEYSERVICE_LOG_LEVEL"):
        KeyServiceConfig.load(path, {"KEYSERVICE_LOG_LEVEL": "chatty"})


@pytest.mark.parametrize("table, env, expected", [
    ("", {}, "/gw/keyservice"),
    ('data_dir = "/from/file"\n', {}, "/from/file"),
    ("", {"KEYSERVICE_DATA_DIR": "/from/env"}, "/from/env"),
    ('data_dir = "/from/file"\n', {"KEYSERVICE_DATA_DIR": "/from/env"}, "/from/env"),
])
def test_a_default_data_dir_applies_only_when_neither_file_nor_env_names_one(tmp_path: Path, table, env,
                                                                             expected) -> None:
    config = KeyServiceConfig.load(write(tmp_path, "[keyservice]\n" + table), env,
                                   default_data_dir=Path("/gw/keyservice"))
    assert config.data_dir == Path(expected)


def test_store_url_comes_from_the_file_or_the_environment_its_password_is_a_log_secret(tmp_path: Path) -> None:
    path = tmp_path / "ks.toml"
    path.write_text('[keyservice]\nstore_url = "postgresql://ks:filepw@db:5432/keys"\n')
    assert KeyServiceConfig.load(path, {}).store_url == "postgresql://ks:filepw@db:5432/keys"
    config = KeyServiceConfig.load(path, {"KEYSERVICE_STORE_URL": "postgres://ks:envpw@db2/keys"})
    assert config.store_url == "postgres://ks:envpw@db2/keys"
    assert "envpw" in log_secrets(config)
    assert KeyServiceConfig.load(None, {}).store_url is None


def test_a_store_url_that_is_not_postgresql_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"store_url \(KEYSERVICE_STORE_URL\) must be postgresql://"):
        KeyServiceConfig.load(None, {"KEYSERVICE_STORE_URL": "mysql://db/keys"})


def test_observability_settings_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "ks.toml"
    path.write_text('[keyservice]\nadmin_listen = "127.0.0.1:7001"\naccess_log = "off"\n')
    config = KeyServiceConfig.load(path, {})
    assert (config.admin_host_port(), config.access_log, config.access_log_format) == (
        ("127.0.0.1", 7001), "off", "json")
    config = KeyServiceConfig.load(path, {"KEYSERVICE_ADMIN_LISTEN": "0.0.0.0:7002", "KEYSERVICE_ACCESS_LOG": "stderr",
                                          "KEYSERVICE_ACCESS_LOG_FORMAT": "text"})
    assert (config.admin_host_port(), config.access_log, config.access_log_format) == (
        ("0.0.0.0", 7002), "stderr", "text")
    with pytest.raises(ConfigError, match=r"admin_listen \(KEYSERVICE_ADMIN_LISTEN\) must be HOST:PORT"):
        KeyServiceConfig.load(None, {"KEYSERVICE_ADMIN_LISTEN": "nope"})
    with pytest.raises(ConfigError, match="KEYSERVICE_ACCESS_LOG_FORMAT"):
        KeyServiceConfig.load(None, {"KEYSERVICE_ACCESS_LOG_FORMAT": "xml"})


def test_an_unknown_section_is_refused_and_a_gateways_tables_are_accepted(tmp_path: Path) -> None:
    shared = tmp_path / "gateway.toml"
    shared.write_text('[gateway]\n[upstream]\n[kms]\n[buckets]\n[keyservice]\nregion = "eu-west-1"\n')
    assert KeyServiceConfig.load(shared, {}).region == "eu-west-1"
    misspelt = tmp_path / "keyservice.toml"
    misspelt.write_text('[keyservce]\nregion = "eu-west-1"\n')
    with pytest.raises(ConfigError) as refused:
        KeyServiceConfig.load(misspelt, {})
    assert str(refused.value) == f"unknown section(s) in {misspelt}: [keyservce] (the key service reads [keyservice])"
