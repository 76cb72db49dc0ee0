"""Key records, key specs and the KeyMetadata shape AWS returns."""

import os
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

DAY = 86400.0

RSA_SIGNING = [f"RSASSA_PSS_SHA_{n}" for n in (256, 384, 512)] + \
    [f"RSASSA_PKCS1_V1_5_SHA_{n}" for n in (256, 384, 512)]
RSA_ENCRYPTION = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
RSA_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ECC_NIST_P256": ec.SECP256R1, "ECC_NIST_P384": ec.SECP384R1, "ECC_NIST_P521": ec.SECP521R1,
    "ECC_SECG_P256K1": ec.SECP256K1,
}
EC_SIGNING = {"ECC_NIST_P256": "ECDSA_SHA_256", "ECC_NIST_P384": "ECDSA_SHA_384",
              "ECC_NIST_P521": "ECDSA_SHA_512", "ECC_SECG_P256K1": "ECDSA_SHA_256"}
HMAC_BYTES = {"HMAC_224": 28, "HMAC_256": 32, "HMAC_384": 48, "HMAC_512": 64}
KEY_SPECS = frozenset({"SYMMETRIC_DEFAULT", *RSA_BITS, *EC_CURVES, *HMAC_BYTES})


def usages_for(spec: str) -> set[str]:
    """The KeyUsage values a key spec supports."""
    if spec == "SYMMETRIC_DEFAULT":
        return {"ENCRYPT_DECRYPT"}
    if spec in RSA_BITS:
        return {"ENCRYPT_DECRYPT", "SIGN_VERIFY"}
    if spec in EC_CURVES:
        return {"SIGN_VERIFY"}
    return {"GENERATE_VERIFY_MAC"}


def quota_class_for(spec: str) -> str:
    """AWS's cryptographic request quota family for a key spec."""
    if spec in RSA_BITS:
        return "rsa"
    if spec in EC_CURVES:
        return "ecc"
    if spec in HMAC_BYTES:
        return "hmac"
    return "symmetric"


def new_material(spec: str) -> bytes:
    """Fresh key material: raw bytes for symmetric/HMAC, PKCS#8 DER for asymmetric (slow for RSA)."""
    if spec == "SYMMETRIC_DEFAULT":
        return os.urandom(32)
    if spec in HMAC_BYTES:
        return os.urandom(HMAC_BYTES[spec])
    if spec in RSA_BITS:
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS[spec])
    else:
        private = ec.generate_private_key(EC_CURVES[spec]())
    return private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def new_backing_id() -> str:
    """A backing key (key version) id: 16 random bytes as hex, as stored in ciphertext blobs."""
    return os.urandom(16).hex()


@dataclass
class KeyRecord:
    """Everything non-secret about one KMS key (persisted as JSON in the keys table)."""

    key_id: str
    arn: str
    account_id: str
    created: float
    key_spec: str
    key_usage: str
    origin: str
    state: str
    policy: str
    description: str = ""
    deletion_date: float | None = None
    pending_window: int | None = None
    valid_to: float | None = None
    expiration_model: str | None = None
    rotation_period: int | None = None
    next_rotation: float | None = None
    on_demand_started: float | None = None
    current_backing: str | None = None
    material_fingerprint: str | None = None
    rotations: list[dict[str, Any]] = field(default_factory=list)
    custom_key_store_id: str | None = None  # origin AWS_CLOUDHSM: its material is in this store's token
    # A multi-region key: {"primary": region, "replicas": [region, ...]} (keyservice/multiregion.py)
    multi_region: dict[str, Any] | None = None

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "KeyRecord":
        return cls(**meta)

    @property
    def symmetric(self) -> bool:
        return self.key_spec == "SYMMETRIC_DEFAULT"

    def metadata(self) -> dict[str, Any]:
        """The DescribeKey KeyMetadata structure."""
        meta: dict[str, Any] = {
            "AWSAccountId": self.account_id, "KeyId": self.key_id, "Arn": self.arn,
            "CreationDate": self.created, "Enabled": self.state == "Enabled",
            "Description": self.description, "KeyUsage": self.key_usage, "KeyState": self.state,
            "Origin": self.origin, "KeyManager": "CUSTOMER", "CustomerMasterKeySpec": self.key_spec,
            "KeySpec": self.key_spec, "MultiRegion": self.multi_region is not None,
        }
        if self.multi_region is not None:
            meta["MultiRegionConfiguration"] = self.multi_region_configuration()
        if self.deletion_date is not None:
            meta["DeletionDate"] = self.deletion_date
        if self.pending_window is not None:  # also while a multi-region primary waits for its replicas to go
            meta["PendingDeletionWindowInDays"] = self.pending_window
        if self.origin == "EXTERNAL":
            meta["ExpirationModel"] = self.expiration_model or "KEY_MATERIAL_EXPIRES"
            if self.valid_to is not None:
                meta["ValidTo"] = self.valid_to
        meta.update(self.algorithms())
        return meta

    @property
    def region(self) -> str:
        return self.arn.split(":")[3]

    def arn_in(self, region: str) -> str:
        """This key's ARN in another region (a multi-region key has the same id in each)."""
        parts = self.arn.split(":")
        parts[3] = region
        return ":".join(parts)

    @property
    def is_replica(self) -> bool:
        return self.multi_region is not None and self.multi_region["primary"] != self.region

    def multi_region_configuration(self) -> dict[str, Any]:
        """DescribeKey's MultiRegionConfiguration: which region holds the primary, and the replicas."""
        assert self.multi_region is not None
        primary = self.multi_region["primary"]
        return {"MultiRegionKeyType": "REPLICA" if self.is_replica else "PRIMARY",
                "PrimaryKey": {"Arn": self.arn_in(primary), "Region": primary},
                "ReplicaKeys": [{"Arn": self.arn_in(r), "Region": r} for r in self.multi_region["replicas"]]}

    def algorithms(self) -> dict[str, list[str]]:
        """The algorithm lists AWS includes in KeyMetadata and GetPublicKey for this key."""
        if self.key_usage == "ENCRYPT_DECRYPT":
            return {"EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"] if self.symmetric else RSA_ENCRYPTION}
        if self.key_usage == "SIGN_VERIFY":
            return {"SigningAlgorithms": RSA_SIGNING if self.key_spec in RSA_BITS else [EC_SIGNING[self.key_spec]]}
        return {"MacAlgorithms": [f"HMAC_SHA_{self.key_spec.split('_')[1]}"]}
