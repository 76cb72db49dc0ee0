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

from gateway.datakeys import GATEWAY, CacheLimits
from gateway.crypto import metadata
from gateway.crypto.metadata import EncryptionInfo, SingleStream
from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.sse import (
    CustomerKey,
    CustomerKeyRequest,
    CustomerKeySeal,
    DataKey,
    KmsRequest,
    KmsSeal,
    MissingCustomerKey,
    ObjectKeys,
    SseC,
    SseKms,
    SseMode,
    WrongCustomerKey,
    s3_context,
)
from gateway.crypto.stream import SEGMENT_SIZE, IntegrityError, StreamDecryptor, StreamEncryptor, StreamParams

DEFAULT_ARN = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000001"
OTHER_ARN = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000002"
GATEWAY_SECRET = b"gateway-secret-for-tests-0123456"
CUSTOMER_KEY_RAW = bytes(range(32))
CUSTOMER_KEY = CustomerKey(CUSTOMER_KEY_RAW)


class InvalidCiphertext(Exception):
    """What this provider raises where AWS KMS answers InvalidCiphertextException."""


class LocalKeyProvider:
    """Wraps data keys with AES-GCM; the blob carries the key ARN, the AAD is ARN + canonical context."""

    def __init__(self) -> None:
        self._master = AESGCM(os.urandom(32))
        self.calls: list[str] = []

    async def generate_data_key(self, key_id: str | None, context: Mapping[str, str], *, requester=None) -> DataKey:
        self.calls.append("GenerateDataKey")
        arn = key_id or DEFAULT_ARN
        plaintext, nonce = os.urandom(32), os.urandom(12)
        sealed = self._master.encrypt(nonce, plaintext, self._aad(arn, context))
        return DataKey(plaintext, arn.encode() + b"\n" + nonce + sealed, arn)

    async def decrypt_data_key(self, ciphertext: bytes, context: Mapping[str, str], *, requester=None) -> DataKey:
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


def encrypt_body(object_key: ObjectKey, plaintext: bytes) -> tuple[StreamParams, bytes]:
    """The stream params the encryptor made (what the metadata records) and the stored body."""
    encryptor = StreamEncryptor(object_key)
    return encryptor.params, bytes(encryptor.update(plaintext) + encryptor.finalize())


def decrypt_body(object_key: ObjectKey, params: StreamParams, size: int, body: bytes) -> bytes:
    decryptor = StreamDecryptor(object_key, params, size)
    return bytes(decryptor.update(body) + decryptor.finalize())


def stored_info(seal, object_key: ObjectKey, plaintext: bytes) -> tuple[EncryptionInfo, bytes]:
    """A single-stream object as the gateway stores it: its metadata and body."""
    params, body = encrypt_body(object_key, plaintext)
    return EncryptionInfo(seal, SingleStream(params, len(plaintext))), body


KMS_REQUEST = KmsRequest(SseMode.KMS, key_id=OTHER_ARN, context={"project": "blue"})


# --- SSE-KMS / SSE-S3 --------------------------------------------------------------------------

async def test_kms_object_key_round_trips_with_one_kms_call_each_way(provider) -> None:
    mode = SseKms(provider)
    object_key, seal = await mode.create("bkt", "dir/obj", KMS_REQUEST, GATEWAY)
    assert provider.calls == ["GenerateDataKey"]
    assert isinstance(object_key, ObjectKey) and isinstance(seal, KmsSeal)
    assert (seal.mode, seal.kms_key_arn, dict(seal.kms_context)) == (SseMode.KMS, OTHER_ARN, {"project": "blue"})
    assert await mode.open("bkt", "dir/obj", seal, GATEWAY) == object_key
    assert provider.calls == ["GenerateDataKey", "Decrypt"]


