"""Lifecycle rules sent through the gateway can never expire or transition its reserved keys (``.s3gw/``:
multipart manifests and the bucket state record). S3 filters cannot exclude a prefix, so a rule whose filter
could match them is refused with 400 InvalidRequest and nothing reaches the upstream; rules that cannot
(another prefix, a required tag, no action on current objects) pass through unchanged.
"""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

EXPIRE = {"Expiration": {"Days": 30}}
TAGS = [{"Key": "temp", "Value": "yes"}]


def _rule(**fields) -> dict:
    return {"ID": "r1", "Status": "Enabled", **fields}


def _upstream_rules(upstream_s3, bucket: str) -> list[dict] | None:
    try:
        return upstream_s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as err:
        assert err.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"
        return None


@pytest.mark.parametrize("rule", [
    pytest.param(_rule(Filter={"Prefix": "logs/"}, **EXPIRE), id="prefix-logs"),
    pytest.param(_rule(Filter={"And": {"Prefix": "", "Tags": TAGS}}, **EXPIRE), id="and-empty-prefix-with-tags"),
    pytest.param(_rule(Filter={"Tag": TAGS[0]}, **EXPIRE), id="tag-only"),
    pytest.param(_rule(Filter={}, AbortIncompleteMultipartUpload={"DaysAfterInitiation": 7}),
                 id="whole-bucket-abort-incomplete-uploads"),
    pytest.param(_rule(Filter={"Prefix": ""}, NoncurrentVersionExpiration={"NoncurrentDays": 30}),
                 id="whole-bucket-noncurrent-versions"),
])
def test_a_rule_that_cannot_touch_reserved_keys_passes_through_and_reads_back(s3, upstream_s3, bucket, rule):
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [rule]})
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [(r["ID"], r.get("Filter")) for r in stored] == [("r1", rule["Filter"])]
    assert _upstream_rules(upstream_s3, bucket) == stored


@pytest.mark.parametrize("rule", [
    pytest.param(_rule(Filter={}, **EXPIRE), id="whole-bucket"),
    pytest.param(_rule(Filter={"Prefix": ""}, **EXPIRE), id="empty-prefix"),
    pytest.param(_rule(Filter={"Prefix": "."}, **EXPIRE), id="prefix-dot"),
    pytest.param(_rule(Filter={"Prefix": ".s3gw/manifests/"}, **EXPIRE), id="inside-the-reserved-prefix"),
    pytest.param(_rule(Filter={"And": {"Prefix": "", "ObjectSizeLessThan": 1024 * 1024}}, **EXPIRE),
                 id="and-empty-prefix-with-size-only"),
    pytest.param(_rule(Filter={"Prefix": ""}, Transitions=[{"Days": 30, "StorageClass": "GLACIER"}]),
                 id="whole-bucket-transition"),
    pytest.param(_rule(Prefix="", **EXPIRE), id="legacy-rule-prefix"),
])
def test_a_rule_that_could_expire_reserved_keys_is_400_invalid_request_and_not_stored(
        s3, upstream_s3, bucket, rule):
    keep = _rule(ID="keep", Filter={"Prefix": "logs/"}, **EXPIRE)
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [keep]})
    with pytest.raises(ClientError) as err:
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [keep, rule]})
    answer = err.value.response
    assert (answer["ResponseMetadata"]["HTTPStatusCode"], answer["Error"]["Code"], answer["Error"]["Message"]) == (
        400, "InvalidRequest",
        "Lifecycle rule r1 could expire or transition keys under .s3gw/, which the encrypting gateway reserves "
        "for its own data. Give the rule a prefix that cannot match .s3gw/ (or a tag filter).")
    assert [r["ID"] for r in _upstream_rules(upstream_s3, bucket) or []] == ["keep"]
