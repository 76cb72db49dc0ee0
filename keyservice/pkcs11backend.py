"""PKCS#11 tokens, the home of a custom key store's key material (python-pkcs11 over the token's library).

A custom key store (keyservice/customkeystores.py) is one token, named in the configuration as a
``[keyservice.pkcs11.NAME]`` table (``module``: the token's PKCS#11 library, ``token_label``); NAME is
the store's ``CloudHsmClusterId``. Connecting opens one read-write session logged in with the user PIN.
Every KMS key of the store is an AES-256 secret key generated in the token, sensitive and never
extractable, labelled with the key id and identified (CKA_ID) by its backing key id; AES-GCM runs in the
token (CKM_AES_GCM), so the key service never holds the material. ``TokenKey`` gives such a key the
``seal``/``open`` shape of ``common.aead.Aead`` (nonce || ciphertext || tag), so the ciphertext blob
(keyservice/blob.py) is built exactly as for a key kept in the store.

python-pkcs11 is imported on first connect: a key service with no custom key store needs neither it
nor a PKCS#11 library (``pip install '.[hsm]'``).
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from common.aead import NONCE_SIZE, OVERHEAD, AuthenticationFailed
from keyservice.namedtables import env_fields, string_fields

log = logging.getLogger(__name__)

# AWS's model of CloudHsmClusterId (botocore: 19-24 characters, "cluster-[2-7a-zA-Z]{11,16}"): the SDKs
# and the aws CLI send nothing else, so a token table's name must have this form to be reachable at all.
TOKEN_NAME_RE = re.compile(r"^cluster-[2-7a-zA-Z]{11,16}$")
_ENV_PREFIX = "KEYSERVICE_PKCS11_"
_ENV_FIELDS = {"_MODULE": "module", "_TOKEN_LABEL": "token_label"}
AES_KEY_BITS = 256
GCM_TAG_BITS = 128


class TokenConfigError(ValueError):
    """A ``[keyservice.pkcs11.NAME]`` table or KEYSERVICE_PKCS11_* variable cannot be used."""


class TokenError(Exception):
    """Connecting to a token failed; ``code`` is AWS's ConnectionErrorCode for it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TokenOperationFailed(Exception):
    """A connected token could not carry out an operation (removed, session lost, key missing)."""


@dataclass(frozen=True)
class TokenConfig:
    """One configured token: the PKCS#11 library that drives it and the label it is found by."""

    name: str
    module: str
    token_label: str


# --- configuration ---------------------------------------------------------------------------
def parse_tokens(table: Any) -> dict[str, TokenConfig]:
    """The ``[keyservice.pkcs11.NAME]`` tables: NAME -> its token."""
    if not isinstance(table, dict):
        raise TokenConfigError("[keyservice.pkcs11] must be a table of [keyservice.pkcs11.NAME] tables")
    tokens = {}
    for name, entry in table.items():
        _check_name(name, f"[keyservice.pkcs11.{name}]")
        if not isinstance(entry, dict):
            raise TokenConfigError(f"[keyservice.pkcs11.{name}] must be a table")
        values = string_fields(
            entry, ("module", "token_label"),
            lambda extra: TokenConfigError(f"unknown [keyservice.pkcs11.{name}] settings: {', '.join(extra)}"),
            lambda key: TokenConfigError(f"[keyservice.pkcs11.{name}] {key} must be a non-empty string"))
        tokens[name] = TokenConfig(name, values["module"], values["token_label"])
    return tokens


def apply_token_env(tokens: Mapping[str, TokenConfig], env: Mapping[str, str]) -> dict[str, TokenConfig]:
    """KEYSERVICE_PKCS11_<NAME>_MODULE and KEYSERVICE_PKCS11_<NAME>_TOKEN_LABEL over the tables.

    <NAME> is the table name upper-cased with its dash as an underscore (``cluster-softhsmtest`` ->
    ``CLUSTER_SOFTHSMTEST``); a NAME no table has defines a token named ``cluster-`` + the rest
    lower-cased, which then needs both variables."""
    by_env_name = {_env_name(name): name for name in tokens}
    fields = env_fields(env, _ENV_PREFIX, _ENV_FIELDS)
    merged = dict(tokens)
    for env_name, values in fields.items():
        name = by_env_name.get(env_name) or _name_of_env(env_name)
        current = merged.get(name)
        if current is None:
            missing = [f"{_ENV_PREFIX}{env_name}{s}" for s, f in _ENV_FIELDS.items() if f not in values]
            if missing:
                raise TokenConfigError(f"token {name}: {' and '.join(missing)} must be set too")
            merged[name] = TokenConfig(name, values["module"], values["token_label"])
        else:
            merged[name] = replace(current, **values)
    return merged


