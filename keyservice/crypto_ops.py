"""Cryptographic operations: symmetric envelope encryption, data keys, asymmetric, HMAC, random.

This is the hot path: a key is found in memory, the compiled policy checked, AES-GCM run; no
database access once a key's material is cached.
"""

import hashlib
import hmac
import os
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from . import blob as blobfmt
from . import params as p
from .errors import KMSError, validation
from .keys import EC_CURVES, RSA_BITS, RSA_ENCRYPTION, KeyRecord, new_material

if TYPE_CHECKING:
    from .service import CallContext, KeyService

MAX_PLAINTEXT = 4096
MAX_CIPHERTEXT = 6144
_HASHES = {"SHA_1": hashes.SHA1, "SHA_256": hashes.SHA256, "SHA_384": hashes.SHA384, "SHA_512": hashes.SHA512}
_DATA_KEY_BYTES = {"AES_256": 32, "AES_128": 16}
_KEY_PAIR_SPECS = frozenset({*RSA_BITS, *EC_CURVES})


def _invalid_usage(rec: KeyRecord, operation: str) -> KMSError:
    return KMSError("InvalidKeyUsageException",
                    f"{rec.arn} key usage is {rec.key_usage} which is not valid for {operation}.")


def _crypto_key(svc: "KeyService", params: dict[str, Any], ctx: "CallContext", operation: str,
                usage: str, context: dict[str, str] | None = None, key_param: str = "KeyId",
                action: str | None = None) -> KeyRecord:
    """Resolve, authorize, check state and usage: the common preamble of every crypto call."""
    rec = svc.resolve(params.get(key_param), ctx, alias_ok=True, name=key_param)
    svc.authorize(rec, action or operation, ctx, context, params.get("GrantTokens"))
    svc.require_usable(rec)
    if rec.key_usage != usage:
        raise _invalid_usage(rec, operation)
    return rec


# --- symmetric and RSA encryption ------------------------------------------------------------
def _encrypt_with(rec: KeyRecord, svc: "KeyService", plaintext: bytes, context: dict[str, str] | None,
                  algorithm: str) -> bytes:
    if rec.symmetric:
        if algorithm != "SYMMETRIC_DEFAULT":
            raise _invalid_usage(rec, f"encryption algorithm {algorithm}")
        return blobfmt.seal(svc.material(rec), rec.key_id, rec.current_backing, plaintext,
                            blobfmt.canonical_context(context), blob_version(rec))
    if algorithm not in RSA_ENCRYPTION:
        raise _invalid_usage(rec, f"encryption algorithm {algorithm}")
    if context:
        raise validation("EncryptionContext is not supported with asymmetric keys.")
    try:
        return svc.material(rec).public_key().encrypt(plaintext, _oaep(algorithm))
    except ValueError as exc:
        raise validation(f"Plaintext is too long for {rec.key_spec} with {algorithm}.") from exc


def blob_version(rec: KeyRecord) -> int:
    """The blob version (backing kind) of a symmetric key's ciphertexts: in the store, or in a token; a
    multi-region key's (in the store) names its mrk- id."""
    if rec.custom_key_store_id:
        return blobfmt.TOKEN_VERSION
    return blobfmt.MRK_VERSION if rec.key_id.startswith(blobfmt.MRK_PREFIX) else blobfmt.VERSION


def _oaep(algorithm: str) -> padding.OAEP:
    digest = _HASHES[algorithm.removeprefix("RSAES_OAEP_")]()
    return padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)