async def test_sse_s3_uses_the_default_key_and_keeps_its_mode_name(provider) -> None:
    mode = SseKms(provider)
    object_key, seal = await mode.create("bkt", "k", KmsRequest(SseMode.S3), GATEWAY)
    assert (seal.mode, seal.kms_key_arn, dict(seal.kms_context)) == (SseMode.S3, DEFAULT_ARN, {})
    info, _ = stored_info(seal, object_key, b"")
    assert metadata.encode(info)[metadata.MODE] == "AES256"
    assert await mode.open("bkt", "k", seal, GATEWAY) == object_key


async def test_reseal_keeps_the_object_key_and_context_under_the_target_cmk_with_one_kms_call(provider) -> None:
    mode = SseKms(provider)
    object_key, seal = await mode.create("bkt", "dir/obj", KMS_REQUEST, GATEWAY)
    params, body = encrypt_body(object_key, b"stays encrypted as it was")
    provider.calls.clear()
    resealed = await mode.reseal("bkt", "dir/obj", object_key, seal, DEFAULT_ARN, GATEWAY)
    assert provider.calls == ["GenerateDataKey"]
    assert (resealed.mode, resealed.kms_key_arn, dict(resealed.kms_context)) == (SseMode.KMS, DEFAULT_ARN,
                                                                                   {"project": "blue"})
    assert resealed.wrapped_data_key != seal.wrapped_data_key
    reopened = await mode.open("bkt", "dir/obj", resealed, GATEWAY)
    assert decrypt_body(reopened, params, 25, body) == b"stays encrypted as it was"


async def test_a_resealed_sse_s3_seal_stays_sse_s3(provider) -> None:
    mode = SseKms(provider)
    object_key, seal = await mode.create("bkt", "k", KmsRequest(SseMode.S3), GATEWAY)
    resealed = await mode.reseal("bkt", "k", object_key, seal, OTHER_ARN, GATEWAY)
    assert (resealed.mode, resealed.kms_key_arn) == (SseMode.S3, OTHER_ARN)
    assert await mode.open("bkt", "k", resealed, GATEWAY) == object_key


async def test_each_object_gets_a_fresh_object_key_and_seal(provider) -> None:
    mode = SseKms(provider)
    first_key, first = await mode.create("bkt", "k", KMS_REQUEST, GATEWAY)
    second_key, second = await mode.create("bkt", "k", KMS_REQUEST, GATEWAY)
    assert first_key != second_key
    assert first.sealed_key[:12] != second.sealed_key[:12]
    assert first.wrapped_data_key != second.wrapped_data_key
    assert StreamEncryptor(first_key).params != StreamEncryptor(second_key).params


def test_s3_context_adds_the_object_arn_and_refuses_a_client_override() -> None:
    assert s3_context("b", "a/k", {"x": "1"}) == {"x": "1", "aws:s3:arn": "arn:aws:s3:::b/a/k"}
    with pytest.raises(ValueError):
        s3_context("b", "k", {"aws:s3:arn": "arn:aws:s3:::other/k"})


def test_a_kms_request_refuses_sse_c_and_a_client_context_that_sets_the_s3_arn() -> None:
    with pytest.raises(ValueError):
        KmsRequest(SseMode.CUSTOMER)
    for mode in (SseMode.KMS, SseMode.S3):
        with pytest.raises(ValueError):
            KmsRequest(mode, None, {"aws:s3:arn": "arn:aws:s3:::other/k"})
    assert KmsRequest() == KmsRequest(SseMode.KMS, None, {})


async def test_a_kms_request_context_cannot_be_changed_after_its_check(provider) -> None:
    request = KmsRequest(SseMode.KMS, None, {})
    with pytest.raises(TypeError):
        request.context["aws:s3:arn"] = "x"  # type: ignore[index]
    with pytest.raises(ValueError):
        KmsRequest(SseMode.KMS, None, {"aws:s3:arn": "x"})
    assert provider.calls == []


def test_a_kms_seal_cannot_claim_sse_c() -> None:
    with pytest.raises(ValueError):
        KmsSeal(SseMode.CUSTOMER, bytes(60), "arn", b"w")


