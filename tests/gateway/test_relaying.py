"""What the gateway relays of an upstream answer: never its own reserved metadata, on any path."""
from multidict import CIMultiDict

from gateway.handlers.relaying import response_headers


def test_reserved_metadata_is_never_relayed_whatever_the_caller_drops() -> None:
    upstream = CIMultiDict({"X-Amz-Meta-X-Gw-K": "sealed", "x-amz-meta-x-gw-v": "1", "x-amz-meta-team": "red",
                            "Content-Type": "text/plain", "x-amz-request-id": "upstream-id",
                            "x-amz-version-id": "null"})
    assert response_headers(upstream) == {"x-amz-meta-team": "red", "Content-Type": "text/plain"}
    assert response_headers(upstream, drop=("content-type",)) == {"x-amz-meta-team": "red"}
