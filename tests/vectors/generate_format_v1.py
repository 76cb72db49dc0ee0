"""Make the format-v1 known-answer vectors in ``format_v1.json`` (run once; the checked-in file is frozen).

The vectors are objects as the gateway stores them upstream (reserved metadata, stored body, manifest),
written by the code of the day they were made, with every key fixed and published in the file, so
``tests/gateway/test_format_v1_vectors.py`` proves that later code still reads what earlier code wrote
(docs/FORMAT.md is the contract). Regenerating replaces the frozen objects and defeats that purpose:
add new vectors next to the old ones instead.

    python tests/vectors/generate_format_v1.py > tests/vectors/format_v1.json
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Mapping

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.aead import Aead  # noqa: E402
from gateway.datakeys import GATEWAY
from gateway.crypto import metadata  # noqa: E402
from gateway.crypto.metadata import EncryptionInfo, Multipart, SingleStream  # noqa: E402
from gateway.crypto.multipart import EncryptedPart, Manifest, ManifestPart, seal_manifest  # noqa: E402
from gateway.crypto.sse import (CustomerKey, CustomerKeyRequest, DataKey, KmsRequest, ObjectKeys, SseMode,  # noqa: E402
                                SseRequest)
from gateway.crypto.stream import StreamEncryptor, encrypt_stream  # noqa: E402
from keyservice import blob  # noqa: E402

BUCKET = "vectors"
GATEWAY_SECRET = bytes(range(32))
CUSTOMER_KEY = hashlib.sha256(b"s3gw format v1 vector customer key").digest()
CMK_ARN = "arn:aws:kms:us-east-1:111122223333:key/0b7c3a52-0f4e-4d0f-9a57-7a1f5a4c0d11"


def plaintext(length: int, seed: str) -> bytes:
    """Deterministic bytes: SHA-256(seed || BE32(i)) blocks, so the file need not hold plaintexts."""
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(seed.encode() + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:length])


class FixedKms:
    """A KMS answering GenerateDataKey with one fixed data key (its blob made by the key service's
    own blob format under a fixed CMK backing key, so the blob is a vector too)."""

    def __init__(self, material: bytes, key_id: str, backing_id: str) -> None:
        self.material, self.key_id, self.backing_id = material, key_id, backing_id
        self.data_key = hashlib.sha256(b"s3gw format v1 vector data key").digest()
        self.contexts: list[dict[str, str]] = []

    async def generate_data_key(self, key_id: str | None, context: Mapping[str, str], *, requester=None) -> DataKey:
        self.contexts.append(dict(context))
        wrapped = blob.seal(Aead(self.material), self.key_id, self.backing_id, self.data_key,
                            blob.canonical_context(dict(context)))
        return DataKey(self.data_key, wrapped, CMK_ARN)

    async def decrypt_data_key(self, ciphertext: bytes, context: Mapping[str, str], *, requester=None) -> DataKey:
        raise NotImplementedError


async def _collect(chunks: Any) -> bytes:
    return b"".join([bytes(c) async for c in chunks])


async def _one(items: list[bytes]):
    for item in items:
        yield item


async def single(mode_name: str, key: str, size: int, request: SseRequest, keys: ObjectKeys) -> dict[str, Any]:
    data = plaintext(size, f"{key}")
    object_key, seal = await keys.create(BUCKET, key, request, GATEWAY)
    encryptor = StreamEncryptor(object_key)
    body = await _collect(encrypt_stream(_one([data]), encryptor))
    info = EncryptionInfo(seal, SingleStream(encryptor.params, size))
    return {"name": mode_name, "bucket": BUCKET, "key": key, "plaintext_size": size,
            "plaintext_sha256": hashlib.sha256(data).hexdigest(), "metadata": metadata.encode(info),
            "stored_etag": '"' + hashlib.md5(body).hexdigest() + '"',
            "body_b64": base64.b64encode(body).decode()}


async def multipart(mode_name: str, key: str, parts: list[tuple[int, int, bool]], request: SseRequest,
                    keys: ObjectKeys) -> dict[str, Any]:
    """parts: (part number, plaintext size, pinned in the manifest)."""
    object_key, seal = await keys.create(BUCKET, key, request, GATEWAY)
    tag = metadata.new_upload_tag()
    info = EncryptionInfo(seal, Multipart(tag))
    body, entries, whole = bytearray(), [], bytearray()
    for number, size, pinned in parts:
        data = plaintext(size, f"{key}/{number}")
        whole += data
        part = EncryptedPart(_one([data]), object_key, number, size)
        body += await _collect(part)
        entries.append(ManifestPart(number, size, part.params if pinned else None))
    sealed = seal_manifest(object_key, tag, Manifest(tuple(entries)))
    return {"name": mode_name, "bucket": BUCKET, "key": key, "plaintext_size": len(whole),
            "plaintext_sha256": hashlib.sha256(bytes(whole)).hexdigest(), "metadata": metadata.encode(info),
            "stored_etag": f'"{hashlib.md5(bytes(body)).hexdigest()}-{len(parts)}"',
            "parts": [{"number": n, "size": s} for n, s, _ in parts],
            "manifest_key": f".s3gw/manifests/{tag}", "manifest_b64": base64.b64encode(sealed).decode(),
            "body_b64": base64.b64encode(bytes(body)).decode()}


async def main() -> None:
    kms = FixedKms(hashlib.sha256(b"s3gw format v1 vector CMK backing key").digest(),
                   str(uuid.UUID("0b7c3a52-0f4e-4d0f-9a57-7a1f5a4c0d11")), os.urandom(16).hex())
    keys = ObjectKeys(kms, GATEWAY_SECRET)
    ssec = CustomerKeyRequest(CustomerKey(CUSTOMER_KEY))
    objects = [
        await single("sse-c, empty object", "empty", 0, ssec, keys),
        await single("sse-c, two segments, unicode key", "dir/näme with space+plus.bin", 70000, ssec, keys),
        await single("aws:kms with a client context", "kms/small.txt", 100,
                     KmsRequest(SseMode.KMS, key_id=CMK_ARN, context={"team": "storage"}), keys),
        await single("AES256 (SSE-S3), exactly one segment", "sse-s3/one-segment", 65536,
                     KmsRequest(SseMode.S3), keys),
        await multipart("sse-c multipart, part numbers 1 and 3, both pinned", "mp/ssec", [(1, 70000, True), (3, 10, True)],
                        ssec, keys),
        await multipart("aws:kms multipart, second part unpinned (bare ETag at Complete), empty last part",
                        "mp/kms", [(1, 65537, True), (2, 300, False), (3, 0, True)],
                        KmsRequest(SseMode.KMS, key_id=CMK_ARN), keys),
    ]
    print(json.dumps({
        "format": 1,
        "about": "Objects as stored by the gateway (docs/FORMAT.md v1); every key is fixed and public. "
                 "Plaintext i-th 32-byte block = SHA-256(seed || BE32(i)), seed = key (single) or key/part.",
        "gateway_secret_hex": GATEWAY_SECRET.hex(),
        "customer_key_b64": base64.b64encode(CUSTOMER_KEY).decode(),
        "kms": {"key_arn": CMK_ARN, "key_id": kms.key_id, "backing_id": kms.backing_id,
                "backing_key_hex": kms.material.hex(), "data_key_hex": kms.data_key.hex(),
                "contexts": kms.contexts},
        "objects": objects,
    }, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())
