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


# Raw documents: what a client can send that boto3 would not build. Each is refused before anything reaches
# the upstream, and the rule stored before ("keep") is what the upstream still has.
NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
EXPIRE_XML = "<Expiration><Days>30</Days></Expiration>"
LOGS_FILTER = "<Filter><Prefix>logs/</Prefix></Filter>"


def _document(*rules: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><LifecycleConfiguration {NS}>{"".join(rules)}' \
           f"</LifecycleConfiguration>".encode()


def _xml_rule(inner: str, rule_id: str = "r1") -> str:
    return f"<Rule><ID>{rule_id}</ID><Status>Enabled</Status>{inner}</Rule>"


def _put_raw(gateway, bucket: str, body: bytes):
    from tests.support.clients import signed_request
    from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
    return signed_request("PUT", f"{gateway.url}/{bucket}?lifecycle", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                          body=body, headers={"Content-Type": "application/xml"})


def _error(response) -> tuple[int, str | None]:
    import xml.etree.ElementTree as ET
    return response.status_code, ET.fromstring(response.content).findtext("Code")


@pytest.mark.parametrize("inner", [
    pytest.param(f"<Filter><Prefix> </Prefix></Filter>{EXPIRE_XML}", id="blank-prefix"),
    pytest.param(f"<Filter><Prefix>\n\t</Prefix></Filter>{EXPIRE_XML}", id="white-space-prefix"),
    pytest.param(f"<Filter><Prefix> .s3gw/</Prefix></Filter>{EXPIRE_XML}", id="padded-reserved-prefix"),
    pytest.param(f"<Prefix> </Prefix>{EXPIRE_XML}", id="legacy-blank-rule-prefix"),
    pytest.param(EXPIRE_XML, id="no-filter-no-prefix"),
    pytest.param(f"<Filter><And><Prefix> </Prefix><ObjectSizeGreaterThan>0</ObjectSizeGreaterThan></And>"
                 f"</Filter>{EXPIRE_XML}", id="and-blank-prefix-with-size"),
    pytest.param("<Filter><And><Prefix>.s3gw/</Prefix></And></Filter>"
                 "<Transition><Days>1</Days><StorageClass>GLACIER</StorageClass></Transition>", id="and-reserved"),
    pytest.param("<Filter></Filter><Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker>"
                 "<Days>1</Days></Expiration>", id="delete-marker-and-days"),
])
def test_a_raw_rule_that_could_expire_reserved_keys_is_400_invalid_request(gateway, s3, upstream_s3, bucket, inner):
    keep = _rule(ID="keep", Filter={"Prefix": "logs/"}, **EXPIRE)
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [keep]})
    assert _error(_put_raw(gateway, bucket, _document(_xml_rule(inner)))) == (400, "InvalidRequest")
    assert [r["ID"] for r in _upstream_rules(upstream_s3, bucket) or []] == ["keep"]


@pytest.mark.parametrize("rules", [
    pytest.param([_xml_rule(f"<Filter><Prefix>logs/</Prefix><Prefix></Prefix></Filter>{EXPIRE_XML}")],
                 id="two-prefixes-in-filter"),
    pytest.param([_xml_rule(f"<Prefix>logs/</Prefix><Prefix></Prefix>{EXPIRE_XML}")], id="two-rule-prefixes"),
    pytest.param([_xml_rule(f"{LOGS_FILTER}<Filter></Filter>{EXPIRE_XML}")], id="two-filters"),
    pytest.param([_xml_rule(f"{LOGS_FILTER}<Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker>"
                            f"</Expiration>{EXPIRE_XML}")], id="two-expirations"),
    pytest.param([_xml_rule(f"{LOGS_FILTER}<Expiration><Days>1</Days><Days>2</Days></Expiration>")],
                 id="two-days"),
    pytest.param([_xml_rule(f"<Prefix>logs/</Prefix>{LOGS_FILTER}{EXPIRE_XML}")], id="rule-prefix-and-filter"),
    pytest.param([_xml_rule(f"<Filter><Prefix>logs/</Prefix><ObjectSizeGreaterThan>1</ObjectSizeGreaterThan>"
                            f"</Filter>{EXPIRE_XML}")], id="filter-with-two-conditions"),
    pytest.param([_xml_rule(f"{LOGS_FILTER}<Filtre><Prefix></Prefix></Filtre>{EXPIRE_XML}")], id="unknown-element"),
    pytest.param([_xml_rule(f"<Filter><Prefix>logs/<Sub/></Prefix></Filter>{EXPIRE_XML}")],
                 id="element-inside-prefix"),
    pytest.param([_xml_rule(f"{LOGS_FILTER}{EXPIRE_XML}") + "stray text"], id="text-between-rules"),
    pytest.param([], id="no-rule"),
])
def test_a_document_outside_the_schema_is_400_malformed_xml(gateway, s3, upstream_s3, bucket, rules):
    keep = _rule(ID="keep", Filter={"Prefix": "logs/"}, **EXPIRE)
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [keep]})
    assert _error(_put_raw(gateway, bucket, _document(*rules))) == (400, "MalformedXML")
    assert [r["ID"] for r in _upstream_rules(upstream_s3, bucket) or []] == ["keep"]


@pytest.mark.parametrize("rule", [
    pytest.param(_rule(Prefix="logs/", **EXPIRE), id="legacy-rule-prefix-logs"),
    pytest.param(_rule(Filter={"And": {"Prefix": "logs/", "ObjectSizeGreaterThan": 1024}}, **EXPIRE),
                 id="and-prefix-with-size"),
    pytest.param(_rule(Filter={"And": {"Prefix": "logs/", "Tags": TAGS}}, **EXPIRE), id="and-prefix-with-tag"),
    pytest.param(_rule(Filter={"Prefix": "logs/"}, Expiration={"Days": 30},
                       Transitions=[{"Days": 10, "StorageClass": "STANDARD_IA"},
                                    {"Days": 20, "StorageClass": "GLACIER"}],
                       AbortIncompleteMultipartUpload={"DaysAfterInitiation": 3}), id="several-actions"),
])
def test_more_safe_rules_reach_the_upstream_as_sent(s3, upstream_s3, bucket, rule):
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [rule]})
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert _upstream_rules(upstream_s3, bucket) == stored
    assert stored[0]["ID"] == "r1" and stored[0].get("Filter", {}).get("Prefix", stored[0].get("Prefix")) in (
        "logs/", None)


def test_the_upstream_gets_the_document_rebuilt_from_the_checked_rules(gateway, upstream_s3, bucket):
    """Comments and a pretty-printed layout do not reach the upstream; what arrives is the checked rule."""
    body = _document("<!-- a comment -->\n  ", _xml_rule(f"\n  {LOGS_FILTER}\n  {EXPIRE_XML}\n"))
    assert _put_raw(gateway, bucket, body).status_code == 200
    assert _upstream_rules(upstream_s3, bucket) == [
        {"ID": "r1", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 30}}]
