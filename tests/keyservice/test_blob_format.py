"""The ciphertext blob is what docs/KMS-BLOB.md says: an independent decryptor can open it."""

import json
import os
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyservice import blob
from keyservice.errors import KMSError
from keyservice.service import CallContext, KeyService

ACCOUNT = "111122223333"
CTX = CallContext(f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT, "req")


def documented_decrypt(data: bytes, material: bytes, context: dict | None) -> bytes:
    aad = data[:33] + (json.dumps(context, sort_keys=True, separators=(",", ":"),
                                  ensure_ascii=False).encode() if context else b"")
    return AESGCM(material).decrypt(data[33:45], data[45:], aad)


async def test_blob_layout_matches_the_documentation(tmp_path):
    svc = KeyService.open(tmp_path, os.urandom(32))
    key = (await svc.handle("CreateKey", {}, CTX))["KeyMetadata"]["KeyId"]
    context = {"zeta": "ω", "alpha": "1"}
    data = (await svc.handle("Encrypt", {"KeyId": key, "Plaintext": b"documented",
                                         "EncryptionContext": context}, CTX))["CiphertextBlob"]
    [row] = svc.store.backing_keys(key)
    await svc.close()
    assert data[0] == 1 and str(uuid.UUID(bytes=data[1:17])) == key and data[17:33].hex() == row.backing_id
    assert len(data) == 45 + len(b"documented") + 16
    assert documented_decrypt(data, row.material, context) == b"documented"


def test_canonical_context_ignores_order_and_empty_is_empty():
    assert blob.canonical_context({"b": "2", "a": "1"}) == b'{"a":"1","b":"2"}'
    assert blob.canonical_context({}) == blob.canonical_context(None) == b""


# 0x01 and 0x02 (a custom key store's token) are the versions; 0x03 is none of them
@pytest.mark.parametrize("data", [b"", b"\x01" * 60, b"\x04" + b"\x00" * 80, "text"])
def test_malformed_headers_are_invalid_ciphertext(data):
    with pytest.raises(KMSError) as info:
        blob.parse_header(data)
    assert info.value.type == "InvalidCiphertextException"
