"""The embedded key service's facade: opened from a host's settings, typed calls, one error type."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from keyservice.embedded import ConfigError, EmbeddedKeyService, KeyServiceError, settings_secrets

ROOT_KEY = base64.b64encode(bytes(range(32))).decode()
ALIAS = "alias/host-default"


async def open_keys(tmp_path: Path, table: str = "", env: dict[str, str] | None = None) -> EmbeddedKeyService:
    config = tmp_path / "host.toml"
    config.write_text(f"[keyservice]\n{table}")
    return await EmbeddedKeyService.open(config, {"KEYSERVICE_ROOT_KEY": ROOT_KEY, **(env or {})},
                                         tmp_path / "host-data" / "keyservice", source="host")


async def test_a_data_key_unwraps_with_its_context_and_the_store_is_under_the_default_dir(tmp_path: Path):
    keys = await open_keys(tmp_path)
    try:
        arn = await keys.ensure_alias_key(ALIAS, "the host's key")
        made = await keys.generate_data_key(ALIAS, {"bucket": "b"})
        opened = await keys.decrypt(made.ciphertext_blob, {"bucket": "b"})
    finally:
        await keys.close()
    assert (len(made.plaintext), made.key_arn) == (32, arn)
    assert (opened.plaintext, opened.ciphertext_blob, opened.key_arn) == (made.plaintext, made.ciphertext_blob, arn)
    assert (tmp_path / "host-data" / "keyservice" / "keys.db").exists()


async def test_refusals_are_key_service_errors_with_the_kms_type_and_message(tmp_path: Path):
    keys = await open_keys(tmp_path)
    try:
        await keys.ensure_alias_key(ALIAS, "the host's key")
        made = await keys.generate_data_key(ALIAS, {"bucket": "b"})
        with pytest.raises(KeyServiceError) as wrong_context:
            await keys.decrypt(made.ciphertext_blob, {"bucket": "other"})
        with pytest.raises(KeyServiceError) as unknown:
            await keys.generate_data_key("alias/nothing", {})
    finally:
        await keys.close()
    assert (wrong_context.value.error_type, wrong_context.value.message) == (
        "InvalidCiphertextException", "The ciphertext is invalid or was not produced by this service.")
    assert (unknown.value.error_type, unknown.value.message) == (
        "NotFoundException", "Alias arn:aws:kms:us-east-1:111122223333:alias/nothing is not found.")


async def test_the_alias_key_is_created_once_and_found_after_a_restart(tmp_path: Path):
    first = await open_keys(tmp_path)
    try:
        created = await first.ensure_alias_key(ALIAS, "the host's key")
        assert await first.ensure_alias_key(ALIAS, "the host's key") == created
    finally:
        await first.close()
    again = await open_keys(tmp_path)
    try:
        assert await again.ensure_alias_key(ALIAS, "the host's key") == created
    finally:
        await again.close()
    audit = [json.loads(line) for line in (tmp_path / "host-data" / "keyservice" / "audit.log").read_text().splitlines()]
    assert [(r["operation"], r["outcome"]) for r in audit] == [
        ("DescribeKey", "NotFoundException"), ("CreateKey", "ok"), ("CreateAlias", "ok"),
        ("DescribeKey", "ok"), ("DescribeKey", "ok")]
    assert {r["source"] for r in audit} == {"host"}


async def test_the_settings_data_dir_wins_over_the_hosts_default(tmp_path: Path):
    keys = await open_keys(tmp_path, f'data_dir = "{tmp_path / "ks-own"}"\n')
    await keys.close()
    assert (tmp_path / "ks-own" / "keys.db").exists()
    assert not (tmp_path / "host-data").exists()


async def test_unusable_settings_are_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        await open_keys(tmp_path, 'audit_on_failure = "shrug"\n')
    assert str(info.value) == "audit_on_failure must be one of refuse, warn, not 'shrug'"


def test_settings_secrets_name_the_secret_variables_even_of_refused_settings(tmp_path: Path):
    env = {"KEYSERVICE_ROOT_PASSPHRASE": "pass phrase", "KEYSERVICE_SECRET_KEY": "lonely secret"}
    assert settings_secrets(None, env) == ["", "pass phrase", "lonely secret"]  # a secret key without access key