@pytest.mark.parametrize("bucket, key", [("other", "dir/obj"), ("bkt", "dir/obj2"), ("bkt", "dir")])
async def test_kms_object_copied_to_another_bucket_or_key_is_refused_by_kms(provider, bucket, key) -> None:
    mode = SseKms(provider)
    _, seal = await mode.create("bkt", "dir/obj", KMS_REQUEST, GATEWAY)
    with pytest.raises(InvalidCiphertext):
        await mode.open(bucket, key, seal, GATEWAY)


async def test_kms_altered_client_context_is_refused_by_kms(provider) -> None:
    mode = SseKms(provider)
    _, seal = await mode.create("bkt", "k", KMS_REQUEST, GATEWAY)
    with pytest.raises(InvalidCiphertext):
        await mode.open("bkt", "k", replace(seal, kms_context={"project": "red"}), GATEWAY)


@pytest.mark.parametrize("change", [
    {"kms_key_arn": DEFAULT_ARN},
    {"mode": SseMode.S3},
    {"kms_context": {"aws:s3:arn": "arn:aws:s3:::bkt/k"}},
])
async def test_kms_altered_metadata_fields_raise_integrity_error(provider, change) -> None:
    mode = SseKms(provider)
    _, seal = await mode.create("bkt", "k", KmsRequest(SseMode.KMS, key_id=OTHER_ARN), GATEWAY)
    with pytest.raises(IntegrityError):
        await mode.open("bkt", "k", replace(seal, **change), GATEWAY)


@pytest.mark.parametrize("version", ["3", "0", "2"])
async def test_an_unknown_format_version_is_refused_before_any_key_use(provider, version: str) -> None:
    """The version lives in EncryptionInfo now, not in the seal: metadata.decode refuses it, so no
    seal of an unknown version ever reaches a KMS call or an unseal. Version 2 exists, but only for
    seals under a Bucket Key: a seal without one relabelled 2 is refused too."""
    keys = ObjectKeys(provider, GATEWAY_SECRET)
    for request in (KMS_REQUEST, CustomerKeyRequest(CUSTOMER_KEY)):
        object_key, seal = await keys.create("bkt", "k", request, GATEWAY)
        headers = metadata.encode(stored_info(seal, object_key, b"x")[0])
        headers[metadata.VERSION] = version
        with pytest.raises(IntegrityError):
            metadata.decode(headers)
        with pytest.raises(ValueError):  # nor can one be written
            replace(stored_info(seal, object_key, b"x")[0], version=int(version) or 4)


@pytest.mark.parametrize("index", [0, 11, 12, 43, 59])
async def test_kms_flipped_bit_in_sealed_key_raises_integrity_error(provider, index: int) -> None:
    mode = SseKms(provider)
    _, seal = await mode.create("bkt", "k", KMS_REQUEST, GATEWAY)
    sealed = bytearray(seal.sealed_key)
    sealed[index] ^= 1
    with pytest.raises(IntegrityError):
        await mode.open("bkt", "k", replace(seal, sealed_key=bytes(sealed)), GATEWAY)


async def test_metadata_swapped_between_two_versions_of_an_object_fails_the_stream(provider) -> None:
    mode = SseKms(provider)
    key_a, seal_a = await mode.create("bkt", "k", KMS_REQUEST, GATEWAY)
    key_b, seal_b = await mode.create("bkt", "k", KMS_REQUEST, GATEWAY)
    size = SEGMENT_SIZE + 1
    params_a, body_a = encrypt_body(key_a, os.urandom(size))
    params_b, _ = encrypt_body(key_b, os.urandom(size))
    for seal, params in ((seal_b, params_b),
                         (replace(seal_a, sealed_key=seal_b.sealed_key, wrapped_data_key=seal_b.wrapped_data_key),
                          params_a),
                         (seal_a, params_b)):
        opened = await mode.open("bkt", "k", seal, GATEWAY)
        with pytest.raises(IntegrityError):
            decrypt_body(opened, params, size, body_a)


# --- SSE-C -------------------------------------------------------------------------------------

