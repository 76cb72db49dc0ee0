"""What the root key guarantees about every key-store row, whichever database holds it.

Secrets (key material, private keys, import wrapping keys, token PINs) are AES-256-GCM-sealed under the
root key with the row identity ("table|identity") as AAD, as they always were: a secret copied onto
another row does not unwrap.

Everything else in a row -- a key's state, policy and rotation settings, an alias's target, a grant, a
tag, a backing key's date -- is readable JSON, and is authenticated by an HMAC-SHA256 under a key
derived from the root key (HKDF, its own purpose label), over the table, the row identity and the text
exactly as stored. Whoever can write the database but does not hold the root key cannot forge a row:
re-enabling a disabled key, loosening a policy, pointing an alias elsewhere or adding a grant makes the
row fail its MAC, and the store refuses it (``RowTampered``, logged). What the MAC cannot tell is an
older genuine version of the same row put back (a restore of that row from a backup): it detects
forgery, not rollback.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from common.aead import Aead, AuthenticationFailed, derive


class StoreCorruption(Exception):
    """A wrapped secret failed to unwrap, or a row failed its MAC: wrong root key or a tampered row."""


class RowTampered(StoreCorruption):
    """A row's MAC does not match its content: written by someone without the root key."""

    def __init__(self, table: str, identity: str) -> None:
        super().__init__(f"{table} row {identity} fails its integrity check (MAC): changed outside the key "
                         "service, or written under another root key; refused")
        self.table = table
        self.identity = identity


class RowSealer:
    """Seals secrets and MACs metadata under keys derived from (or equal to) the root key."""

    def __init__(self, root_key: bytes) -> None:
        self._aead = Aead(root_key)
        self._mac_key = derive(root_key, salt=None, info=b"key-store-row-mac")

    # --- secrets: nonce || AES-256-GCM(root key), AAD "table|identity" (the layout stores have always had)
    def wrap(self, table: str, identity: str, secret: bytes) -> bytes:
        return self._aead.seal(secret, f"{table}|{identity}".encode())

    def unwrap(self, table: str, identity: str, wrapped: bytes) -> bytes:
        try:
            return self._aead.open(wrapped, f"{table}|{identity}".encode())
        except AuthenticationFailed as exc:
            raise StoreCorruption(f"cannot unwrap {table} row {identity}") from exc

    # --- metadata ------------------------------------------------------------------------------
    def mac(self, table: str, identity: str, text: str) -> bytes:
        """HMAC-SHA256 of the row's text bound to its table and identity (length-prefixed: unambiguous)."""
        message = f"{len(table)}:{table}{len(identity)}:{identity}".encode() + text.encode()
        return hmac.new(self._mac_key, message, hashlib.sha256).digest()

    def seal_meta(self, table: str, identity: str, meta: Any) -> tuple[str, bytes]:
        """The JSON text to store for ``meta`` and its MAC."""
        text = json.dumps(meta)
        return text, self.mac(table, identity, text)

    def check(self, table: str, identity: str, text: str, mac: bytes | None) -> str:
        """``text`` if ``mac`` authenticates it, else RowTampered (a missing MAC included)."""
        if mac is None or not hmac.compare_digest(bytes(mac), self.mac(table, identity, text)):
            raise RowTampered(table, identity)
        return text

    def open_meta(self, table: str, identity: str, text: str, mac: bytes | None) -> Any:
        """The metadata of a row whose MAC authenticates it, else RowTampered."""
        return json.loads(self.check(table, identity, text, mac))
