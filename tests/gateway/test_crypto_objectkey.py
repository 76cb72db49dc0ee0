"""ObjectKey: the per-object key as a type that never shows its bytes and only seals, unseals and derives."""
from __future__ import annotations

import base64
import hashlib
import logging

import pytest

from common.aead import Aead, AuthenticationFailed, derive
from gateway.crypto.objectkey import OBJECT_KEY_SIZE, ObjectKey
from gateway.crypto.sse import CustomerKey, CustomerKeyRequest

RAW = bytes(range(100, 132))


def _forms(raw: bytes) -> list[str]:
    """Every way a log line or a repr could spell the key."""
    return [raw.hex(), raw.hex().upper(), repr(raw), str(raw), str(list(raw)), base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode().rstrip("="), raw.decode("latin-1")]


def _shown(value: object) -> list[str]:
    return [repr(value), str(value), f"{value}", f"{value!r}", "%s %r" % (value, value), repr([value]),
            repr({"key": value}), repr((value,))]


@pytest.mark.parametrize("key", [ObjectKey(RAW), ObjectKey(bytes(32)), ObjectKey.generate()])
def test_an_object_key_never_shows_its_bytes(key: ObjectKey) -> None:
    raw = key._key  # only the test looks inside
    for shown in _shown(key):
        assert shown.count("<secret>") >= 1
        for form in _forms(raw):
            assert form not in shown, (form, shown)
    assert not hasattr(key, "__dict__")  # no vars() view of the key either


def test_an_object_key_in_a_log_line_is_not_its_bytes(caplog) -> None:
    key = ObjectKey(RAW)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("gateway.test").debug("opened %s (%r) for %s", key, key, {"k": key})
    for form in _forms(RAW):
        assert form not in caplog.text


def test_a_customer_key_never_shows_its_bytes_either() -> None:
    key = CustomerKey(RAW)
    for value in (key, CustomerKeyRequest(key)):
        for shown in _shown(value):
            for form in _forms(RAW):
                assert form not in shown, (form, shown)
    assert key.md5_b64 == base64.b64encode(hashlib.md5(RAW).digest()).decode()


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_an_object_key_is_32_bytes(size: int) -> None:
    with pytest.raises(ValueError) as caught:
        ObjectKey(bytes(size))
    assert str(size) in str(caught.value)
    with pytest.raises(ValueError):
        CustomerKey(bytes(size))


def test_generated_keys_are_fresh_and_compare_by_value() -> None:
    keys = [ObjectKey.generate() for _ in range(32)]
    assert len(set(keys)) == 32
    assert ObjectKey(RAW) == ObjectKey(bytes(RAW)) and hash(ObjectKey(RAW)) == hash(ObjectKey(RAW))
    assert ObjectKey(RAW) != ObjectKey(bytes(32))
    assert ObjectKey(RAW) != RAW  # never equal to bare bytes
    assert ObjectKey(bytearray(RAW)) == ObjectKey(RAW)  # copied in: the caller's buffer may change later


def test_the_fingerprint_names_the_key_without_being_it() -> None:
    key = ObjectKey(RAW)
    assert key.fingerprint == hashlib.sha256(RAW).digest()
    assert ObjectKey.generate().fingerprint != key.fingerprint


def test_derive_and_aead_are_hkdf_of_the_key() -> None:
    key = ObjectKey(RAW)
    assert key.derive(salt=b"s" * 16, info=b"i") == derive(RAW, salt=b"s" * 16, info=b"i")
    sealed = key.aead(b"s3gw/v1/manifest").seal(b"m", b"a")
    assert Aead(derive(RAW, salt=None, info=b"s3gw/v1/manifest")).open(sealed, b"a") == b"m"


def test_seal_and_unseal_round_trip_only_under_the_same_kek_and_aad() -> None:
    kek, other = Aead(bytes(32)), Aead(bytes([1]) * 32)
    key = ObjectKey.generate()
    sealed = key.seal(kek, b"aad")
    assert len(sealed) == 12 + OBJECT_KEY_SIZE + 16
    assert ObjectKey.unseal(kek, sealed, b"aad") == key
    for wrong_kek, aad, blob in ((other, b"aad", sealed), (kek, b"other", sealed),
                                 (kek, b"aad", sealed[:-1] + bytes([sealed[-1] ^ 1])), (kek, b"aad", sealed[:20])):
        with pytest.raises(AuthenticationFailed):
            ObjectKey.unseal(wrong_kek, blob, aad)


def test_unseal_refuses_a_sealed_value_that_is_not_an_object_key() -> None:
    kek = Aead(bytes(32))
    for size in (0, 16, 31, 33):
        with pytest.raises(AuthenticationFailed):
            ObjectKey.unseal(kek, kek.seal(bytes(size), b"aad"), b"aad")