def test_ssec_object_key_round_trips_and_never_stores_the_customer_key() -> None:
    mode = SseC(GATEWAY_SECRET)
    object_key, seal = mode.create("bkt", "k", CUSTOMER_KEY)
    assert isinstance(seal, CustomerKeySeal)
    assert object_key != ObjectKey(CUSTOMER_KEY_RAW)
    assert mode.open("bkt", "k", seal, CUSTOMER_KEY) == object_key
    info, _ = stored_info(seal, object_key, b"12345")
    stored = "".join(metadata.encode(info).values())
    for form in (base64.b64encode(CUSTOMER_KEY_RAW), base64.urlsafe_b64encode(CUSTOMER_KEY_RAW).rstrip(b"="),
                 CUSTOMER_KEY_RAW.hex().encode()):
        assert form.decode() not in stored


def test_ssec_wrong_key_is_refused_before_any_unseal() -> None:
    mode = SseC(GATEWAY_SECRET)
    _, seal = mode.create("bkt", "k", CUSTOMER_KEY)
    garbage_seal = replace(seal, sealed_key=b"\x00" * 60)
    for wrong in (os.urandom(32), CUSTOMER_KEY_RAW[:-1] + b"\x00"):
        with pytest.raises(WrongCustomerKey) as caught:
            mode.open("bkt", "k", garbage_seal, CustomerKey(wrong))
        assert type(caught.value) is WrongCustomerKey
    with pytest.raises(ValueError):  # a 16-byte key never becomes a CustomerKey, so never reaches open
        CustomerKey(CUSTOMER_KEY_RAW[:16])


async def test_ssec_object_read_without_a_key_raises_missing_customer_key(provider) -> None:
    mode = SseC(GATEWAY_SECRET)
    _, seal = mode.create("bkt", "k", CUSTOMER_KEY)
    with pytest.raises(MissingCustomerKey):
        mode.open("bkt", "k", seal, None)
    with pytest.raises(MissingCustomerKey):
        await ObjectKeys(provider, GATEWAY_SECRET).open("bkt", "k", seal, None, GATEWAY)
    assert provider.calls == []


def test_ssec_open_tells_a_missing_key_from_a_wrong_one() -> None:
    mode = SseC(GATEWAY_SECRET)
    object_key, seal = mode.create("bkt", "k", CUSTOMER_KEY)
    with pytest.raises(MissingCustomerKey):
        mode.open("bkt", "k", seal, None)
    with pytest.raises(WrongCustomerKey) as caught:
        mode.open("bkt", "k", seal, CustomerKey(os.urandom(32)))
    assert not isinstance(caught.value, MissingCustomerKey)
    assert mode.open("bkt", "k", seal, CustomerKey(CUSTOMER_KEY_RAW)) == object_key


def test_ssec_check_value_depends_on_the_gateway_secret_and_salt() -> None:
    _, seal = SseC(GATEWAY_SECRET).create("bkt", "k", CUSTOMER_KEY)
    with pytest.raises(WrongCustomerKey):
        SseC(b"another-gateway-secret-012345678").open("bkt", "k", seal, CUSTOMER_KEY)
    with pytest.raises(WrongCustomerKey):
        SseC(GATEWAY_SECRET).open("bkt", "k", replace(seal, salt=os.urandom(32)), CUSTOMER_KEY)


@pytest.mark.parametrize("bucket, key", [("other", "k"), ("bkt", "k2")])
def test_ssec_object_copied_to_another_bucket_or_key_raises_integrity_error(bucket, key) -> None:
    mode = SseC(GATEWAY_SECRET)
    _, seal = mode.create("bkt", "k", CUSTOMER_KEY)
    with pytest.raises(IntegrityError):
        mode.open(bucket, key, seal, CUSTOMER_KEY)


@pytest.mark.parametrize("change", [{"sealed_key": os.urandom(60)}, {"sealed_key": b"short"}])
def test_ssec_altered_metadata_fields_raise_integrity_error(change) -> None:
    mode = SseC(GATEWAY_SECRET)
    _, seal = mode.create("bkt", "k", CUSTOMER_KEY)
    with pytest.raises(IntegrityError):
        mode.open("bkt", "k", replace(seal, **change), CUSTOMER_KEY)


