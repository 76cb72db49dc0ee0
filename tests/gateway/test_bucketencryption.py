"""Bucket default encryption, piece by piece: the S3 document's checks, the sealed record, the defaults a
write gets (gateway/sseheaders.py decide_put), and the store's cache over a real moto upstream."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from dataclasses import replace

import pytest

from gateway.bucketencryption import (CONFIG_KEY, CONFIG_LABEL, BucketDefaults, BucketEncryption, EncryptionConfig,
                                      defaults_of, toml_defaults)
from gateway.bucketstate import RecordError, new_record, open_fields, open_record, seal_record
from gateway.config import BucketPolicy, ConfigError, GatewayConfig, UpstreamConfig, load_config
from gateway.crypto.sse import CustomerKey, CustomerKeyRequest, KmsRequest, SseMode
from gateway.handlers.bucket_encryption import parse_configuration, render_configuration
from gateway.s3errors import S3Error
from gateway.sseheaders import SSE_BUCKET_KEY, decide_put

SECRET = bytes(range(32))
NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
CONFIG = GatewayConfig(default_kms_key_id="alias/gw", buckets={"own": BucketPolicy("aws:kms", "alias/own"),
                                                               "plain": BucketPolicy("passthrough", "")})
SSEC_KEY = b"k" * 32
SSEC = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(SSEC_KEY).decode(),
        "x-amz-server-side-encryption-customer-key-md5": base64.b64encode(hashlib.md5(SSEC_KEY).digest()).decode()}


def _document(rule: str, rules: int = 1) -> bytes:
    return f"<ServerSideEncryptionConfiguration {NS}>{('<Rule>' + rule + '</Rule>') * rules}" \
           f"</ServerSideEncryptionConfiguration>".encode()


def _default(algorithm: str, key: str | None = None) -> str:
    key_element = f"<KMSMasterKeyID>{key}</KMSMasterKeyID>" if key is not None else ""
    return f"<ApplyServerSideEncryptionByDefault><SSEAlgorithm>{algorithm}</SSEAlgorithm>{key_element}" \
           "</ApplyServerSideEncryptionByDefault>"


# ------------------------------------------------------------------ the document


def test_a_full_rule_parses_to_what_was_sent_and_renders_back_to_it():
    body = _document(_default("aws:kms", "alias/app") + "<BucketKeyEnabled>true</BucketKeyEnabled>"
                     "<BlockedEncryptionTypes><EncryptionType>SSE-C</EncryptionType></BlockedEncryptionTypes>")
    config = parse_configuration(body)
    assert config == EncryptionConfig("aws:kms", "alias/app", True, ("SSE-C",))
    assert parse_configuration(render_configuration(config)) == config


def test_a_minimal_sse_s3_rule_has_no_key_no_bucket_key_and_blocks_nothing():
    config = parse_configuration(_document(_default("AES256")))
    assert (config, config.blocks_ssec) == (EncryptionConfig("AES256"), False)
    assert b"<BucketKeyEnabled>false</BucketKeyEnabled>" in render_configuration(config)


@pytest.mark.parametrize("body", [
    b"<ServerSideEncryptionConfiguration",                                       # not XML
    b"<LifecycleConfiguration/>",                                                # another document
    _document("", rules=0),                                                      # no Rule
    _document(_default("aws:kms"), rules=2),                                     # two Rules
    _document(""),                                                               # no default in the Rule
    _document("<ApplyServerSideEncryptionByDefault/>"),                          # no SSEAlgorithm
    _document(_default("SSE-KMS")),                                              # an algorithm S3 does not know
    _document(_default("aws:kms") + _default("aws:kms")),                        # a repeated singleton
    _document(_default("aws:kms") + "<Unknown/>"),                               # an unknown element
    _document(_default("aws:kms") + "<BucketKeyEnabled>yes</BucketKeyEnabled>"),  # not a boolean
    _document(_default("aws:kms") + "<BlockedEncryptionTypes><EncryptionType>SSE-KMS</EncryptionType>"
              "</BlockedEncryptionTypes>"),                                       # an unknown type
    _document(_default("aws:kms") + "<BlockedEncryptionTypes><EncryptionType>NONE</EncryptionType>"
              "<EncryptionType>SSE-C</EncryptionType></BlockedEncryptionTypes>"),  # NONE and SSE-C
    _document(_default("aws:kms") + "<BlockedEncryptionTypes/>"),                # an empty list
])
def test_documents_outside_s3s_schema_are_400_malformed_xml(body):
    with pytest.raises(S3Error) as info:
        parse_configuration(body)
    assert (info.value.code, info.value.status) == ("MalformedXML", 400)


def test_a_kms_key_with_sse_s3_is_400_invalid_argument_with_s3s_message():
    with pytest.raises(S3Error) as info:
        parse_configuration(_document(_default("AES256", "alias/app")))
    assert (info.value.code, info.value.status, info.value.fields) == (
        "InvalidArgument", 400, {"ArgumentName": "ApplyServerSideEncryptionByDefault"})
    assert info.value.message == ("a KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms "
                                  "or aws:kms:dsse")


def test_s3_algorithms_the_gateway_cannot_do_are_400_invalid_argument_naming_them():
    with pytest.raises(S3Error) as info:
        parse_configuration(_document(_default("aws:kms:dsse")))
    assert (info.value.code, info.value.status, info.value.fields["ArgumentValue"]) == (
        "InvalidArgument", 400, "aws:kms:dsse")


def test_an_entity_declaration_is_malformed_xml_not_expanded():
    body = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            + _document(_default("aws:kms", "&e;")))
    with pytest.raises(S3Error) as info:
        parse_configuration(body)
    assert info.value.code == "MalformedXML"


# ------------------------------------------------------------------ the record


def test_the_record_is_sealed_under_its_own_label_so_it_cannot_pass_for_the_state_record():
    config = EncryptionConfig("aws:kms", "alias/app", True, ("SSE-C",))
    body = seal_record(SECRET, "b", config.fields(), label=CONFIG_LABEL)
    assert EncryptionConfig.of_fields(open_fields(SECRET, "b", body, label=CONFIG_LABEL)) == config
    with pytest.raises(RecordError):
        open_record(SECRET, "b", body)  # the state record's label
    state = seal_record(SECRET, "b", new_record())
    with pytest.raises(RecordError):
        open_fields(SECRET, "b", state, label=CONFIG_LABEL)
    with pytest.raises(RecordError):
        open_fields(SECRET, "other", body, label=CONFIG_LABEL)


@pytest.mark.parametrize("fields", [
    {"v": 2, "algorithm": "aws:kms", "kms_key_id": None, "bucket_key": False, "blocked": []},
    {"v": 1, "algorithm": "rot13", "kms_key_id": None, "bucket_key": False, "blocked": []},
    {"v": 1, "algorithm": "aws:kms", "kms_key_id": 7, "bucket_key": False, "blocked": []},
    {"v": 1, "algorithm": "aws:kms", "kms_key_id": None, "bucket_key": "no", "blocked": []},
])
def test_authentic_records_this_version_cannot_read_are_refused(fields):
    with pytest.raises(RecordError):
        EncryptionConfig.of_fields(fields)


# ------------------------------------------------------------------ the defaults a write gets


def test_the_api_configuration_wins_over_toml_which_wins_over_the_gateway_default():
    assert toml_defaults(CONFIG, "own") == BucketDefaults(SseMode.KMS, "alias/own")
    assert toml_defaults(CONFIG, "other") == BucketDefaults(SseMode.KMS, "alias/gw")
    assert toml_defaults(GatewayConfig(), "other") == BucketDefaults(SseMode.KMS, None)  # the service's alias
    api = EncryptionConfig("aws:kms", "alias/api", True, ("SSE-C",))
    assert defaults_of(CONFIG, "own", api) == BucketDefaults(SseMode.KMS, "alias/api", True, True)
    assert defaults_of(CONFIG, "own", EncryptionConfig("aws:kms")) == BucketDefaults(SseMode.KMS, "alias/own")
    assert defaults_of(CONFIG, "own", EncryptionConfig("AES256", None, True)) == BucketDefaults(SseMode.S3,
                                                                                               "alias/own")
    assert defaults_of(CONFIG, "plain", api) == BucketDefaults(None, "alias/gw")  # passthrough overrides all


def test_a_header_less_put_gets_the_buckets_defaults_and_its_bucket_key_flag():
    defaults = BucketDefaults(SseMode.KMS, "alias/api", bucket_key=True)
    request = decide_put(CONFIG, "own", {}, secure=False, defaults=defaults)
    assert request == KmsRequest(SseMode.KMS, "alias/api", {}, bucket_key=True)
    sse_s3 = decide_put(CONFIG, "own", {}, secure=False, defaults=BucketDefaults(SseMode.S3, "alias/own"))
    assert sse_s3 == KmsRequest(SseMode.S3, "alias/own", {}, bucket_key=False)
    assert decide_put(CONFIG, "plain", {}, secure=False, defaults=BucketDefaults(None)) is None


@pytest.mark.parametrize("header,bucket_setting,expected", [
    ("true", False, True), ("TRUE", False, True), ("false", True, False), (None, True, True), (None, False, False),
])
def test_the_bucket_key_header_wins_over_the_buckets_setting(header, bucket_setting, expected):
    headers = {"x-amz-server-side-encryption": "aws:kms", **({SSE_BUCKET_KEY: header} if header else {})}
    defaults = BucketDefaults(SseMode.KMS, "alias/own", bucket_key=bucket_setting)
    assert decide_put(CONFIG, "own", headers, secure=False, defaults=defaults).bucket_key is expected


def test_sse_s3_never_asks_for_a_bucket_key():
    headers = {"x-amz-server-side-encryption": "AES256", SSE_BUCKET_KEY: "true"}
    assert decide_put(CONFIG, "own", headers, secure=False).bucket_key is False


def test_a_bucket_key_header_that_is_no_boolean_is_400_invalid_argument():
    with pytest.raises(S3Error) as info:
        decide_put(CONFIG, "own", {SSE_BUCKET_KEY: "yes"}, secure=False)
    assert (info.value.code, info.value.status, info.value.fields["ArgumentName"]) == (
        "InvalidArgument", 400, SSE_BUCKET_KEY)


def test_sse_c_is_403_access_denied_where_blocked_and_allowed_elsewhere():
    blocked = BucketDefaults(SseMode.KMS, None, block_ssec=True)
    with pytest.raises(S3Error) as info:
        decide_put(CONFIG, "own", SSEC, secure=True, defaults=blocked)
    assert (info.value.code, info.value.status) == ("AccessDenied", 403)
    allowed = decide_put(CONFIG, "own", SSEC, secure=True, defaults=replace(blocked, block_ssec=False))
    assert allowed == CustomerKeyRequest(CustomerKey(SSEC_KEY))
    # A blocked bucket still takes KMS writes.
    assert decide_put(CONFIG, "own", {}, secure=True, defaults=blocked) == KmsRequest(SseMode.KMS, None, {})


# ------------------------------------------------------------------ the store and its cache


def test_bucket_config_ttl_defaults_to_5_s_and_comes_from_the_file_or_the_environment(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text("[gateway]\nbucket_config_ttl = 2\n")
    assert (load_config(None, {}).bucket_config_ttl, load_config(path, {}).bucket_config_ttl) == (5.0, 2.0)
    assert load_config(path, {"GATEWAY_BUCKET_CONFIG_TTL": "0"}).bucket_config_ttl == 0.0
    with pytest.raises(ConfigError, match="bucket_config_ttl"):
        load_config(None, {"GATEWAY_BUCKET_CONFIG_TTL": "-1"})



class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stores(moto, upstream_s3):
    """Two stores (two processes) on one moto bucket and one secret, on a fake clock, TTL 5 s; each
    store's upstream reads of the record are counted."""
    from gateway.upstream import Upstream, UpstreamTarget

    bucket = f"encstore-{uuid.uuid4().hex[:12]}"
    upstream_s3.create_bucket(Bucket=bucket)
    upstream = Upstream(UpstreamTarget(moto.url, "us-east-1", moto.access_key, moto.secret_key))
    await upstream.start()
    clock = _Clock()
    config = replace(CONFIG, upstream=UpstreamConfig(), bucket_config_ttl=5.0)
    made = [BucketEncryption(upstream, SECRET, config, clock=clock) for _ in range(2)]
    reads = [0, 0]
    for index, store in enumerate(made):
        real = store._client.get_small

        async def counted(*args, _real=real, _index=index, **kwargs):
            reads[_index] += 1
            return await _real(*args, **kwargs)
        store._client.get_small = counted
    try:
        yield made, reads, clock, bucket
    finally:
        await upstream.close()