def encrypt(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    plaintext = p.blob(params, "Plaintext", 1, MAX_PLAINTEXT)
    context = p.context(params)
    algorithm = p.enum(params, "EncryptionAlgorithm", {"SYMMETRIC_DEFAULT", *RSA_ENCRYPTION}, "SYMMETRIC_DEFAULT")
    rec = _crypto_key(svc, params, ctx, "Encrypt", "ENCRYPT_DECRYPT", context)
    return {"CiphertextBlob": _encrypt_with(rec, svc, plaintext, context, algorithm),
            "KeyId": rec.arn, "EncryptionAlgorithm": algorithm}


def _decrypt_blob(svc: "KeyService", params: dict[str, Any], ctx: "CallContext", *, blob_param: str,
                  context_param: str, key_param: str, algorithm_param: str,
                  action: str) -> tuple[KeyRecord, bytes, str]:
    """Decrypt for Decrypt and ReEncrypt; the key comes from the blob unless it is RSA."""
    ciphertext = p.blob(params, blob_param, 1, MAX_CIPHERTEXT)
    context = p.context(params, context_param)
    algorithm = p.enum(params, algorithm_param, {"SYMMETRIC_DEFAULT", *RSA_ENCRYPTION}, "SYMMETRIC_DEFAULT")
    if algorithm != "SYMMETRIC_DEFAULT":
        rec = _crypto_key(svc, params, ctx, action, "ENCRYPT_DECRYPT", None, key_param)
        if rec.symmetric:
            raise _invalid_usage(rec, f"encryption algorithm {algorithm}")
        try:
            return rec, svc.material(rec).decrypt(ciphertext, _oaep(algorithm)), algorithm
        except ValueError as exc:
            raise blobfmt.invalid_ciphertext() from exc
    header = blobfmt.parse_header(ciphertext)
    if params.get(key_param) is not None:
        named = svc.resolve(params[key_param], ctx, alias_ok=True, name=key_param)
        if named.key_id != header.key_id:
            raise KMSError("IncorrectKeyException", "The key ID in the request does not identify the KMS key "
                                                    "that was used to encrypt the ciphertext.")
    if header.key_id not in svc.keys:
        raise blobfmt.invalid_ciphertext()
    rec = svc.resolve(svc.key_arn(header.key_id), ctx, alias_ok=False)  # the blob names this account's key
    svc.authorize(rec, action, ctx, context, params.get("GrantTokens"))
    svc.require_usable(rec)
    if not rec.symmetric:
        raise _invalid_usage(rec, "SYMMETRIC_DEFAULT decryption")
    aead = svc.material(rec, header.backing_id)
    if aead is None or header.version != blob_version(rec):
        raise blobfmt.invalid_ciphertext()
    return rec, blobfmt.open_blob(aead, ciphertext, header, blobfmt.canonical_context(context)), algorithm


def decrypt(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    rec, plaintext, algorithm = _decrypt_blob(
        svc, params, ctx, blob_param="CiphertextBlob", context_param="EncryptionContext", key_param="KeyId",
        algorithm_param="EncryptionAlgorithm", action="Decrypt")
    return {"KeyId": rec.arn, "Plaintext": plaintext, "EncryptionAlgorithm": algorithm}


def re_encrypt(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    dest_context = p.context(params, "DestinationEncryptionContext")
    dest_algorithm = p.enum(params, "DestinationEncryptionAlgorithm", {"SYMMETRIC_DEFAULT", *RSA_ENCRYPTION},
                            "SYMMETRIC_DEFAULT")
    source, plaintext, source_algorithm = _decrypt_blob(
        svc, params, ctx, blob_param="CiphertextBlob", context_param="SourceEncryptionContext",
        key_param="SourceKeyId", algorithm_param="SourceEncryptionAlgorithm", action="ReEncryptFrom")
    dest = _crypto_key(svc, params, ctx, "ReEncrypt", "ENCRYPT_DECRYPT", dest_context, "DestinationKeyId",
                       action="ReEncryptTo")
    return {"CiphertextBlob": _encrypt_with(dest, svc, plaintext, dest_context, dest_algorithm),
            "SourceKeyId": source.arn, "KeyId": dest.arn, "SourceEncryptionAlgorithm": source_algorithm,
            "DestinationEncryptionAlgorithm": dest_algorithm}


# --- data keys -------------------------------------------------------------------------------
def _data_key(svc: "KeyService", params: dict[str, Any], ctx: "CallContext", operation: str) -> dict[str, Any]:
    spec = p.enum(params, "KeySpec", _DATA_KEY_BYTES)
    size = p.integer(params, "NumberOfBytes", 1, 1024)
    if (spec is None) == (size is None):
        raise validation("Please specify either number of bytes or key spec.")
    context = p.context(params)
    rec = _crypto_key(svc, params, ctx, operation, "ENCRYPT_DECRYPT", context)
    if not rec.symmetric:
        raise _invalid_usage(rec, operation)
    plaintext = os.urandom(_DATA_KEY_BYTES[spec] if spec else size)  # type: ignore[arg-type]
    return {"CiphertextBlob": _encrypt_with(rec, svc, plaintext, context, "SYMMETRIC_DEFAULT"),
            "Plaintext": plaintext, "KeyId": rec.arn}


def generate_data_key(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    return _data_key(svc, params, ctx, "GenerateDataKey")


def generate_data_key_without_plaintext(svc: "KeyService", params: dict[str, Any],
                                        ctx: "CallContext") -> dict[str, Any]:
    result = _data_key(svc, params, ctx, "GenerateDataKeyWithoutPlaintext")
    del result["Plaintext"]
    return result


async def _data_key_pair(svc: "KeyService", params: dict[str, Any], ctx: "CallContext",
                         operation: str) -> dict[str, Any]:
    pair_spec = p.enum(params, "KeyPairSpec", _KEY_PAIR_SPECS)
    if pair_spec is None:
        p.required_str(params, "KeyPairSpec")
    context = p.context(params)
    rec = _crypto_key(svc, params, ctx, operation, "ENCRYPT_DECRYPT", context)
    if not rec.symmetric:
        raise _invalid_usage(rec, operation)
    if rec.custom_key_store_id is not None:
        raise KMSError("UnsupportedOperationException", f"{rec.arn} is in a custom key store: data key pairs "
                                                        "cannot be generated under it.")
    private_der = await svc.in_thread(new_material, pair_spec)
    public_der = serialization.load_der_private_key(private_der, None).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"PrivateKeyCiphertextBlob": _encrypt_with(rec, svc, private_der, context, "SYMMETRIC_DEFAULT"),
            "PrivateKeyPlaintext": private_der, "PublicKey": public_der, "KeyId": rec.arn,
            "KeyPairSpec": pair_spec}


async def generate_data_key_pair(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    return await _data_key_pair(svc, params, ctx, "GenerateDataKeyPair")


async def generate_data_key_pair_without_plaintext(svc: "KeyService", params: dict[str, Any],
                                                   ctx: "CallContext") -> dict[str, Any]:
    result = await _data_key_pair(svc, params, ctx, "GenerateDataKeyPairWithoutPlaintext")
    del result["PrivateKeyPlaintext"]
    return result


def generate_random(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    size = p.integer(params, "NumberOfBytes", 1, 1024)
    if size is None:
        raise validation("NumberOfBytes is required (1-1024).")
    if params.get("CustomKeyStoreId") is not None:
        return {"Plaintext": svc.custom_key_stores.random(params["CustomKeyStoreId"], size)}
    return {"Plaintext": os.urandom(size)}


# --- signatures ------------------------------------------------------------------------------
def _signing_input(rec: KeyRecord, params: dict[str, Any]) -> tuple[bytes, str, Any, Any]:
    """(message, algorithm, padding or None, hash algorithm or Prehashed) for Sign/Verify."""
    message = p.blob(params, "Message", 1, MAX_PLAINTEXT)
    message_type = p.enum(params, "MessageType", {"RAW", "DIGEST", "EXTERNAL_MU"}, "RAW")
    algorithm = p.required_str(params, "SigningAlgorithm", 64)
    allowed = rec.algorithms().get("SigningAlgorithms", [])
    if algorithm not in allowed:
        raise _invalid_usage(rec, f"signing algorithm {algorithm}")
    if message_type == "EXTERNAL_MU":
        raise validation("MessageType EXTERNAL_MU is only for ML-DSA keys.")
    digest = _HASHES["SHA_" + algorithm.rsplit("_", 1)[1]]()
    if message_type == "DIGEST":
        if len(message) != digest.digest_size:
            raise validation(f"Digest must be {digest.digest_size} bytes for {algorithm}.")
        hash_arg: Any = utils.Prehashed(digest)
    else:
        hash_arg = digest
    pad: Any = None
    if algorithm.startswith("RSASSA_PSS"):
        pad = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    elif algorithm.startswith("RSASSA_PKCS1"):
        pad = padding.PKCS1v15()
    return message, algorithm, pad, hash_arg


def sign(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    rec = _crypto_key(svc, params, ctx, "Sign", "SIGN_VERIFY")
    message, algorithm, pad, hash_arg = _signing_input(rec, params)
    private = svc.material(rec)
    if isinstance(private, rsa.RSAPrivateKey):
        signature = private.sign(message, pad, hash_arg)
    else:
        signature = private.sign(message, ec.ECDSA(hash_arg))
    return {"KeyId": rec.arn, "Signature": signature, "SigningAlgorithm": algorithm}


def verify(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    signature = p.blob(params, "Signature", 1, 6144)
    rec = _crypto_key(svc, params, ctx, "Verify", "SIGN_VERIFY")
    message, algorithm, pad, hash_arg = _signing_input(rec, params)
    public = svc.material(rec).public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, message, pad, hash_arg)
        else:
            public.verify(signature, message, ec.ECDSA(hash_arg))
    except InvalidSignature as exc:
        raise KMSError("KMSInvalidSignatureException", "The signature verification failed.") from exc
    return {"KeyId": rec.arn, "SignatureValid": True, "SigningAlgorithm": algorithm}


def get_public_key(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    rec = svc.resolve(params.get("KeyId"), ctx, alias_ok=True)
    svc.authorize(rec, "GetPublicKey", ctx, grant_tokens=params.get("GrantTokens"))
    svc.require_usable(rec)
    if rec.symmetric or rec.key_usage == "GENERATE_VERIFY_MAC":
        raise KMSError("UnsupportedOperationException", f"{rec.arn} is not an asymmetric key.")
    public = svc.material(rec).public_key().public_bytes(serialization.Encoding.DER,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"KeyId": rec.arn, "PublicKey": public, "CustomerMasterKeySpec": rec.key_spec, "KeySpec": rec.key_spec,
            "KeyUsage": rec.key_usage, **rec.algorithms()}


# --- HMAC ------------------------------------------------------------------------------------
def _mac_input(svc: "KeyService", params: dict[str, Any], ctx: "CallContext",
               operation: str) -> tuple[KeyRecord, bytes, str]:
    message = p.blob(params, "Message", 1, MAX_PLAINTEXT)
    algorithm = p.required_str(params, "MacAlgorithm", 64)
    rec = _crypto_key(svc, params, ctx, operation, "GENERATE_VERIFY_MAC")
    if algorithm not in rec.algorithms()["MacAlgorithms"]:
        raise _invalid_usage(rec, f"MAC algorithm {algorithm}")
    digest = "sha" + algorithm.rsplit("_", 1)[1]
    return rec, hmac.new(svc.material(rec), message, getattr(hashlib, digest)).digest(), algorithm


def generate_mac(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    rec, mac, algorithm = _mac_input(svc, params, ctx, "GenerateMac")
    return {"Mac": mac, "MacAlgorithm": algorithm, "KeyId": rec.arn}


def verify_mac(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    given = p.blob(params, "Mac", 1, 6144)
    rec, mac, algorithm = _mac_input(svc, params, ctx, "VerifyMac")
    if not hmac.compare_digest(mac, given):
        raise KMSError("KMSInvalidMacException", "The MAC verification failed.")
    return {"KeyId": rec.arn, "MacValid": True, "MacAlgorithm": algorithm}


HANDLERS = {
    "Encrypt": encrypt, "Decrypt": decrypt, "ReEncrypt": re_encrypt,
    "GenerateDataKey": generate_data_key, "GenerateDataKeyWithoutPlaintext": generate_data_key_without_plaintext,
    "GenerateDataKeyPair": generate_data_key_pair,
    "GenerateDataKeyPairWithoutPlaintext": generate_data_key_pair_without_plaintext,
    "GenerateRandom": generate_random, "Sign": sign, "Verify": verify, "GetPublicKey": get_public_key,
    "GenerateMac": generate_mac, "VerifyMac": verify_mac,
}
