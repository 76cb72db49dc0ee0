"""Imported key material (Origin EXTERNAL), in-process."""

import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from keyservice.service import KeyService
from tests.keyservice.inprocess import DAY, START, call, fails



async def external_key(svc: KeyService) -> str:
    meta = (await call(svc, "CreateKey", Origin="EXTERNAL"))["KeyMetadata"]
    assert (meta["KeyState"], meta["Origin"], meta["Enabled"]) == ("PendingImport", "EXTERNAL", False)
    return meta["KeyId"]


async def wrap(svc: KeyService, key: str, material: bytes, algorithm: str = "RSAES_OAEP_SHA_256") -> dict:
    """Fetch import parameters and wrap material as a client (the aws CLI + openssl) would."""
    params = await call(svc, "GetParametersForImport", KeyId=key, WrappingAlgorithm=algorithm,
                        WrappingKeySpec="RSA_2048")
    assert params["ParametersValidTo"] == svc.clock.now() + DAY
    digest = hashes.SHA256() if algorithm.endswith("256") else hashes.SHA1()
    public = serialization.load_der_public_key(params["PublicKey"])
    wrapped = public.encrypt(material, padding.OAEP(padding.MGF1(digest), digest, None))
    return {"KeyId": key, "ImportToken": params["ImportToken"], "EncryptedKeyMaterial": wrapped}


async def test_imported_material_encrypts_and_survives_delete_and_reimport(svc):
    key, material = await external_key(svc), os.urandom(32)
    await fails(svc, "Encrypt", "KMSInvalidStateException", KeyId=key, Plaintext=b"x")
    await call(svc, "ImportKeyMaterial", ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE", **await wrap(svc, key, material))
    meta = (await call(svc, "DescribeKey", KeyId=key))["KeyMetadata"]
    assert (meta["KeyState"], meta["ExpirationModel"]) == ("Enabled", "KEY_MATERIAL_DOES_NOT_EXPIRE")
    blob = (await call(svc, "Encrypt", KeyId=key, Plaintext=b"imported"))["CiphertextBlob"]
    await call(svc, "DeleteImportedKeyMaterial", KeyId=key)
    assert (await call(svc, "DescribeKey", KeyId=key))["KeyMetadata"]["KeyState"] == "PendingImport"
    await fails(svc, "Decrypt", "KMSInvalidStateException", CiphertextBlob=blob)
    await call(svc, "ImportKeyMaterial", ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
               **await wrap(svc, key, material, "RSAES_OAEP_SHA_1"))
    assert (await call(svc, "Decrypt", CiphertextBlob=blob))["Plaintext"] == b"imported"


async def test_reimport_of_different_material_is_refused(svc):
    key = await external_key(svc)
    await call(svc, "ImportKeyMaterial", ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
               **await wrap(svc, key, os.urandom(32)))
    await call(svc, "DeleteImportedKeyMaterial", KeyId=key)
    await fails(svc, "ImportKeyMaterial", "IncorrectKeyMaterialException",
                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE", **await wrap(svc, key, os.urandom(32)))


async def test_expired_import_token_is_refused(svc):
    key = await external_key(svc)
    request = await wrap(svc, key, os.urandom(32))
    svc.clock.advance(DAY)
    await fails(svc, "ImportKeyMaterial", "ExpiredImportTokenException",
                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE", **request)


async def test_bad_tokens_material_and_expiry_parameters(svc):
    key = await external_key(svc)
    request = await wrap(svc, key, os.urandom(16))
    await fails(svc, "ImportKeyMaterial", "IncorrectKeyMaterialException",
                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE", **request)
    await fails(svc, "ImportKeyMaterial", "InvalidImportTokenException", ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
                **{**request, "ImportToken": b"forged"})
    await fails(svc, "ImportKeyMaterial", "InvalidCiphertextException", ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
                **{**request, "EncryptedKeyMaterial": b"\x01" * 256})
    await fails(svc, "ImportKeyMaterial", "ValidationException", **request)  # KEY_MATERIAL_EXPIRES needs ValidTo
    await fails(svc, "ImportKeyMaterial", "ValidationException", ValidTo=START - 1, **request)
    await fails(svc, "GetParametersForImport", "UnsupportedOperationException", KeyId=(await call(
        svc, "CreateKey"))["KeyMetadata"]["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")
    await fails(svc, "GetParametersForImport", "ValidationException", KeyId=key, WrappingAlgorithm="ROT13",
                WrappingKeySpec="RSA_2048")


async def test_material_is_deleted_when_valid_to_passes(svc):
    key = await external_key(svc)
    await call(svc, "ImportKeyMaterial", ValidTo=START + 2 * DAY, **await wrap(svc, key, os.urandom(32)))
    meta = (await call(svc, "DescribeKey", KeyId=key))["KeyMetadata"]
    assert (meta["ExpirationModel"], meta["ValidTo"]) == ("KEY_MATERIAL_EXPIRES", START + 2 * DAY)
    await call(svc, "Encrypt", KeyId=key, Plaintext=b"x")
    svc.clock.advance(2 * DAY)
    svc.purge_due_keys()
    assert svc.store.backing_keys(key) == []
    assert (await call(svc, "DescribeKey", KeyId=key))["KeyMetadata"]["KeyState"] == "PendingImport"
    await fails(svc, "Encrypt", "KMSInvalidStateException", KeyId=key, Plaintext=b"x")
