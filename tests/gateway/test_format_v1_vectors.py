"""Objects written by format version 1 still read: frozen known-answer vectors (tests/vectors/format_v1.json).

Each vector is an object exactly as an earlier gateway stored it upstream (reserved metadata, body, and
for multipart objects the sealed manifest), with every key published in the file. The first tests open
them with today's crypto layer (and the KMS blob with the key service's blob format); the last puts the
SSE-C vectors straight into moto and reads them through a running gateway that holds the vectors'
gateway secret. A refactor that changes a single byte of the format fails here.
"""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

import pytest

from common.aead import Aead
from gateway.datakeys import GATEWAY
from gateway.crypto import metadata
from gateway.crypto.metadata import EncryptionInfo, Multipart, SingleStream
from gateway.crypto.multipart import HEADER_SIZE, PartRead, decrypt_parts, open_manifest, plan_reads
from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.sse import CustomerKey, CustomerKeySeal, DataKey, KmsSeal, ObjectKeys, SseC, SseKms, SseMode
from gateway.crypto.stream import StreamDecryptor, decrypt_stream, plan_range
from keyservice import blob
from tests.gateway.conftest import _config_toml
from tests.support.clients import s3_client
from tests.support.process import VENV_BIN, start_server
from tests.support.secrets import register

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "format_v1.json").read_text())
OBJECTS = {o["name"]: o for o in VECTORS["objects"]}
CUSTOMER_KEY = base64.b64decode(VECTORS["customer_key_b64"])
GATEWAY_SECRET = bytes.fromhex(VECTORS["gateway_secret_hex"])
register("format-v1 vector customer key", CUSTOMER_KEY)
register("format-v1 vector gateway secret", GATEWAY_SECRET)


