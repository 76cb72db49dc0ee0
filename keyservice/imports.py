"""Imported key material (Origin EXTERNAL): GetParametersForImport, ImportKeyMaterial,
DeleteImportedKeyMaterial. Material is unwrapped with the RSA wrapping key handed out with the
import token; re-imports must bring the same material (checked against a keyed fingerprint)."""

import hmac
import os
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import load_der_private_key

from . import params as p
from .errors import KMSError, validation
from .keys import DAY, RSA_BITS, KeyRecord, new_backing_id, new_material

if TYPE_CHECKING:
    from .service import CallContext, KeyService

IMPORT_TOKEN_SECONDS = DAY
_WRAPPING_ALGORITHMS = {"RSAES_OAEP_SHA_1": hashes.SHA1, "RSAES_OAEP_SHA_256": hashes.SHA256}
_ALL_WRAPPING_ALGORITHMS = {*_WRAPPING_ALGORITHMS, "RSAES_PKCS1_V1_5", "RSA_AES_KEY_WRAP_SHA_1",
                            "RSA_AES_KEY_WRAP_SHA_256", "SM2PKE"}
_EXPIRATION_MODELS = {"KEY_MATERIAL_EXPIRES", "KEY_MATERIAL_DOES_NOT_EXPIRE"}


def _external_key(svc: "KeyService", params: dict[str, Any], ctx: "CallContext", operation: str) -> KeyRecord:
    rec = svc.resolve(params.get("KeyId"), ctx, alias_ok=False)
    svc.authorize(rec, operation, ctx)
    if rec.origin != "EXTERNAL":
        raise KMSError("UnsupportedOperationException", f"{rec.arn} origin is {rec.origin}, not EXTERNAL.")
    svc.require_not_pending_deletion(rec)
    return rec


async def get_parameters_for_import(svc: "KeyService", params: dict[str, Any],
                                    ctx: "CallContext") -> dict[str, Any]:
    algorithm = p.enum(params, "WrappingAlgorithm", _ALL_WRAPPING_ALGORITHMS)
    spec = p.enum(params, "WrappingKeySpec", {*RSA_BITS, "SM2"})
    if algorithm is None or spec is None:
        raise validation("WrappingAlgorithm and WrappingKeySpec are required.")
    if algorithm not in _WRAPPING_ALGORITHMS or spec not in RSA_BITS:
        raise KMSError("UnsupportedOperationException", f"Wrapping with {algorithm} / {spec} is not supported.")
    rec = _external_key(svc, params, ctx, "GetParametersForImport")
    private_der = await svc.in_thread(new_material, spec)
    token = rec.key_id.encode() + b"." + os.urandom(32)
    valid_to = svc.now() + IMPORT_TOKEN_SECONDS
    svc.store.put_import_params(rec.key_id, {"token": token.hex(), "algorithm": algorithm, "valid_to": valid_to},
                                private_der)
    public = load_der_private_key(private_der, None).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"KeyId": rec.arn, "ImportToken": token, "PublicKey": public, "ParametersValidTo": valid_to}


def import_key_material(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    token = p.blob(params, "ImportToken", 1, 6144)
    wrapped = p.blob(params, "EncryptedKeyMaterial", 1, 6144)
    model = p.enum(params, "ExpirationModel", _EXPIRATION_MODELS, "KEY_MATERIAL_EXPIRES")
    valid_to = p.timestamp(params, "ValidTo")
    if (model == "KEY_MATERIAL_EXPIRES") != (valid_to is not None):
        raise validation("ValidTo is required with KEY_MATERIAL_EXPIRES and not allowed otherwise.")
    if valid_to is not None and valid_to <= svc.now():
        raise validation("ValidTo must be in the future.")
    rec = _external_key(svc, params, ctx, "ImportKeyMaterial")
    material = _unwrap(svc, rec, token, wrapped)
    fingerprint = hmac.new(svc.store.fingerprint_key, rec.key_id.encode() + material, "sha256").hexdigest()
    if rec.material_fingerprint not in (None, fingerprint):
        raise KMSError("IncorrectKeyMaterialException",
                       "The key material is not the same key material that was previously imported.")
    rec.material_fingerprint = fingerprint
    rec.expiration_model, rec.valid_to = model, valid_to
    if rec.state == "PendingImport":
        rec.state = "Enabled"
        svc.add_backing_key(rec, material, None, backing_id=rec.current_backing or new_backing_id())
    else:
        svc.save(rec)
    return {}


def _unwrap(svc: "KeyService", rec: KeyRecord, token: bytes, wrapped: bytes) -> bytes:
    """Check the import token and unwrap the material with the matching wrapping private key."""
    stored = svc.store.import_params(rec.key_id)
    if stored is None or not hmac.compare_digest(bytes.fromhex(stored[0]["token"]), token):
        raise KMSError("InvalidImportTokenException", "The import token is not valid for this KMS key.")
    meta, private_der = stored
    if svc.now() >= meta["valid_to"]:
        raise KMSError("ExpiredImportTokenException", "The import token has expired.")
    digest = _WRAPPING_ALGORITHMS[meta["algorithm"]]()
    try:
        material = load_der_private_key(private_der, None).decrypt(
            wrapped, padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None))
    except ValueError as exc:
        raise KMSError("InvalidCiphertextException", "The encrypted key material could not be decrypted.") from exc
    if len(material) != 32:
        raise KMSError("IncorrectKeyMaterialException", "Symmetric key material must be 256 bits (32 bytes).")
    return material


def delete_imported_key_material(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    rec = _external_key(svc, params, ctx, "DeleteImportedKeyMaterial")
    svc.drop_material(rec)
    return {}


HANDLERS = {
    "GetParametersForImport": get_parameters_for_import, "ImportKeyMaterial": import_key_material,
    "DeleteImportedKeyMaterial": delete_imported_key_material,
}
