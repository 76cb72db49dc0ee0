"""What the gateway relays of an upstream answer: never its own reserved metadata, on any path."""
from multidict import CIMultiDict

from gateway.handlers.relaying import response_headers


def test_reserved_metadata_is_never_relayed_whatever_the_caller_drops() -> None:
    upstream = CIMultiDict({"X-Amz-Meta-X-Gw-K": "sealed", "x-amz-meta-x-gw-v": "1", "x-amz-meta-team": "red",
                            "Content-Type": "text/plain", "x-amz-request-id": "upstream-id",
                            "x-amz-version-id": "null"})
    assert response_headers(upstream) == {"x-amz-meta-team": "red", "Content-Type": "text/plain"}
    assert response_headers(upstream, drop=("content-type",)) == {"x-amz-meta-team": "red"}


def test_only_the_upstreams_own_errors_are_relayed_as_they_are() -> None:
    """An object that changed while it was read, a body too long, or a success answer that is not the
    one asked for are the gateway's errors (UpstreamError.s3_error), never relayed with their headers."""
    from aiohttp.test_utils import make_mocked_request

    from gateway.handlers.relaying import upstream_error_answer
    from gateway.s3client import BodyTooLarge, ObjectChanged, UpstreamError

    request = make_mocked_request("GET", "/b/k")
    error = b'<?xml version="1.0"?><Error><Code>NoSuchKey</Code><Message>m</Message></Error>'
    relayed = upstream_error_answer(request, "RID", UpstreamError(404, error, {"x-amz-delete-marker": "true"}))
    assert (relayed.status, relayed.body, relayed.headers["x-amz-delete-marker"]) == (404, error, "true")
    assert upstream_error_answer(request, "RID", UpstreamError(200, error)).status == 200  # S3's late failure
    for own in (ObjectChanged(412, b"", {"ETag": '"e"'}), BodyTooLarge(206, b"", {"Content-Range": "bytes 0-1/9"}),
                UpstreamError(206, b"", {"Content-Range": "bytes 0-1/9"})):
        assert upstream_error_answer(request, "RID", own) is None
    assert ObjectChanged(412).s3_error().status == 500
