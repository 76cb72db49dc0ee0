"""What the gateway does about Ceph RGW's ways (unit level; test_e2e_upstreams.py runs them on RGW itself):
empty error Messages filled in, an empty Complete ETag never reported as it is, nor replaced by a wrong one."""
from __future__ import annotations

import hashlib

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.crypto.multipart import Manifest, ManifestPart
from gateway.objects.multipart import MultipartWriter, multipart_etag
from gateway.s3client import CompleteResult, ObjectHead, UpstreamError
from gateway.s3errors import S3Error, from_upstream, with_message

RGW_NO_SUCH_KEY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message></Message>'
                   b'<BucketName>b</BucketName><RequestId>tx0</RequestId><HostId>h</HostId></Error>')


def test_an_empty_message_gets_s3s_message_for_the_code_and_the_rest_stays():
    filled = with_message(RGW_NO_SUCH_KEY, 404)
    assert b"<Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><BucketName>b</BucketName>" \
        in filled
    assert from_upstream(404, RGW_NO_SUCH_KEY).message == "The specified key does not exist."


def test_a_missing_message_of_an_unknown_code_names_code_and_status():
    filled = with_message(b"<Error><Code>XAmzContentSHA256Mismatch</Code></Error>", 400)
    assert b"<Message>The upstream store answered 400 XAmzContentSHA256Mismatch.</Message>" in filled


@pytest.mark.parametrize("body", [b"<Error><Code>NoSuchKey</Code><Message>mine</Message></Error>",
                                  b"<html>502</html>", b""])
def test_a_message_given_or_a_body_that_is_no_error_document_is_left_alone(body):
    assert with_message(body, 404) == body


def test_multipart_etag_is_the_md5_of_the_part_md5s_and_the_count():
    parts = [hashlib.md5(b"one").hexdigest(), f'"{hashlib.md5(b"two").hexdigest()}"']
    digest = hashlib.md5(hashlib.md5(b"one").digest() + hashlib.md5(b"two").digest()).hexdigest()
    assert multipart_etag(parts) == f'"{digest}-2"'
    assert multipart_etag(["not-an-md5", parts[0]]) is None


class _HeadShows:
    """An upstream whose HEAD shows ``head`` (or answers 404)."""

    def __init__(self, head: ObjectHead | None) -> None:
        self.head = head

    async def head_object(self, bucket, key, **kwargs):
        if self.head is None:
            raise UpstreamError(404)
        return self.head


MANIFEST = Manifest((ManifestPart(1, 5 * 1024 * 1024), ManifestPart(2, 10)))
EMPTY = CompleteResult(etag="", version_id=None, headers=CIMultiDictProxy(CIMultiDict()))
OTHER = ObjectHead(etag='"0123456789abcdef0123456789abcdef"', size=5, last_modified=None, version_id=None,
                   headers=CIMultiDictProxy(CIMultiDict()))
PART_ETAGS = [hashlib.md5(b"1").hexdigest(), hashlib.md5(b"2").hexdigest()]


@pytest.mark.parametrize("head", [OTHER, None], ids=["overwritten", "deleted"])
async def test_an_empty_complete_etag_when_the_object_shows_another_is_the_parts_multipart_etag(head):
    writer = MultipartWriter(_HeadShows(head), None, None, None)  # type: ignore[arg-type]
    result = await writer._filled_etag("b", "k", "tag", MANIFEST, EMPTY, PART_ETAGS)
    assert result.etag == multipart_etag(PART_ETAGS)


async def test_an_empty_complete_etag_that_cannot_be_known_is_a_500_not_a_wrong_etag():
    writer = MultipartWriter(_HeadShows(OTHER), None, None, None)  # type: ignore[arg-type]
    with pytest.raises(S3Error) as caught:
        await writer._filled_etag("b", "k", "tag", MANIFEST, EMPTY, ["kms-etag-1", "kms-etag-2"])
    assert (caught.value.status, caught.value.code) == (500, "InternalError")
