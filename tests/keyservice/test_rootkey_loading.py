"""Root key sources: file (raw, hex, base64), env value, passphrase, generated development key."""

import base64
import os
import stat

import pytest

from keyservice.rootkey import load_root_key


@pytest.mark.parametrize("encode", [lambda k: k, lambda k: k.hex().encode() + b"\n",
                                    lambda k: base64.b64encode(k) + b"\n"])
def test_key_file_accepts_raw_hex_and_base64(tmp_path, encode):
    key = os.urandom(32)
    path = tmp_path / "root"
    path.write_bytes(encode(key))
    assert load_root_key(key_file=str(path), env_value=None, passphrase=None, data_dir=tmp_path) == key


def test_env_value_and_bad_lengths(tmp_path):
    key = os.urandom(32)
    assert load_root_key(key_file=None, env_value=base64.b64encode(key).decode(), passphrase=None,
                         data_dir=tmp_path) == key
    with pytest.raises(ValueError):
        load_root_key(key_file=None, env_value="abcd", passphrase=None, data_dir=tmp_path)


def test_passphrase_derives_a_stable_key_per_data_dir(tmp_path):
    first = load_root_key(key_file=None, env_value=None, passphrase="correct horse", data_dir=tmp_path / "a")
    again = load_root_key(key_file=None, env_value=None, passphrase="correct horse", data_dir=tmp_path / "a")
    elsewhere = load_root_key(key_file=None, env_value=None, passphrase="correct horse", data_dir=tmp_path / "b")
    assert len(first) == 32 and first == again and first != elsewhere


def test_no_source_generates_a_private_dev_key_with_a_loud_warning(tmp_path, capsys, caplog):
    key = load_root_key(key_file=None, env_value=None, passphrase=None, data_dir=tmp_path)
    path = tmp_path / "root.key"
    assert path.read_bytes() == key and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "DEVELOPMENT ONLY" in caplog.text and "DEVELOPMENT ONLY" not in capsys.readouterr().err  # once
    assert load_root_key(key_file=None, env_value=None, passphrase=None, data_dir=tmp_path) == key