async def test_ssec_object_relabelled_as_kms_raises_integrity_error(provider) -> None:
    """The mode of an SSE-C object altered to aws:kms: as bare headers it lacks the KMS fields; with a
    real KMS data key of the same bucket/key planted next to its sealed key, the seal's mode AAD (and
    KEK) still refuse it."""
    object_key, seal = SseC(GATEWAY_SECRET).create("bkt", "k", CUSTOMER_KEY)
    headers = metadata.encode(stored_info(seal, object_key, b"x")[0])
    headers[metadata.MODE] = "aws:kms"
    with pytest.raises(IntegrityError):
        metadata.decode(headers)
    _, kms_seal = await SseKms(provider).create("bkt", "k", KmsRequest(SseMode.KMS), GATEWAY)
    for mode in (SseMode.KMS, SseMode.S3):
        relabelled = replace(kms_seal, mode=mode, sealed_key=seal.sealed_key)
        with pytest.raises(IntegrityError):
            await SseKms(provider).open("bkt", "k", relabelled, GATEWAY)


def test_ssec_refuses_a_short_key_and_a_short_secret() -> None:
    for raw in (b"", b"k" * 16, b"k" * 31, b"k" * 33):
        with pytest.raises(ValueError):
            CustomerKey(raw)
    with pytest.raises(ValueError):
        SseC(b"short")


async def test_ssec_create_refuses_a_missing_key() -> None:
    """No SSE-C object without a customer key (the old API's ValueError is now a type error: there is
    no CustomerKey to pass)."""
    with pytest.raises((TypeError, AttributeError)):
        SseC(GATEWAY_SECRET).create("b", "k", None)
    with pytest.raises((TypeError, AttributeError)):
        await ObjectKeys(LocalKeyProvider(), GATEWAY_SECRET).create("b", "k", CustomerKeyRequest(None), GATEWAY)


async def test_modes_refuse_requests_and_seals_of_another_mode(provider) -> None:
    with pytest.raises(ValueError):
        KmsRequest(SseMode.CUSTOMER)
    with pytest.raises((TypeError, AttributeError)):
        await SseKms(provider).create("b", "k", CustomerKeyRequest(CUSTOMER_KEY), GATEWAY)
    with pytest.raises((TypeError, AttributeError)):
        SseC(GATEWAY_SECRET).create("b", "k", KMS_REQUEST)
    _, kms_seal = await SseKms(provider).create("b", "k", KMS_REQUEST, GATEWAY)
    _, ssec_seal = SseC(GATEWAY_SECRET).create("b", "k", CUSTOMER_KEY)
    with pytest.raises((TypeError, AttributeError)):
        SseC(GATEWAY_SECRET).open("b", "k", kms_seal, CUSTOMER_KEY)
    with pytest.raises((TypeError, AttributeError)):
        await SseKms(provider).open("b", "k", ssec_seal, GATEWAY)


# --- ObjectKeys: one pair of calls for every mode -----------------------------------------------

