"""The PKCS#11 tokens of custom key stores in the configuration: [keyservice.pkcs11.NAME] tables and
KEYSERVICE_PKCS11_<NAME>_MODULE / _TOKEN_LABEL variables."""
from pathlib import Path

import pytest

from keyservice.config import ConfigError, KeyServiceConfig
from keyservice.pkcs11backend import TokenConfig

TABLE = """
[keyservice.pkcs11.cluster-softhsmtoken]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "kms"
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> KeyServiceConfig:
    path = tmp_path / "ks.toml"
    path.write_text(text)
    return KeyServiceConfig.load(path, env or {})


def test_a_table_names_a_token_by_its_cluster_id(tmp_path: Path) -> None:
    assert load(tmp_path, TABLE).pkcs11 == {
        "cluster-softhsmtoken": TokenConfig("cluster-softhsmtoken", "/usr/lib/softhsm/libsofthsm2.so", "kms")}


def test_no_tables_no_tokens() -> None:
    assert KeyServiceConfig.load(None, {}).pkcs11 == {}


def test_variables_override_a_table_field_by_field(tmp_path: Path) -> None:
    config = load(tmp_path, TABLE, {"KEYSERVICE_PKCS11_CLUSTER_SOFTHSMTOKEN_TOKEN_LABEL": "other"})
    assert config.pkcs11["cluster-softhsmtoken"] == TokenConfig("cluster-softhsmtoken",
                                                                "/usr/lib/softhsm/libsofthsm2.so", "other")


def test_variables_alone_define_a_token_named_in_lower_case() -> None:
    config = KeyServiceConfig.load(None, {"KEYSERVICE_PKCS11_CLUSTER_ENVONLYTOKEN_MODULE": "/lib/p11.so",
                                          "KEYSERVICE_PKCS11_CLUSTER_ENVONLYTOKEN_TOKEN_LABEL": "t"})
    assert config.pkcs11 == {"cluster-envonlytoken": TokenConfig("cluster-envonlytoken", "/lib/p11.so", "t")}


@pytest.mark.parametrize("text, message", [
    ('[keyservice.pkcs11.softhsm]\nmodule = "m"\ntoken_label = "t"\n', "cluster-[2-7a-zA-Z]{11,16}"),
    ('[keyservice.pkcs11.cluster-softhsmtoken]\nmodule = "m"\n', "token_label must be a non-empty string"),
    ('[keyservice.pkcs11.cluster-softhsmtoken]\nmodule = "m"\ntoken_label = "t"\npin = "x"\n',
     "unknown [keyservice.pkcs11.cluster-softhsmtoken] settings: pin"),
    ('[keyservice]\npkcs11 = "x"\n', "[keyservice.pkcs11] must be a table"),
])
def test_bad_tables_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert message in str(info.value)


def test_half_a_token_in_variables_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="KEYSERVICE_PKCS11_CLUSTER_HALFDEFINED_TOKEN_LABEL must be set too"):
        KeyServiceConfig.load(None, {"KEYSERVICE_PKCS11_CLUSTER_HALFDEFINED_MODULE": "/lib/p11.so"})
