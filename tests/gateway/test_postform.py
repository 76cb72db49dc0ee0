"""The POST object form reader (gateway/postform.py) on its own: fields before the file, the file's size from
Content-Length, the file streamed and checked to end the form, and the malformed forms S3 refuses."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import AsyncIterator

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.handlers.post_object import is_form_upload, object_headers
from gateway.postform import MAX_FIELDS_SIZE, PostForm, is_form, read_form
from gateway.s3errors import S3Error
from tests.support.properties import BOUNDED

BOUNDARY = "XyZ"
FILE = b"line one --XyZ in a line\r\n- -XyZ\r\n\r\n" + bytes(range(256)) * 300


def _form(parts: list[tuple[str, bytes]], ending: bytes = b"--\r\n", boundary: str = BOUNDARY) -> bytes:
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
                    + (b'; filename="photo.jpg"\r\nContent-Type: image/jpeg' if name.lower() == "file" else b"")
                    + b"\r\n\r\n" + value + b"\r\n" for name, value in parts)
    return body + f"--{boundary}".encode() + ending


def _request(body: bytes, length: int | None = None, boundary: str = BOUNDARY):
    """What read_form reads of the request: its headers (the body comes as chunks)."""
    return SimpleNamespace(headers=CIMultiDict({"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                "Content-Length": str(len(body) if length is None else length)}))


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


async def _read(body: bytes, size: int = 4096, **request) -> tuple[PostForm, bytes]:
    form = await read_form(_request(body, **request), _chunks(body, size))
    return form, b"".join([chunk async for chunk in form.file_chunks()])


async def _refused(body: bytes, size: int = 4096, **request) -> tuple[str, int, bytes]:
    """The error, and the file bytes handed on before it."""
    got = b""
    with pytest.raises(S3Error) as caught:
        form = await read_form(_request(body, **request), _chunks(body, size))
        async for chunk in form.file_chunks():
            got += chunk
    return caught.value.code, caught.value.status, got


@pytest.mark.parametrize("size", [1, 7, 100, 64 * 1024])
async def test_fields_are_read_lower_case_and_the_file_streams_with_its_size_from_content_length(size):
    body = _form([("Key", b"up/${filename}"), ("X-Amz-Meta-Note", "caf\u00e9".encode()), ("file", FILE)])
    form, data = await _read(body, size)
    assert (form.fields, form.filename, form.length, data) == (
        {"key": "up/${filename}", "x-amz-meta-note": "caf\u00e9"}, "photo.jpg", len(FILE), FILE)


async def test_a_quoted_boundary_is_the_boundary():
    body = _form([("key", b"k"), ("file", FILE)], boundary="a b:c")
    form, data = await _read(body, boundary='"a b:c"')
    assert (form.length, data) == (len(FILE), FILE)


async def test_an_empty_file_is_a_file_of_size_zero():
    form, data = await _read(_form([("key", b"k"), ("file", b"")]))
    assert (form.length, data) == (0, b"")


@pytest.mark.parametrize("size", [1, 100, 4096])
async def test_a_field_after_the_file_is_malformed_before_the_files_last_bytes_are_handed_on(size):
    code, status, got = await _refused(_form([("key", b"k"), ("file", FILE), ("submit", b"Upload")]), size)
    assert (code, status) == ("MalformedPOSTRequest", 400)
    assert len(got) < len(FILE)


async def test_a_form_not_ending_in_crlf_or_cut_short_is_malformed():
    assert (await _refused(_form([("key", b"k"), ("file", FILE)], ending=b"--")))[:2] == ("MalformedPOSTRequest", 400)
    whole = _form([("key", b"k"), ("file", FILE)])
    cut = whole[:len(whole) // 2]
    assert (await _refused(cut, length=len(whole)))[:2] == ("MalformedPOSTRequest", 400)


async def test_a_form_without_a_file_is_400_invalid_argument():
    assert (await _refused(_form([("key", b"k"), ("policy", b"p")])))[:2] == ("InvalidArgument", 400)


async def test_a_body_without_content_length_is_411():
    body = _form([("key", b"k"), ("file", b"x")])
    headers = CIMultiDict({"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    with pytest.raises(S3Error) as caught:
        await read_form(SimpleNamespace(headers=headers), _chunks(body, 10))
    assert (caught.value.code, caught.value.status) == ("MissingContentLength", 411)


@pytest.mark.parametrize("body", [b"no boundary anywhere", b"--XyZ\r\nno headers end", b"--XyZ\r\n\r\nvalue\r\n--XyZ--\r\n",
                                  b"--XyZ\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n\xff\xfe\r\n--XyZ--\r\n"])
async def test_a_body_that_is_not_a_well_formed_form_is_400_malformed_post_request(body):
    assert (await _refused(body))[:2] == ("MalformedPOSTRequest", 400)


async def test_fields_before_the_file_over_20_kb_are_400_max_post_pre_data_length_exceeded():
    many = [(f"x-ignore-{n}", b"v" * 1000) for n in range(25)]
    assert (await _refused(_form([*many, ("file", b"x")])))[:2] == ("MaxPostPreDataLengthExceededError", 400)
    one = [("x-ignore-big", b"v" * (MAX_FIELDS_SIZE + 1))]
    assert (await _refused(_form([*one, ("file", b"x")])))[:2] == ("MaxPostPreDataLengthExceededError", 400)


def test_only_multipart_form_data_is_a_form():
    assert is_form("multipart/form-data; boundary=x") and is_form("Multipart/Form-Data;boundary=x")
    assert not is_form("multipart/mixed; boundary=x") and not is_form("application/x-www-form-urlencoded")
    assert not is_form("")


@pytest.mark.parametrize("method, path, expected", [
    ("POST", "/bkt", True), ("POST", "/bkt/", True), ("POST", "/bkt?delete", False), ("POST", "/bkt/key", False),
    ("PUT", "/bkt", False), ("POST", "/", False)])
def test_a_form_upload_is_a_form_post_to_a_bucket_without_sub_resource(method, path, expected):
    request = make_mocked_request(method, path, headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert is_form_upload(request, request.rel_url.raw_path) is expected
    plain = make_mocked_request(method, path, headers={"Content-Type": "application/xml"})
    assert is_form_upload(plain, plain.rel_url.raw_path) is False


def test_only_the_fields_that_describe_the_object_become_its_headers():
    fields = {"key": "k", "policy": "p", "content-type": "text/plain", "cache-control": "no-cache", "acl": "private",
              "x-amz-meta-a": "1", "x-amz-server-side-encryption": "aws:kms", "x-amz-storage-class": "STANDARD",
              "x-amz-server-side-encryption-customer-key": "K", "x-amz-date": "20260101T000000Z",
              "x-amz-credential": "c", "x-amz-signature": "s", "x-amz-copy-source": "/other/object",
              "if-none-match": "*", "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "success_action_status": "201"}
    assert dict(object_headers(fields)) == {
        "content-type": "text/plain", "cache-control": "no-cache", "x-amz-acl": "private", "x-amz-meta-a": "1",
        "x-amz-server-side-encryption": "aws:kms", "x-amz-storage-class": "STANDARD",
        "x-amz-server-side-encryption-customer-key": "K"}


# ---------------------------------------------------------------- any input


async def _split_chunks(body: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(set(c % (len(body) + 1) for c in cuts)):
        if cut > start:
            yield body[start:cut]
            start = cut
    if start < len(body):
        yield body[start:]


@BOUNDED
@given(st.binary(max_size=3000), st.dictionaries(st.text("abcxyz-", min_size=1, max_size=6), st.binary(max_size=40),
                                                 max_size=3), st.lists(st.integers(0, 4000), max_size=10))
def test_a_well_formed_form_yields_its_fields_and_exact_file_under_any_read_split(data, fields, cuts):
    body = _form([*fields.items(), ("file", data)], boundary="b0undary")
    assume(b"\r\n--b0undary" not in data and all(b"\r\n--b0undary" not in v for v in fields.values()))
    assume(all(v.decode("utf-8", "ignore") == v.decode("utf-8", "replace") for v in fields.values()))

    async def read() -> tuple[PostForm, bytes]:
        form = await read_form(_request(body, boundary="b0undary"), _split_chunks(body, cuts))
        return form, b"".join([chunk async for chunk in form.file_chunks()])

    form, got = asyncio.run(read())
    assert (form.fields, got) == ({k.lower(): v.decode() for k, v in fields.items()}, data)


@BOUNDED
@given(st.binary(max_size=400), st.lists(st.integers(0, 500), max_size=6), st.integers(0, 600))
@example(b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc\r\n--b--\r\n', [], 0)
def test_any_body_reads_as_a_form_or_raises_an_s3_error(body, cuts, declared):
    async def read() -> bytes:
        form = await read_form(_request(body, length=declared, boundary="b"), _split_chunks(body, cuts))
        return b"".join([chunk async for chunk in form.file_chunks()])

    try:
        got = asyncio.run(read())
    except S3Error as exc:
        assert exc.status in (400, 411)
    else:
        assert len(got) <= len(body)