async def test_object_keys_dispatch_requests_and_seals_by_their_type(provider) -> None:
    keys = ObjectKeys(provider, GATEWAY_SECRET)
    kms_key, kms_seal = await keys.create("bkt", "k", KMS_REQUEST, GATEWAY)
    assert isinstance(kms_seal, KmsSeal) and kms_seal.mode is SseMode.KMS
    s3_key, s3_seal = await keys.create("bkt", "k", KmsRequest(SseMode.S3), GATEWAY)
    assert isinstance(s3_seal, KmsSeal) and s3_seal.mode is SseMode.S3
    assert provider.calls == ["GenerateDataKey"] * 2
    ssec_key, ssec_seal = await keys.create("bkt", "k", CustomerKeyRequest(CUSTOMER_KEY), GATEWAY)
    assert isinstance(ssec_seal, CustomerKeySeal) and ssec_seal.mode is SseMode.CUSTOMER
    assert provider.calls == ["GenerateDataKey"] * 2  # SSE-C makes no KMS call

    assert await keys.open("bkt", "k", kms_seal, None, GATEWAY) == kms_key
    assert await keys.open("bkt", "k", s3_seal, None, GATEWAY) == s3_key
    assert provider.calls == ["GenerateDataKey"] * 2 + ["Decrypt"] * 2
    assert await keys.open("bkt", "k", ssec_seal, CUSTOMER_KEY, GATEWAY) == ssec_key
    assert provider.calls == ["GenerateDataKey"] * 2 + ["Decrypt"] * 2
    with pytest.raises(MissingCustomerKey):
        await keys.open("bkt", "k", ssec_seal, None, GATEWAY)
    with pytest.raises(WrongCustomerKey):
        await keys.open("bkt", "k", ssec_seal, CustomerKey(os.urandom(32)), GATEWAY)
    # what each mode's own type opens, ObjectKeys opens the same
    assert SseC(GATEWAY_SECRET).open("bkt", "k", ssec_seal, CUSTOMER_KEY) == ssec_key
    assert await SseKms(provider).open("bkt", "k", kms_seal, GATEWAY) == kms_key


async def test_object_keys_round_trip_through_the_stored_metadata(provider) -> None:
    keys = ObjectKeys(provider, GATEWAY_SECRET)
    for request, customer_key in ((KMS_REQUEST, None), (KmsRequest(SseMode.S3), None),
                                  (CustomerKeyRequest(CUSTOMER_KEY), CUSTOMER_KEY)):
        plaintext = os.urandom(100)
        object_key, seal = await keys.create("bkt", "k", request, GATEWAY)
        info, body = stored_info(seal, object_key, plaintext)
        read = metadata.decode(metadata.encode(info))
        assert read == info and type(read.seal) is type(seal)
        opened = await keys.open("bkt", "k", read.seal, customer_key, GATEWAY)
        assert decrypt_body(opened, read.layout.params, read.layout.plaintext_size, body) == plaintext


# --- a decryptor written from docs/FORMAT.md alone ---------------------------------------------

def _hkdf(ikm: bytes, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, info).derive(ikm)


