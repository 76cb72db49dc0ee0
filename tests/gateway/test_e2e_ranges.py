"""Range GETs are answered over the plaintext, whatever the ciphertext layout underneath."""
from __future__ import annotations

import os
import random

import pytest
from botocore.exceptions import ClientError

SIZE = 300_000


def _random_range(rng: random.Random) -> tuple[str, int, int]:
    """A Range header and the inclusive plaintext span S3 must answer with."""
    form = rng.choice(["a-b", "a-", "-n"])
    if form == "a-b":
        first = rng.randrange(SIZE)
        last = first + rng.randrange(SIZE // 2)
        return f"bytes={first}-{last}", first, min(last, SIZE - 1)
    if form == "a-":
        first = rng.randrange(SIZE)
        return f"bytes={first}-", first, SIZE - 1
    suffix = rng.randrange(1, SIZE + 1000)
    return f"bytes=-{suffix}", max(SIZE - suffix, 0), SIZE - 1


@pytest.fixture
def ranged_object(s3, bucket) -> tuple[str, bytes]:
    data = os.urandom(SIZE)
    s3.put_object(Bucket=bucket, Key="ranged", Body=data)
    return bucket, data


def test_random_ranges_match_python_slices_of_the_plaintext(s3, ranged_object):
    bucket, data = ranged_object
    rng = random.Random(20261123)
    for _ in range(200):
        header, first, last = _random_range(rng)
        got = s3.get_object(Bucket=bucket, Key="ranged", Range=header)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, header
        assert got["ContentRange"] == f"bytes {first}-{last}/{SIZE}", header
        assert got["Body"].read() == data[first:last + 1], header


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 100}-{SIZE + 200}"])
def test_range_past_the_end_is_416_invalid_range(s3, ranged_object, header):
    bucket, _ = ranged_object
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="ranged", Range=header)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    assert err.value.response["Error"]["Code"] == "InvalidRange"