async def test_a_change_is_seen_at_once_here_and_by_another_process_once_its_ttl_has_passed(stores):
    (a, b), reads, clock, bucket = stores
    assert await b.stored(bucket) is None
    await a.put(bucket, EncryptionConfig("aws:kms", "alias/app"))
    assert await a.stored(bucket) == EncryptionConfig("aws:kms", "alias/app")
    assert await b.stored(bucket) is None  # cached, within the TTL
    clock.now += 5.01
    assert await b.stored(bucket) == EncryptionConfig("aws:kms", "alias/app")
    await a.delete(bucket)
    assert (await a.stored(bucket), reads) == (None, [0, 2])


async def test_concurrent_lookups_of_one_bucket_share_one_upstream_read(stores):
    (a, _), reads, _, bucket = stores
    answers = await asyncio.gather(*(a.defaults(bucket) for _ in range(20)))
    assert answers == [BucketDefaults(SseMode.KMS, "alias/gw")] * 20
    assert reads[0] == 1


async def test_forget_drops_the_cached_configuration(stores, upstream_s3):
    (a, _), reads, _, bucket = stores
    await a.put(bucket, EncryptionConfig("AES256"))
    upstream_s3.delete_object(Bucket=bucket, Key=CONFIG_KEY)
    assert await a.stored(bucket) == EncryptionConfig("AES256")
    a.forget(bucket)
    assert (await a.stored(bucket), reads[0]) == (None, 1)