def _unb64u(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


async def independent_decrypt(headers: Mapping[str, str], body: bytes, bucket: str, key: str,
                              provider: LocalKeyProvider | None = None, customer_key: bytes | None = None) -> bytes:
    """Follows section 2 'Decrypting' of docs/FORMAT.md using only cryptography primitives."""
    h = {name.lower(): value for name, value in headers.items()}
    version = h["x-amz-meta-x-gw-v"]
    assert version in ("1", "2") and (version == "2") == ("x-amz-meta-x-gw-b" in h)
    mode = h["x-amz-meta-x-gw-m"]
    aad = b"s3gw/v1/object-key/" + mode.encode()
    params, sealed, size = _unb64u(h["x-amz-meta-x-gw-p"]), _unb64u(h["x-amz-meta-x-gw-k"]), int(h["x-amz-meta-x-gw-s"])
    path = f"{bucket}/{key}".encode()
    if mode == "SSE-C":
        salt = _unb64u(h["x-amz-meta-x-gw-cs"])
        kcv = hmac.new(GATEWAY_SECRET, b"s3gw/v1/ssec-check" + salt + customer_key, hashlib.sha256).digest()
        assert hmac.compare_digest(kcv, _unb64u(h["x-amz-meta-x-gw-cc"]))
        kek = _hkdf(customer_key, salt, b"s3gw/v1/ssec/" + path)
    else:
        context = json.loads(_unb64u(h["x-amz-meta-x-gw-c"])) if "x-amz-meta-x-gw-c" in h else {}
        context["aws:s3:arn"] = f"arn:aws:s3:::{bucket}/{key}" if version == "1" else f"arn:aws:s3:::{bucket}"
        data_key = await provider.decrypt_data_key(_unb64u(h["x-amz-meta-x-gw-d"]), context)
        assert data_key.key_arn == h["x-amz-meta-x-gw-a"]
        if version == "1":
            kek = _hkdf(data_key.plaintext, None, b"s3gw/v1/kms/" + path)
        else:
            kek = _hkdf(data_key.plaintext, _unb64u(h["x-amz-meta-x-gw-b"]), b"s3gw/v2/kms-bucket-key/" + path)
            aad = b"s3gw/v2/object-key/" + mode.encode() + b"/bucket-key"
    object_key = AESGCM(kek).decrypt(sealed[:12], sealed[12:], aad)
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
    object_key, seal = await SseKms(provider).create("bkt", "a/ü b", KMS_REQUEST, GATEWAY)
    info, body = stored_info(seal, object_key, plaintext)
    assert await independent_decrypt(metadata.encode(info), body, "bkt", "a/ü b", provider=provider) == plaintext


async def test_documented_format_decrypts_sse_s3_and_sse_c_objects_independently(provider) -> None:
    plaintext = os.urandom(SEGMENT_SIZE + 77)
    object_key, seal = await SseKms(provider).create("bkt", "k", KmsRequest(SseMode.S3), GATEWAY)
    info, body = stored_info(seal, object_key, plaintext)
    assert await independent_decrypt(metadata.encode(info), body, "bkt", "k", provider=provider) == plaintext
    object_key, seal = SseC(GATEWAY_SECRET).create("bkt", "k", CUSTOMER_KEY)
    info, body = stored_info(seal, object_key, plaintext)
    assert await independent_decrypt(metadata.encode(info), body, "bkt", "k",
                                      customer_key=CUSTOMER_KEY_RAW) == plaintext


async def test_kms_object_metadata_stays_far_below_the_2kb_limit(provider) -> None:
    _, seal = await SseKms(provider).create("bkt", "k", KMS_REQUEST, GATEWAY)
    headers = metadata.encode(EncryptionInfo(seal, SingleStream(StreamParams.new(), 123456789)))
    total = sum(len(name) + len(value) for name, value in headers.items())
    assert total < 700, total


async def test_sse_s3_honours_the_key_the_caller_picked_and_ignores_a_context(provider) -> None:
    mode = SseKms(provider)
    object_key, seal = await mode.create("bkt", "k", KmsRequest(SseMode.S3, OTHER_ARN, {"x": "y"}), GATEWAY)
    assert (seal.mode, seal.kms_key_arn, dict(seal.kms_context)) == (SseMode.S3, OTHER_ARN, {})
    assert await mode.open("bkt", "k", seal, GATEWAY) == object_key


def test_an_sse_c_reseal_keeps_the_object_key_under_the_new_customer_key_only() -> None:
    mode = SseC(GATEWAY_SECRET)
    new_key = CustomerKey(bytes(range(32, 64)))
    object_key, seal = mode.create("bkt", "k", CUSTOMER_KEY)
    resealed = mode.reseal("bkt", "k", object_key, new_key)
    assert resealed.salt != seal.salt
    assert mode.open("bkt", "k", resealed, new_key) == object_key
    with pytest.raises(WrongCustomerKey):
        mode.open("bkt", "k", resealed, CUSTOMER_KEY)


# --- Bucket Keys (format version 2) ------------------------------------------------------------

BUCKET_KEY_REQUEST = replace(KMS_REQUEST, bucket_key=True)


async def test_objects_under_a_bucket_key_share_one_generate_data_key_and_each_has_its_own_kek(provider) -> None:
    mode = SseKms(provider, CacheLimits(max_age=60))
    made = [await mode.create("bkt", f"k{i}", BUCKET_KEY_REQUEST, GATEWAY) for i in range(20)]
    assert provider.calls == ["GenerateDataKey"]
    seals = [seal for _, seal in made]
    assert len({seal.wrapped_data_key for seal in seals}) == 1
    assert len({seal.bucket_key_salt for seal in seals}) == 20
    for i, (object_key, seal) in enumerate(made):
        assert await mode.open("bkt", f"k{i}", seal, GATEWAY) == object_key
    assert provider.calls == ["GenerateDataKey", "Decrypt"]  # the bucket key's one unwrap, cached


async def test_a_bucket_key_object_is_version_2_and_decrypts_from_the_documented_format(provider) -> None:
    plaintext = os.urandom(SEGMENT_SIZE + 3)
    object_key, seal = await SseKms(provider).create("bkt", "a/ü b", BUCKET_KEY_REQUEST, GATEWAY)
    info, body = stored_info(seal, object_key, plaintext)
    headers = metadata.encode(info)
    assert (headers["x-amz-meta-x-gw-v"], info.version, info.bucket_key) == ("2", 2, True)
    assert len(_unb64u(headers["x-amz-meta-x-gw-b"])) == 16
    assert metadata.decode(headers) == info
    assert await independent_decrypt(headers, body, "bkt", "a/ü b", provider=provider) == plaintext


async def test_sse_s3_ignores_the_bucket_key_flag_as_s3_does(provider) -> None:
    _, seal = await SseKms(provider).create("bkt", "k", KmsRequest(SseMode.S3, bucket_key=True), GATEWAY)
    assert not seal.bucket_key
    assert metadata.encode(EncryptionInfo(seal, SingleStream(StreamParams(b"s" * 16, b"p" * 7), 0)))[
        metadata.VERSION] == "1"


@pytest.mark.parametrize("where", [("bkt", "other-key"), ("other-bkt", "k")])
async def test_a_bucket_key_object_moved_elsewhere_does_not_open(provider, where: tuple[str, str]) -> None:
    mode = SseKms(provider)
    _, seal = await mode.create("bkt", "k", BUCKET_KEY_REQUEST, GATEWAY)
    with pytest.raises((IntegrityError, InvalidCiphertext)):
        await mode.open(*where, seal, GATEWAY)


async def test_a_bucket_key_seal_stripped_of_its_salt_or_given_another_does_not_open(provider) -> None:
    mode = SseKms(provider)
    _, seal = await mode.create("bkt", "k", BUCKET_KEY_REQUEST, GATEWAY)
    with pytest.raises((IntegrityError, InvalidCiphertext)):
        await mode.open("bkt", "k", replace(seal, bucket_key_salt=None), GATEWAY)
    with pytest.raises(IntegrityError):
        await mode.open("bkt", "k", replace(seal, bucket_key_salt=os.urandom(16)), GATEWAY)


async def test_bucket_key_metadata_that_does_not_fit_its_version_is_refused(provider) -> None:
    object_key, seal = await SseKms(provider).create("bkt", "k", BUCKET_KEY_REQUEST, GATEWAY)
    headers = metadata.encode(stored_info(seal, object_key, b"x")[0])
    for change in ({metadata.VERSION: "1"}, {metadata.BUCKET_KEY_SALT: "c2FsdA"}):
        with pytest.raises(IntegrityError):
            metadata.decode({**headers, **change})
    without_salt = {k: v for k, v in headers.items() if k != metadata.BUCKET_KEY_SALT}
    with pytest.raises(IntegrityError):
        metadata.decode(without_salt)  # version 2 without its salt
    ssec_key, ssec_seal = SseC(GATEWAY_SECRET).create("bkt", "k", CUSTOMER_KEY)
    ssec = metadata.encode(stored_info(ssec_seal, ssec_key, b"x")[0])
    with pytest.raises(IntegrityError):
        metadata.decode({**ssec, metadata.BUCKET_KEY_SALT: headers[metadata.BUCKET_KEY_SALT]})


async def test_a_rewrap_gives_a_bucket_key_object_a_data_key_of_its_own(provider) -> None:
    mode = SseKms(provider)
    object_key, seal = await mode.create("bkt", "k", BUCKET_KEY_REQUEST, GATEWAY)
    resealed = await mode.reseal("bkt", "k", object_key, seal, DEFAULT_ARN, GATEWAY)
    assert not resealed.bucket_key and resealed.kms_context == seal.kms_context
    assert await mode.open("bkt", "k", resealed, GATEWAY) == object_key
