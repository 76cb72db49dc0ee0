"""The shared AEAD primitives: what seals opens only with the same key and associated data."""
import pytest

from common.aead import OVERHEAD, Aead, AuthenticationFailed, derive


def test_sealed_value_opens_with_its_key_and_aad():
    aead = Aead(bytes(range(32)))
    sealed = aead.seal(b"secret", b"aad")
    assert len(sealed) == len(b"secret") + OVERHEAD
    assert aead.open(sealed, b"aad") == b"secret"


def test_each_seal_uses_a_fresh_nonce():
    aead = Aead(bytes(32))
    assert aead.seal(b"x") != aead.seal(b"x")


@pytest.mark.parametrize("change", ["aad", "key", "byte", "short"])
def test_anything_altered_fails_authentication(change):
    aead = Aead(bytes(32))
    sealed = aead.seal(b"secret", b"aad")
    with pytest.raises(AuthenticationFailed):
        if change == "aad":
            aead.open(sealed, b"other")
        elif change == "key":
            Aead(bytes([1]) * 32).open(sealed, b"aad")
        elif change == "byte":
            aead.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), b"aad")
        else:
            aead.open(sealed[:OVERHEAD - 1], b"aad")


def test_derived_keys_differ_by_purpose_and_match_hkdf_sha256():
    # RFC 5869 test case 1 (HKDF-SHA256, L=42).
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    assert derive(ikm, salt=salt, info=info, length=42).hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    assert derive(ikm, salt=None, info=b"a") != derive(ikm, salt=None, info=b"b")


def test_a_key_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError):
        Aead(bytes(16))
