"""The key service deployments of other regions (peers) and how key material travels between them.

A peer is configured as a ``[[keyservice.peers]]`` table (``region``, ``endpoint``, ``access_key``,
``secret_key``: a credential of that peer's account root *on that peer*), or through
KEYSERVICE_PEER_<REGION>_ENDPOINT / _ACCESS_KEY / _SECRET_KEY (REGION upper-cased, ``-`` as ``_``).
Calls to a peer are KMS JSON calls signed with SigV4 for its region, as any KMS client signs them.

Key material is sent only sealed (docs/KMS-BLOB.md, "Multi-region replication"):

    salt  = 32 fresh random bytes
    K     = HKDF-SHA256(ikm = secret_key of the credential the call is signed with, salt,
                        info = "s3gw-kms multi-region replication v1")
    AAD   = canonical JSON {"account", "key_id", "source_region", "replica_region"}
    sealed = AES-256-GCM(K, nonce, JSON of the backing keys, AAD)

Both ends know that secret (the sender from its peer table, the receiver from its own credentials), so
only a configured peer can seal material a deployment accepts, and a sealed payload opens only for the
key, account and pair of regions it was made for.
"""
from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from common.aead import Aead, AuthenticationFailed

from .errors import KMSError
from .namedtables import env_fields, string_fields

SALT_BYTES = 32
_INFO = b"s3gw-kms multi-region replication v1"
_ENV_PREFIX = "KEYSERVICE_PEER_"
_ENV_FIELDS = {"_ENDPOINT": "endpoint", "_ACCESS_KEY": "access_key", "_SECRET_KEY": "secret_key"}
PEER_TIMEOUT = 15.0


class PeerConfigError(ValueError):
    """A peer table or variable cannot be used."""


@dataclass(frozen=True)
class Peer:
    """The key service of another region and the credential this deployment calls it with."""

    region: str
    endpoint: str
    access_key: str
    secret_key: str


def parse_peers(entries: Any) -> dict[str, Peer]:
    """``[[keyservice.peers]]`` tables by region; each needs every field, and one table per region."""
    if not isinstance(entries, list):
        raise PeerConfigError("[[keyservice.peers]] must be an array of tables")
    peers: dict[str, Peer] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise PeerConfigError("[[keyservice.peers]] must be an array of tables")
        values = string_fields(
            entry, ("region", "endpoint", "access_key", "secret_key"),
            lambda extra: PeerConfigError(f"unknown [[keyservice.peers]] settings: {', '.join(extra)}"),
            lambda name: PeerConfigError(f"peers.{name} must be a non-empty string"))
        peer = _checked(Peer(**values))
        if peer.region in peers:
            raise PeerConfigError(f"two [[keyservice.peers]] tables for region {peer.region}")
        peers[peer.region] = peer
    return peers


def apply_peer_env(peers: Mapping[str, Peer], env: Mapping[str, str]) -> dict[str, Peer]:
    """KEYSERVICE_PEER_<REGION>_ENDPOINT / _ACCESS_KEY / _SECRET_KEY over the tables; a region no table
    names needs all three."""
    fields: dict[str, dict[str, str]] = {}
    for written, values in env_fields(env, _ENV_PREFIX, _ENV_FIELDS).items():
        fields.setdefault(written.lower().replace("_", "-"), {}).update(values)
    merged = dict(peers)
    for region, values in fields.items():
        current = merged.get(region)
        if current is None:
            missing = sorted(set(_ENV_FIELDS.values()) - set(values))
            if missing:
                raise PeerConfigError(f"peer {region}: {', '.join(missing)} must be set too "
                                      f"({_ENV_PREFIX}{region.upper().replace('-', '_')}_...)")
            merged[region] = _checked(Peer(region, **values))
        else:
            merged[region] = _checked(replace(current, **values))
    return merged


def _checked(peer: Peer) -> Peer:
    if not peer.endpoint.startswith(("http://", "https://")):
        raise PeerConfigError(f"peer {peer.region}: endpoint must be an http:// or https:// URL")
    return peer


# --- sealing material for one replica --------------------------------------------------------
def binding(account: str, key_id: str, source_region: str, replica_region: str) -> bytes:
    """The AAD a sealed payload is bound to."""
    return json.dumps({"account": account, "key_id": key_id, "source_region": source_region,
                       "replica_region": replica_region}, sort_keys=True, separators=(",", ":")).encode()


def seal(secret_key: str, aad: bytes, payload: Any) -> dict[str, str]:
    """``payload`` (JSON-able) sealed under the key derived from the peer credential's secret."""
    salt = os.urandom(SALT_BYTES)
    sealed = Aead.derived(secret_key.encode(), salt=salt, info=_INFO).seal(json.dumps(payload).encode(), aad)
    return {"Salt": base64.b64encode(salt).decode(), "Sealed": base64.b64encode(sealed).decode()}


def unseal(secret_key: str, aad: bytes, fields: Any) -> Any:
    """What ``seal`` sealed; anything else (another secret, key, region, altered bytes) is refused."""
    try:
        salt = base64.b64decode(fields["Salt"], validate=True)
        sealed = base64.b64decode(fields["Sealed"], validate=True)
        plain = Aead.derived(secret_key.encode(), salt=salt, info=_INFO).open(sealed, aad)
        return json.loads(plain)
    except (AuthenticationFailed, KeyError, TypeError, ValueError) as exc:
        raise KMSError("AccessDeniedException", "The replicated key material does not authenticate: it was "
                                                "not sealed by a configured peer for this key and region.") from exc


# --- calling a peer --------------------------------------------------------------------------
def call_peer(peer: Peer, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """One KMS JSON call to a peer, SigV4-signed with its credential (blocking: run it in a thread).
    The peer's KMS error is raised as that error; an unreachable peer as KMSInternalException."""
    body = json.dumps(params).encode()
    request = AWSRequest(method="POST", url=peer.endpoint.rstrip("/") + "/", data=body,
                         headers={"Content-Type": "application/x-amz-json-1.1",
                                  "X-Amz-Target": f"TrentService.{operation}"})
    SigV4Auth(Credentials(peer.access_key, peer.secret_key), "kms", peer.region).add_auth(request)
    http_request = urllib.request.Request(request.url, data=body, method="POST",
                                          headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(http_request, timeout=PEER_TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())
            kind, message = error["__type"], error.get("message", "")
        except (ValueError, KeyError, TypeError, OSError):
            kind, message = "KMSInternalException", f"HTTP {exc.code}"
        raise KMSError(kind, f"the key service of {peer.region} refused: {message}",
                       500 if kind == "KMSInternalException" else 400) from None
    except (OSError, ValueError) as exc:
        raise KMSError("KMSInternalException", f"The key service of {peer.region} could not be reached: "
                                               f"{type(exc).__name__}", 500) from None