def _check_name(name: str, where: str) -> None:
    if not TOKEN_NAME_RE.match(name):
        raise TokenConfigError(f"{where}: the name is the CloudHsmClusterId clients give, which AWS's model "
                               "restricts to cluster-[2-7a-zA-Z]{11,16} (e.g. cluster-softhsmtoken)")


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def _name_of_env(env_name: str) -> str:
    head, _, rest = env_name.partition("_")
    name = f"{head.lower()}-{rest.lower()}"
    _check_name(name, f"{_ENV_PREFIX}{env_name}_*")
    return name


# --- sessions --------------------------------------------------------------------------------
class TokenConnection:
    """A session on one token, logged in as its user; every call runs on the key service's thread."""

    def __init__(self, config: TokenConfig, session: Any) -> None:
        self.config = config
        self._session = session
        self._keys: dict[tuple[str, str], Any] = {}

    @classmethod
    def login(cls, config: TokenConfig, pin: str) -> "TokenConnection":
        """Log in to the token ``config`` names; ``TokenError`` (with AWS's ConnectionErrorCode) if not."""
        try:
            import pkcs11
        except ImportError:
            raise TokenError("INTERNAL_ERROR", "python-pkcs11 is not installed (pip install '.[hsm]')") from None
        try:
            lib = pkcs11.lib(config.module)
        except (pkcs11.PKCS11Error, OSError) as exc:
            raise TokenError("CLUSTER_NOT_FOUND", f"cannot load the PKCS#11 module {config.module}: {exc}") from None
        try:
            token = lib.get_token(token_label=config.token_label)
            session = token.open(user_pin=pin, rw=True)
        except pkcs11.NoSuchToken:
            raise TokenError("CLUSTER_NOT_FOUND", f"no token labelled {config.token_label!r} in "
                                                  f"{config.module}") from None
        except pkcs11.MultipleTokensReturned:
            raise TokenError("CLUSTER_NOT_FOUND", f"several tokens labelled {config.token_label!r}") from None
        except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange):
            raise TokenError("INVALID_CREDENTIALS", "the token refused the key store password") from None
        except pkcs11.PinLocked:
            raise TokenError("USER_LOCKED_OUT", "the token's user PIN is locked") from None
        except (pkcs11.UserPinNotInitialized, pkcs11.PinExpired):
            raise TokenError("USER_NOT_FOUND", "the token's user PIN is not initialised or has expired") from None
        except (pkcs11.UserAlreadyLoggedIn, pkcs11.AnotherUserAlreadyLoggedIn):
            raise TokenError("USER_LOGGED_IN", "a user is already logged in to the token") from None
        except (pkcs11.TokenNotPresent, pkcs11.DeviceRemoved, pkcs11.DeviceError, pkcs11.TokenNotRecognised):
            raise TokenError("NETWORK_ERRORS", f"the token {config.token_label!r} is not reachable") from None
        except pkcs11.PKCS11Error as exc:
            raise TokenError("INTERNAL_ERROR", f"the token failed: {type(exc).__name__}") from None
        return cls(config, session)

    def close(self) -> None:
        """Close the session (the token logs the user out with its last session)."""
        self._keys.clear()
        try:
            self._session.close()
        except Exception as exc:  # a token already gone: nothing is left to close
            log.warning("closing the session on token %s failed: %s", self.config.token_label, exc)

    def generate_key(self, key_id: str, backing_id: str) -> None:
        """A new AES-256 key in the token: persistent, private, sensitive, never extractable, for
        encryption and decryption only."""
        import pkcs11
        from pkcs11 import Attribute, KeyType, MechanismFlag
        template = {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False, Attribute.WRAP: False, Attribute.UNWRAP: False,
                    Attribute.SIGN: False, Attribute.VERIFY: False, Attribute.DERIVE: False}
        try:
            key = self._session.generate_key(KeyType.AES, AES_KEY_BITS, id=bytes.fromhex(backing_id), label=key_id,
                                             store=True, capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                                             template=template)
        except pkcs11.PKCS11Error as exc:
            raise TokenOperationFailed(f"the token could not generate a key: {type(exc).__name__}") from None
        self._keys[(key_id, backing_id)] = key

    def _key(self, key_id: str, backing_id: str) -> Any:
        key = self._keys.get((key_id, backing_id))
        if key is None:
            import pkcs11
            from pkcs11 import KeyType, ObjectClass
            try:
                key = self._session.get_key(object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES,
                                            label=key_id, id=bytes.fromhex(backing_id))
            except pkcs11.NoSuchKey:
                raise TokenOperationFailed(f"the token holds no key {key_id}") from None
            except pkcs11.PKCS11Error as exc:
                raise TokenOperationFailed(f"the token failed: {type(exc).__name__}") from None
            self._keys[(key_id, backing_id)] = key
        return key

    def seal(self, key_id: str, backing_id: str, plaintext: bytes, aad: bytes) -> bytes:
        """nonce(12) || AES-256-GCM ciphertext || tag(16), computed by the token."""
        import pkcs11
        from pkcs11 import GCMParams, Mechanism
        nonce = os.urandom(NONCE_SIZE)
        try:
            sealed = self._key(key_id, backing_id).encrypt(
                plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad, GCM_TAG_BITS))
        except pkcs11.PKCS11Error as exc:
            raise TokenOperationFailed(f"the token could not encrypt: {type(exc).__name__}") from None
        return nonce + bytes(sealed)

    def open(self, key_id: str, backing_id: str, sealed: bytes, aad: bytes) -> bytes:
        """The plaintext of ``seal``'s output, or ``AuthenticationFailed`` (the token refused the tag)."""
        import pkcs11
        from pkcs11 import GCMParams, Mechanism
        if len(sealed) < OVERHEAD:
            raise AuthenticationFailed("too short")
        key = self._key(key_id, backing_id)
        try:
            return bytes(key.decrypt(bytes(sealed[NONCE_SIZE:]), mechanism=Mechanism.AES_GCM,
                                     mechanism_param=GCMParams(bytes(sealed[:NONCE_SIZE]), aad, GCM_TAG_BITS)))
        except (pkcs11.EncryptedDataInvalid, pkcs11.EncryptedDataLenRange, pkcs11.GeneralError,
                pkcs11.FunctionFailed, pkcs11.DataInvalid, pkcs11.DataLenRange) as exc:
            # SoftHSM2 reports a wrong tag as CKR_GENERAL_ERROR, others as CKR_ENCRYPTED_DATA_INVALID
            raise AuthenticationFailed(f"the token refused the ciphertext: {type(exc).__name__}") from None
        except pkcs11.PKCS11Error as exc:
            raise TokenOperationFailed(f"the token could not decrypt: {type(exc).__name__}") from None

    def destroy_key(self, key_id: str) -> int:
        """Destroy every object labelled ``key_id`` (the key's material); how many there were."""
        import pkcs11
        from pkcs11 import Attribute
        try:
            found = list(self._session.get_objects({Attribute.LABEL: key_id}))
            for obj in found:
                obj.destroy()
        except pkcs11.PKCS11Error as exc:
            raise TokenOperationFailed(f"the token could not destroy {key_id}: {type(exc).__name__}") from None
        self._keys = {k: v for k, v in self._keys.items() if k[0] != key_id}
        return len(found)

    def holds(self, key_id: str) -> bool:
        """Whether the token has a secret key labelled ``key_id``."""
        import pkcs11
        from pkcs11 import Attribute, ObjectClass
        try:
            return any(True for _ in self._session.get_objects({Attribute.LABEL: key_id,
                                                                Attribute.CLASS: ObjectClass.SECRET_KEY}))
        except pkcs11.PKCS11Error as exc:
            raise TokenOperationFailed(f"the token could not be searched: {type(exc).__name__}") from None

    def key_attributes(self, key_id: str, backing_id: str) -> dict[str, bool]:
        """What the token says about a key's protection (CKA_SENSITIVE, CKA_EXTRACTABLE, ...)."""
        from pkcs11 import Attribute
        key = self._key(key_id, backing_id)
        return {name: bool(key[attr]) for name, attr in (
            ("sensitive", Attribute.SENSITIVE), ("extractable", Attribute.EXTRACTABLE),
            ("always_sensitive", Attribute.ALWAYS_SENSITIVE), ("never_extractable", Attribute.NEVER_EXTRACTABLE),
            ("token", Attribute.TOKEN), ("private", Attribute.PRIVATE))}

    def random(self, size: int) -> bytes:
        """``size`` bytes from the token's random number generator."""
        import pkcs11
        try:
            return bytes(self._session.generate_random(size * 8))
        except pkcs11.PKCS11Error as exc:
            raise TokenOperationFailed(f"the token could not generate random bytes: {type(exc).__name__}") from None