async def test_a_passthrough_bucket_is_never_read_upstream(stores):
    (a, _), reads, _, _ = stores
    assert await a.defaults("plain") == BucketDefaults(None, "alias/gw")
    assert reads == [0, 0]


async def test_a_missing_bucket_is_404_no_such_bucket(stores):
    (a, _), _, _, _ = stores
    with pytest.raises(S3Error) as info:
        await a.stored(f"missing-{uuid.uuid4().hex[:12]}")
    assert (info.value.code, info.value.status) == ("NoSuchBucket", 404)


async def test_a_lookup_that_read_the_old_record_during_a_change_does_not_undo_it_here(stores):
    """A lookup begun while PutBucketEncryption's write is on its way reads the old record and ends after
    the write: it must not cache what it read over the new configuration."""
    (a, _), _, _, bucket = stores
    read_first, write_first = a._client.get_small, a._client.put_object

    async def slow_read(*args, **kwargs):
        answer = await read_first(*args, **kwargs)
        await asyncio.sleep(0.2)
        return answer

    async def slow_write(*args, **kwargs):
        await asyncio.sleep(0.05)
        return await write_first(*args, **kwargs)
    a._client.get_small, a._client.put_object = slow_read, slow_write
    new = EncryptionConfig("aws:kms", "alias/new", blocked=("SSE-C",))
    change = asyncio.ensure_future(a.put(bucket, new))
    await asyncio.sleep(0.01)
    during = asyncio.ensure_future(a.stored(bucket))
    await change
    assert await during is None  # what it read, answered to its own caller only
    assert await a.stored(bucket) == new
    assert (await a.defaults(bucket)).block_ssec is True