def expected_plaintext(vector: Mapping[str, Any]) -> bytes:
    """The vector's plaintext, rebuilt from its seeds (see the file's "about")."""
    def blocks(length: int, seed: str) -> bytes:
        out = bytearray()
        for counter in range((length + 31) // 32):
            out += hashlib.sha256(seed.encode() + counter.to_bytes(4, "big")).digest()
        return bytes(out[:length])
    if "parts" not in vector:
        return blocks(vector["plaintext_size"], vector["key"])
    return b"".join(blocks(p["size"], f"{vector['key']}/{p['number']}") for p in vector["parts"])


class VectorKms:
    """Opens the vectors' KMS blobs with the published CMK backing key through the key service's blob
    format, checking the encryption context the gateway rebuilds (a unit stand-in for KMS Decrypt)."""

    def __init__(self) -> None:
        kms = VECTORS["kms"]
        self._aead = Aead(bytes.fromhex(kms["backing_key_hex"]))
        self._arn = kms["key_arn"]

    async def generate_data_key(self, key_id: str | None, context: Mapping[str, str], *, requester=None) -> DataKey:
        raise AssertionError("reading never makes a data key")

    async def decrypt_data_key(self, ciphertext: bytes, context: Mapping[str, str], *, requester=None) -> DataKey:
        header = blob.parse_header(ciphertext)
        assert header.key_id == VECTORS["kms"]["key_id"]
        plaintext = blob.open_blob(self._aead, ciphertext, header, blob.canonical_context(dict(context)))
        return DataKey(plaintext, ciphertext, self._arn)


def _info(vector: Mapping[str, Any]) -> EncryptionInfo:
    info = metadata.decode(vector["metadata"])
    assert info is not None
    return info


async def _object_key(vector: Mapping[str, Any]) -> ObjectKey:
    """OK through ObjectKeys (what the gateway calls), checked against the mode's own opener."""
    seal = _info(vector).seal
    customer_key = CustomerKey(CUSTOMER_KEY) if isinstance(seal, CustomerKeySeal) else None
    object_key = await ObjectKeys(VectorKms(), GATEWAY_SECRET).open(vector["bucket"], vector["key"], seal,
                                                                    customer_key, GATEWAY)
    if isinstance(seal, CustomerKeySeal):
        assert SseC(GATEWAY_SECRET).open(vector["bucket"], vector["key"], seal, customer_key) == object_key
    else:
        assert await SseKms(VectorKms()).open(vector["bucket"], vector["key"], seal, GATEWAY) == object_key
    return object_key


async def _chunks(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


async def _read(vector: Mapping[str, Any], span: tuple[int, int] | None) -> bytes:
    """The plaintext of ``span`` (None: all), decrypted from the stored bytes the plan names."""
    body = base64.b64decode(vector["body_b64"])
    object_key = await _object_key(vector)
    layout = _info(vector).layout
    if isinstance(layout, Multipart):
        manifest = open_manifest(object_key, layout.upload_tag, base64.b64decode(vector["manifest_b64"]))
        reads = plan_reads(manifest, span)
        if not reads:
            return b""

        async def header(read: PartRead) -> bytes:
            return body[read.stored_offset:read.stored_offset + HEADER_SIZE]
        stored = body[reads[0].upstream_start:reads[-1].upstream_end + 1]
        return b"".join([c async for c in decrypt_parts(_chunks(stored), object_key, reads, header)])
    assert isinstance(layout, SingleStream) and layout.plaintext_size == vector["plaintext_size"]
    plan = plan_range(layout.plaintext_size, *span) if span else None
    stored = body[plan.cipher_start:plan.cipher_end + 1] if plan else body
    decryptor = StreamDecryptor(object_key, layout.params, layout.plaintext_size, plan=plan)
    return b"".join([c async for c in decrypt_stream(_chunks(stored), decryptor)])


@pytest.mark.parametrize("name", list(OBJECTS))
async def test_every_v1_vector_decrypts_to_its_plaintext(name: str) -> None:
    vector = OBJECTS[name]
    plaintext = await _read(vector, None)
    assert len(plaintext) == vector["plaintext_size"]
    assert hashlib.sha256(plaintext).hexdigest() == vector["plaintext_sha256"]
    assert plaintext == expected_plaintext(vector)


@pytest.mark.parametrize("name", [n for n, o in OBJECTS.items() if o["plaintext_size"] > 1])
async def test_v1_vector_ranges_across_segments_and_parts_decrypt_exactly(name: str) -> None:
    vector = OBJECTS[name]
    whole = expected_plaintext(vector)
    size = len(whole)
    for first, last in {(0, 0), (size - 1, size - 1), (1, size - 2), (size // 3, 2 * size // 3),
                        (65535 % size, min(65536, size - 1))}:
        assert await _read(vector, (first, last)) == whole[first:last + 1], (first, last)


@pytest.mark.parametrize("name", list(OBJECTS))
def test_v1_vector_metadata_decodes_to_its_typed_info_and_encodes_back_byte_for_byte(name: str) -> None:
    """docs/FORMAT.md is the contract: today's encoder writes exactly the headers format v1 wrote."""
    vector = OBJECTS[name]
    info = _info(vector)
    assert metadata.encode(info) == vector["metadata"]
    mode = SseMode(vector["metadata"][metadata.MODE])
    assert info.mode is mode and info.version == 1
    assert isinstance(info.seal, CustomerKeySeal if mode is SseMode.CUSTOMER else KmsSeal)
    assert isinstance(info.layout, Multipart if "parts" in vector else SingleStream)
    if isinstance(info.seal, KmsSeal):
        assert info.kms_key_arn == VECTORS["kms"]["key_arn"]


def test_v1_kms_vectors_name_the_contexts_the_gateway_binds() -> None:
    """The data key blobs were made under the context aws:s3:arn of bucket/key plus the client's pairs."""
    contexts = VECTORS["kms"]["contexts"]
    assert contexts[0] == {"team": "storage", "aws:s3:arn": "arn:aws:s3:::vectors/kms/small.txt"}
    assert all(c["aws:s3:arn"].startswith("arn:aws:s3:::vectors/") for c in contexts)


def test_sse_c_v1_vectors_planted_upstream_read_through_a_running_gateway(moto, tmp_path: Path) -> None:
    """The stored objects as moto holds them, read by a gateway process with the vectors' secret."""
    secret_file = tmp_path / "vector.secret"
    secret_file.write_bytes(GATEWAY_SECRET)
    config = tmp_path / "gateway.toml"
    config.write_text(_config_toml(moto, tmp_path / "data", None))
    server = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                          env={"GATEWAY_SECRET_FILE": str(secret_file)}, timeout=60)
    try:
        upstream = s3_client(moto.url, moto.access_key, moto.secret_key)
        bucket = VECTORS["objects"][0]["bucket"]
        upstream.create_bucket(Bucket=bucket)
        # Single-stream SSE-C vectors: a multipart vector would need an upstream multipart object of parts
        # under moto's 5 MiB minimum (its "-k" ETag carries the part count), so those are read above only.
        ssec = [o for o in VECTORS["objects"] if o["metadata"][metadata.MODE] == "SSE-C" and "parts" not in o]
        for vector in ssec:
            meta = {k.removeprefix("x-amz-meta-"): v for k, v in vector["metadata"].items()}
            upstream.put_object(Bucket=bucket, Key=vector["key"], Body=base64.b64decode(vector["body_b64"]),
                                Metadata=meta)
        client = s3_client(server.url, "AKIDGATEWAY", "gateway-secret-key")
        key_md5 = base64.b64encode(hashlib.md5(CUSTOMER_KEY).digest()).decode()
        for vector in ssec:
            got = client.get_object(Bucket=bucket, Key=vector["key"], SSECustomerAlgorithm="AES256",
                                    SSECustomerKey=VECTORS["customer_key_b64"], SSECustomerKeyMD5=key_md5)
            assert got["Body"].read() == expected_plaintext(vector), vector["name"]
            assert got["ContentLength"] == vector["plaintext_size"]
    finally:
        server.stop()
