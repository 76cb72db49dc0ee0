"""SSE-KMS / SSE-S3 / SSE-C object keys, whole-object tampering, and a decryptor written from docs/FORMAT.md.

The KeyProvider here is a small real one built on `cryptography` (data keys wrapped under a master key
with the context as AAD), because this is a unit test of the format, not of the key service.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from dataclasses import replace
from typing import Mapping

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.crypto import metadata
from gateway.crypto.sse import (
    DataKey,
    EncryptionInfo,
    MissingCustomerKey,
    SseC,
    SseKms,
    SseRequest,
    WrongCustomerKey,
    s3_context,
)
from gateway.crypto.stream import SEGMENT_SIZE, IntegrityError, StreamDecryptor, StreamEncryptor

DEFAULT_ARN = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000001"
OTHER_ARN = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000002"
GATEWAY_SECRET = b"gateway-secret-for-tests-0123456"
CUSTOMER_KEY = bytes(range(32))


class InvalidCiphertext(Exception):
    """What this provider raises where AWS KMS answers InvalidCiphertextException."""


class LocalKeyProvider:
    """Wraps data keys with AES-GCM; the blob carries the key ARN, the AAD is ARN + canonical context."""

    def __init__(self) -> None:
        self._master = AESGCM(os.urandom(32))
        self.calls: list[str] = []

    async def generate_data_key(self, key_id: str | None, context: Mapping[str, str]) -> DataKey:
        self.calls.append("GenerateDataKey")
        arn = key_id or DEFAULT_ARN
        plaintext, nonce = os.urandom(32), os.urandom(12)
        sealed = self._master.encrypt(nonce, plaintext, self._aad(arn, context))
        return DataKey(plaintext, arn.encode() + b"\n" + nonce + sealed, arn)

    async def decrypt_data_key(self, ciphertext: bytes, context: Mapping[str, str]) -> DataKey:
        self.calls.append("Decrypt")
        arn_raw, _, rest = ciphertext.partition(b"\n")
        arn = arn_raw.decode()
        try:
            plaintext = self._master.decrypt(rest[:12], rest[12:], self._aad(arn, context))
        except Exception:
            raise InvalidCiphertext() from None
        return DataKey(plaintext, ciphertext, arn)

    @staticmethod
    def _aad(arn: str, context: Mapping[str, str]) -> bytes:
        return json.dumps([arn, sorted(context.items())]).encode()


@pytest.fixture
def provider() -> LocalKeyProvider:
    return LocalKeyProvider()


def encrypt_body(object_key: bytes, info: EncryptionInfo, plaintext: bytes) -> bytes:
    encryptor = StreamEncryptor(object_key, info.params)
    return bytes(encryptor.update(plaintext) + encryptor.finalize())


def decrypt_body(object_key: bytes, info: EncryptionInfo, body: bytes) -> bytes:
    decryptor = StreamDecryptor(object_key, info.params, info.plaintext_size)
    return bytes(decryptor.update(body) + decryptor.finalize())


KMS_REQUEST = SseRequest("aws:kms", kms_key_id=OTHER_ARN, kms_context={"project": "blue"})
SSEC_REQUEST = SseRequest("SSE-C", customer_key=CUSTOMER_KEY)


# --- SSE-KMS / SSE-S3 --------------------------------------------------------------------------

async def test_kms_object_key_round_trips_with_one_kms_call_each_way(provider) -> None:
    mode = SseKms(provider)
    object_key, info = await mode.create("bkt", "dir/obj", KMS_REQUEST, 10)
    assert provider.calls == ["GenerateDataKey"]
    assert len(object_key) == 32
    assert (info.mode, info.kms_key_arn, dict(info.kms_context), info.plaintext_size) == (
        "aws:kms", OTHER_ARN, {"project": "blue"}, 10)
    assert await mode.open("bkt", "dir/obj", info, None) == object_key
    assert provider.calls == ["GenerateDataKey", "Decrypt"]


async def test_sse_s3_uses_the_default_key_and_keeps_its_mode_name(provider) -> None:
    mode = SseKms(provider)
    object_key, info = await mode.create("bkt", "k", SseRequest("AES256"), 0)
    assert (info.mode, info.kms_key_arn, dict(info.kms_context)) == ("AES256", DEFAULT_ARN, {})
    assert await mode.open("bkt", "k", info, None) == object_key


async def test_each_object_gets_a_fresh_object_key_and_seal(provider) -> None:
    mode = SseKms(provider)
    first_key, first = await mode.create("bkt", "k", KMS_REQUEST, 0)
    second_key, second = await mode.create("bkt", "k", KMS_REQUEST, 0)
    assert first_key != second_key
    assert first.sealed_key[:12] != second.sealed_key[:12]
    assert first.params != second.params


def test_s3_context_adds_the_object_arn_and_refuses_a_client_override() -> None:
    assert s3_context("b", "a/k", {"x": "1"}) == {"x": "1", "aws:s3:arn": "arn:aws:s3:::b/a/k"}
    with pytest.raises(ValueError):
        s3_context("b", "k", {"aws:s3:arn": "arn:aws:s3:::other/k"})


async def test_kms_create_refuses_a_client_context_that_sets_the_s3_arn(provider) -> None:
    with pytest.raises(ValueError):
        await SseKms(provider).create("b", "k", SseRequest("aws:kms", kms_context={"aws:s3:arn": "x"}), 0)


@pytest.mark.parametrize("bucket, key", [("other", "dir/obj"), ("bkt", "dir/obj2"), ("bkt", "dir")])
async def test_kms_object_copied_to_another_bucket_or_key_is_refused_by_kms(provider, bucket, key) -> None:
    mode = SseKms(provider)
    _, info = await mode.create("bkt", "dir/obj", KMS_REQUEST, 0)
    with pytest.raises(InvalidCiphertext):
        await mode.open(bucket, key, info, None)


async def test_kms_altered_client_context_is_refused_by_kms(provider) -> None:
    mode = SseKms(provider)
    _, info = await mode.create("bkt", "k", KMS_REQUEST, 0)
    with pytest.raises(InvalidCiphertext):
        await mode.open("bkt", "k", replace(info, kms_context={"project": "red"}), None)


@pytest.mark.parametrize("change", [
    {"kms_key_arn": DEFAULT_ARN},
    {"mode": "AES256"},
    {"version": 2},
    {"kms_context": {"aws:s3:arn": "arn:aws:s3:::bkt/k"}},
    {"mode": "SSE-C"},
])
async def test_kms_altered_metadata_fields_raise_integrity_error(provider, change) -> None:
    mode = SseKms(provider)
    _, info = await mode.create("bkt", "k", SseRequest("aws:kms", kms_key_id=OTHER_ARN), 0)
    with pytest.raises(IntegrityError):
        await mode.open("bkt", "k", replace(info, **change), None)


@pytest.mark.parametrize("index", [0, 11, 12, 43, 59])
async def test_kms_flipped_bit_in_sealed_key_raises_integrity_error(provider, index: int) -> None:
    mode = SseKms(provider)
    _, info = await mode.create("bkt", "k", KMS_REQUEST, 0)
    sealed = bytearray(info.sealed_key)
    sealed[index] ^= 1
    with pytest.raises(IntegrityError):
        await mode.open("bkt", "k", replace(info, sealed_key=bytes(sealed)), None)


async def test_metadata_swapped_between_two_versions_of_an_object_fails_the_stream(provider) -> None:
    mode = SseKms(provider)
    key_a, info_a = await mode.create("bkt", "k", KMS_REQUEST, SEGMENT_SIZE + 1)
    key_b, info_b = await mode.create("bkt", "k", KMS_REQUEST, SEGMENT_SIZE + 1)
    body_a = encrypt_body(key_a, info_a, os.urandom(SEGMENT_SIZE + 1))
    for swapped in (info_b, replace(info_a, sealed_key=info_b.sealed_key, wrapped_data_key=info_b.wrapped_data_key),
                    replace(info_a, params=info_b.params)):
        opened = await mode.open("bkt", "k", swapped, None)
        with pytest.raises(IntegrityError):
            decrypt_body(opened, swapped, body_a)


# --- SSE-C -------------------------------------------------------------------------------------

async def test_ssec_object_key_round_trips_and_never_stores_the_customer_key() -> None:
    mode = SseC(GATEWAY_SECRET)
    object_key, info = await mode.create("bkt", "k", SSEC_REQUEST, 5)
    assert object_key != CUSTOMER_KEY
    assert await mode.open("bkt", "k", info, SSEC_REQUEST) == object_key
    stored = "".join(metadata.encode(info).values())
    for form in (base64.b64encode(CUSTOMER_KEY), base64.urlsafe_b64encode(CUSTOMER_KEY).rstrip(b"="),
                 CUSTOMER_KEY.hex().encode()):
        assert form.decode() not in stored


async def test_ssec_wrong_key_is_refused_before_any_unseal() -> None:
    mode = SseC(GATEWAY_SECRET)
    _, info = await mode.create("bkt", "k", SSEC_REQUEST, 0)
    garbage_seal = replace(info, sealed_key=b"\x00" * 60)
    for wrong in (os.urandom(32), CUSTOMER_KEY[:-1] + b"\x00", CUSTOMER_KEY[:16]):
        with pytest.raises(WrongCustomerKey) as caught:
            await mode.open("bkt", "k", garbage_seal, SseRequest("SSE-C", customer_key=wrong))
        assert type(caught.value) is WrongCustomerKey


@pytest.mark.parametrize("request_", [None, SseRequest("SSE-C"), SseRequest("aws:kms")])
async def test_ssec_object_read_without_a_key_raises_missing_customer_key(request_) -> None:
    mode = SseC(GATEWAY_SECRET)
    _, info = await mode.create("bkt", "k", SSEC_REQUEST, 0)
    with pytest.raises(MissingCustomerKey):
        await mode.open("bkt", "k", info, request_)


async def test_ssec_check_value_depends_on_the_gateway_secret_and_salt() -> None:
    _, info = await SseC(GATEWAY_SECRET).create("bkt", "k", SSEC_REQUEST, 0)
    with pytest.raises(WrongCustomerKey):
        await SseC(b"another-gateway-secret-012345678").open("bkt", "k", info, SSEC_REQUEST)
    with pytest.raises(WrongCustomerKey):
        await SseC(GATEWAY_SECRET).open("bkt", "k", replace(info, ssec_salt=os.urandom(32)), SSEC_REQUEST)


@pytest.mark.parametrize("bucket, key", [("other", "k"), ("bkt", "k2")])
async def test_ssec_object_copied_to_another_bucket_or_key_raises_integrity_error(bucket, key) -> None:
    mode = SseC(GATEWAY_SECRET)
    _, info = await mode.create("bkt", "k", SSEC_REQUEST, 0)
    with pytest.raises(IntegrityError):
        await mode.open(bucket, key, info, SSEC_REQUEST)


@pytest.mark.parametrize("change", [{"mode": "aws:kms"}, {"version": 0}, {"sealed_key": os.urandom(60)},
                                    {"sealed_key": b"short"}])
async def test_ssec_altered_metadata_fields_raise_integrity_error(change) -> None:
    mode = SseC(GATEWAY_SECRET)
    _, info = await mode.create("bkt", "k", SSEC_REQUEST, 0)
    with pytest.raises(IntegrityError):
        await mode.open("bkt", "k", replace(info, **change), SSEC_REQUEST)


async def test_ssec_create_refuses_a_missing_or_short_key_and_a_short_secret() -> None:
    for request in (SseRequest("SSE-C"), SseRequest("SSE-C", customer_key=b"k" * 16)):
        with pytest.raises(ValueError):
            await SseC(GATEWAY_SECRET).create("b", "k", request, 0)
    with pytest.raises(ValueError):
        SseC(b"short")


async def test_modes_refuse_requests_of_another_mode(provider) -> None:
    with pytest.raises(ValueError):
        await SseKms(provider).create("b", "k", SSEC_REQUEST, 0)
    with pytest.raises(ValueError):
        await SseC(GATEWAY_SECRET).create("b", "k", KMS_REQUEST, 0)


# --- a decryptor written from docs/FORMAT.md alone ---------------------------------------------

def _hkdf(ikm: bytes, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, info).derive(ikm)


def _unb64u(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


async def independent_decrypt(headers: Mapping[str, str], body: bytes, bucket: str, key: str,
                              provider: LocalKeyProvider | None = None, customer_key: bytes | None = None) -> bytes:
    """Follows section 2 'Decrypting' of docs/FORMAT.md using only cryptography primitives."""
    h = {name.lower(): value for name, value in headers.items()}
    assert h["x-amz-meta-x-gw-v"] == "1"
    mode = h["x-amz-meta-x-gw-m"]
    params, sealed, size = _unb64u(h["x-amz-meta-x-gw-p"]), _unb64u(h["x-amz-meta-x-gw-k"]), int(h["x-amz-meta-x-gw-s"])
    path = f"{bucket}/{key}".encode()
    if mode == "SSE-C":
        salt = _unb64u(h["x-amz-meta-x-gw-cs"])
        kcv = hmac.new(GATEWAY_SECRET, b"s3gw/v1/ssec-check" + salt + customer_key, hashlib.sha256).digest()
        assert hmac.compare_digest(kcv, _unb64u(h["x-amz-meta-x-gw-cc"]))
        kek = _hkdf(customer_key, salt, b"s3gw/v1/ssec/" + path)
    else:
        context = json.loads(_unb64u(h["x-amz-meta-x-gw-c"])) if "x-amz-meta-x-gw-c" in h else {}
        context["aws:s3:arn"] = f"arn:aws:s3:::{bucket}/{key}"
        data_key = await provider.decrypt_data_key(_unb64u(h["x-amz-meta-x-gw-d"]), context)
        assert data_key.key_arn == h["x-amz-meta-x-gw-a"]
        kek = _hkdf(data_key.plaintext, None, b"s3gw/v1/kms/" + path)
    object_key = AESGCM(kek).decrypt(sealed[:12], sealed[12:], b"s3gw/v1/object-key/" + mode.encode())
    segment_key = AESGCM(_hkdf(object_key, params[:16], b"s3gw/v1/segment" + struct.pack(">I", 0)))
    count = max(1, -(-size // 65536))
    assert len(body) == size + 16 * count
    plaintext = bytearray()
    for i in range(count):
        nonce = params[16:23] + struct.pack(">I", i) + (b"\x01" if i == count - 1 else b"\x00")
        plaintext += segment_key.decrypt(nonce, body[i * 65552:(i + 1) * 65552], b"")
    return bytes(plaintext)


@pytest.mark.parametrize("size", [0, 1, 2 * SEGMENT_SIZE, 2 * SEGMENT_SIZE + 5])
async def test_documented_format_decrypts_kms_objects_independently(provider, size: int) -> None:
    plaintext = os.urandom(size)
    object_key, info = await SseKms(provider).create("bkt", "a/ü b", KMS_REQUEST, size)
    body = encrypt_body(object_key, info, plaintext)
    assert await independent_decrypt(metadata.encode(info), body, "bkt", "a/ü b", provider=provider) == plaintext


async def test_documented_format_decrypts_sse_s3_and_sse_c_objects_independently(provider) -> None:
    plaintext = os.urandom(SEGMENT_SIZE + 77)
    object_key, info = await SseKms(provider).create("bkt", "k", SseRequest("AES256"), len(plaintext))
    headers = metadata.encode(info)
    assert await independent_decrypt(headers, encrypt_body(object_key, info, plaintext), "bkt", "k",
                                      provider=provider) == plaintext
    object_key, info = await SseC(GATEWAY_SECRET).create("bkt", "k", SSEC_REQUEST, len(plaintext))
    headers = metadata.encode(info)
    assert await independent_decrypt(headers, encrypt_body(object_key, info, plaintext), "bkt", "k",
                                      customer_key=CUSTOMER_KEY) == plaintext


async def test_kms_object_metadata_stays_far_below_the_2kb_limit(provider) -> None:
    _, info = await SseKms(provider).create("bkt", "k", KMS_REQUEST, 123456789)
    headers = metadata.encode(info)
    total = sum(len(name) + len(value) for name, value in headers.items())
    assert total < 700, total


async def test_sse_s3_honours_the_key_the_caller_picked_and_ignores_a_context(provider) -> None:
    mode = SseKms(provider)
    object_key, info = await mode.create("bkt", "k", SseRequest("AES256", OTHER_ARN, {"x": "y"}), 0)
    assert (info.mode, info.kms_key_arn, dict(info.kms_context)) == ("AES256", OTHER_ARN, {})
    assert await mode.open("bkt", "k", info, None) == object_key
