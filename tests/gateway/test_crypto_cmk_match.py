"""The read's check that the KeyId KMS Decrypt returns is the CMK an object's metadata names."""
import pytest

from gateway.crypto.sse import same_cmk

MRK = "mrk-0123456789abcdef0123456789abcdef"
UUID = "1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.parametrize("returned, stored", [
    (f"arn:aws:kms:us-east-1:111122223333:key/{UUID}", f"arn:aws:kms:us-east-1:111122223333:key/{UUID}"),
    (f"arn:aws:kms:eu-west-1:111122223333:key/{MRK}", f"arn:aws:kms:us-east-1:111122223333:key/{MRK}"),
])
def test_the_same_key_or_a_multi_region_key_in_another_region_matches(returned: str, stored: str) -> None:
    assert same_cmk(returned, stored)


@pytest.mark.parametrize("returned, stored", [
    (f"arn:aws:kms:eu-west-1:111122223333:key/{UUID}", f"arn:aws:kms:us-east-1:111122223333:key/{UUID}"),
    (f"arn:aws:kms:eu-west-1:444455556666:key/{MRK}", f"arn:aws:kms:us-east-1:111122223333:key/{MRK}"),
    (f"arn:aws-cn:kms:eu-west-1:111122223333:key/{MRK}", f"arn:aws:kms:us-east-1:111122223333:key/{MRK}"),
    (f"arn:aws:kms:eu-west-1:111122223333:key/{MRK[:-1]}0", f"arn:aws:kms:us-east-1:111122223333:key/{MRK}"),
    (f"arn:aws:kms:eu-west-1:111122223333:key/{MRK}", f"arn:aws:kms:us-east-1:111122223333:alias/{MRK}"),
    ("not-an-arn", f"arn:aws:kms:us-east-1:111122223333:key/{MRK}"),
])
def test_another_key_account_partition_or_a_single_region_key_elsewhere_does_not_match(returned: str,
                                                                                        stored: str) -> None:
    assert not same_cmk(returned, stored)
