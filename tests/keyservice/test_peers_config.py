"""The peers of a key service (multi-region keys): ``[[keyservice.peers]]`` tables and KEYSERVICE_PEER_*."""
from pathlib import Path

import pytest

from keyservice.config import ConfigError, KeyServiceConfig, log_secrets
from keyservice.peers import Peer

PEER_TABLE = '''
[[keyservice.peers]]
region = "eu-west-1"
endpoint = "https://kms.eu.example:7000"
access_key = "AKIAEUPEER"
secret_key = "eu-peer-secret"
'''


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> KeyServiceConfig:
    path = tmp_path / "ks.toml"
    path.write_text("[keyservice]\n" + text)
    return KeyServiceConfig.load(path, env or {})


def test_peer_tables_are_read_by_region_and_their_secrets_are_log_secrets(tmp_path: Path) -> None:
    config = load(tmp_path, PEER_TABLE)
    assert config.peers == {"eu-west-1": Peer("eu-west-1", "https://kms.eu.example:7000", "AKIAEUPEER",
                                              "eu-peer-secret")}
    assert "eu-peer-secret" in log_secrets(config)


def test_the_environment_overrides_a_peer_field_or_defines_a_whole_peer(tmp_path: Path) -> None:
    config = load(tmp_path, PEER_TABLE, {
        "KEYSERVICE_PEER_EU_WEST_1_ENDPOINT": "http://127.0.0.1:7100",
        "KEYSERVICE_PEER_AP_SOUTH_1_ENDPOINT": "http://127.0.0.1:7200",
        "KEYSERVICE_PEER_AP_SOUTH_1_ACCESS_KEY": "AKIAAP", "KEYSERVICE_PEER_AP_SOUTH_1_SECRET_KEY": "ap-secret"})
    assert config.peers["eu-west-1"] == Peer("eu-west-1", "http://127.0.0.1:7100", "AKIAEUPEER", "eu-peer-secret")
    assert config.peers["ap-south-1"] == Peer("ap-south-1", "http://127.0.0.1:7200", "AKIAAP", "ap-secret")


@pytest.mark.parametrize("text, env, message", [
    ('peers = "x"\n', {}, "must be an array of tables"),
    ('[[keyservice.peers]]\nregion = "eu-west-1"\n', {}, "peers.endpoint must be a non-empty string"),
    (PEER_TABLE + 'colour = "red"\n', {}, "unknown [[keyservice.peers]] settings: colour"),
    (PEER_TABLE + PEER_TABLE, {}, "two [[keyservice.peers]] tables for region eu-west-1"),
    (PEER_TABLE.replace("https://kms.eu.example:7000", "kms.eu.example"), {}, "endpoint must be an http"),
    ("", {"KEYSERVICE_PEER_EU_WEST_2_ENDPOINT": "http://127.0.0.1:1"},
     "peer eu-west-2: access_key, secret_key must be set too"),
    (PEER_TABLE.replace("eu-west-1", "us-east-1"), {}, "region us-east-1 is this key service's own region"),
])
def test_bad_peers_are_refused(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, text, env)
    assert message in str(refused.value)
