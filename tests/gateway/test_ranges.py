"""gateway/ranges.py: Range, x-amz-copy-source-range and partNumber parsed as S3 parses them."""
from __future__ import annotations

import pytest

from gateway.ranges import (RangeNotSatisfiable, parse_copy_range, parse_part_number, parse_range_header,
                            requested_range)
from gateway.s3errors import S3Error


@pytest.mark.parametrize("header, size, expected", [
    ("bytes=0-99", 1000, (0, 99)),
    ("bytes=900-", 1000, (900, 999)),
    ("bytes=-100", 1000, (900, 999)),
    ("bytes=-5000", 1000, (0, 999)),
    ("bytes=500-5000", 1000, (500, 999)),
    (" bytes=1-1 ", 1000, (1, 1)),
    ("bytes=5-4", 1000, None),
    ("bytes=-", 1000, None),
    ("bytes=0-1,5-6", 1000, None),
    ("items=0-1", 1000, None),
    ("bytes=a-b", 1000, None),
    ("bytes=0", 1000, None),
])
def test_parse_range_header(header: str, size: int, expected) -> None:
    assert parse_range_header(header, size) == expected


UNSATISFIABLE = [("bytes=1000-", 1000), ("bytes=1000-2000", 1000), ("bytes=-0", 1000), ("bytes=0-", 0),
                 ("bytes=-5", 0)]


@pytest.mark.parametrize("header, size", UNSATISFIABLE)
def test_unsatisfiable_ranges_raise_range_not_satisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        parse_range_header(header, size)
    assert caught.value.size == size


@pytest.mark.parametrize("header, size, expected", [(None, 1000, None), ("bytes=0-99", 1000, (0, 99)),
                                                    ("bytes=-100", 1000, (900, 999)), ("bytes=5-4", 1000, None),
                                                    ("items=0-1", 1000, None), (None, 0, None)])
def test_requested_range_is_the_parsed_span_or_none_for_the_whole_object(header, size, expected) -> None:
    assert requested_range(header, size) == expected


@pytest.mark.parametrize("header, size", UNSATISFIABLE)
def test_requested_range_answers_an_unsatisfiable_range_with_416_and_the_object_size(header: str,
                                                                                     size: int) -> None:
    with pytest.raises(S3Error) as caught:
        requested_range(header, size)
    error = caught.value
    assert (error.code, error.status) == ("InvalidRange", 416)
    assert error.headers == {"Content-Range": f"bytes */{size}"}
    assert error.fields == {"ActualObjectSize": str(size)}


@pytest.mark.parametrize("value, size, expected", [(None, 10, None), ("bytes=0-9", 10, (0, 9)),
                                                   ("bytes=3-3", 10, (3, 3)), (" bytes=0-0 ", 1, (0, 0))])
def test_copy_source_range_inside_the_source(value, size, expected) -> None:
    assert parse_copy_range(value, size) == expected


@pytest.mark.parametrize("value, size", [("bytes=0-10", 10), ("bytes=5-4", 10), ("0-4", 10), ("bytes=-4", 10),
                                         ("bytes=4-", 10), ("bytes=a-b", 10), ("bytes=0-0", 0), ("bytes=²-3", 10)])
def test_copy_source_range_outside_the_source_or_malformed_is_invalid_argument(value: str, size: int) -> None:
    with pytest.raises(S3Error) as caught:
        parse_copy_range(value, size)
    error = caught.value
    assert (error.code, error.status, error.fields["ArgumentName"]) == ("InvalidArgument", 400,
                                                                        "x-amz-copy-source-range")


@pytest.mark.parametrize("value, expected", [("1", 1), ("10000", 10000), ("007", 7)])
def test_part_numbers_1_to_10000(value: str, expected: int) -> None:
    assert parse_part_number(value) == expected


@pytest.mark.parametrize("value", ["0", "10001", "", "-1", "x", "²", "1" * 5000])
def test_other_part_numbers_are_invalid_argument(value: str) -> None:
    with pytest.raises(S3Error) as caught:
        parse_part_number(value)
    error = caught.value
    assert (error.code, error.status, error.fields["ArgumentName"]) == ("InvalidArgument", 400, "partNumber")
