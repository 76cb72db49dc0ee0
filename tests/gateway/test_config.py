"""Settings: TOML, environment overrides, --listen, validation messages, and the encryption policy."""
import base64
import hashlib
import json
from pathlib import Path

import pytest

from gateway.config import BucketPolicy, ConfigError, load_config
from gateway.crypto.metadata import EncryptionInfo, Multipart, SingleStream
from gateway.crypto.sse import CustomerKey, CustomerKeyRequest, CustomerKeySeal, KmsRequest, KmsSeal, SseMode
from gateway.crypto.stream import StreamParams
from gateway.s3errors import S3Error
from gateway.sseheaders import customer_key, decide_put, mode_headers

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.example.toml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    cfg = load_config(None, {})
    assert cfg.listen == "127.0.0.1:8080"
    assert cfg.default_encryption == "aws:kms"
    assert cfg.allow_unencrypted_reads is True
    assert cfg.upstream.url == ""
    assert cfg.credentials == ()
    assert cfg.secret_path == Path("data/gateway.secret")


def test_file_values_are_read(tmp_path):
    path = _write(tmp_path, """
[gateway]
listen = "0.0.0.0:9999"
data_dir = "/var/gw"
allow_ssec_over_http = true
[[gateway.credentials]]
access_key = "AK"
secret_key = "SK"
[upstream]
url = "http://127.0.0.1:9000"
access_key = "minio"
secret_key = "minio123"
[buckets.old]
encryption = "passthrough"
""")
    cfg = load_config(path, {})
    assert cfg.listen_host_port == ("0.0.0.0", 9999)
    assert cfg.data_dir == Path("/var/gw")
    assert cfg.allow_ssec_over_http is True
    assert [(c.access_key, c.secret_key) for c in cfg.credentials] == [("AK", "SK")]
    assert cfg.upstream.url == "http://127.0.0.1:9000"
    assert cfg.bucket_policy("old") == BucketPolicy("passthrough", "")
    assert cfg.bucket_policy("other") == BucketPolicy("aws:kms", "")


def test_environment_overrides_file_and_listen_flag_overrides_both(tmp_path):
    path = _write(tmp_path, '[gateway]\nlisten = "127.0.0.1:1"\ndefault_encryption = "aws:kms"\n')
    env = {"GATEWAY_LISTEN": "127.0.0.1:2", "GATEWAY_DEFAULT_ENCRYPTION": "passthrough",
           "GATEWAY_TRUST_FORWARDED_PROTO": "true", "GATEWAY_ACCESS_KEY": "EK", "GATEWAY_SECRET_KEY": "ES",
           "GATEWAY_UPSTREAM_URL": "https://s3.example", "GATEWAY_UPSTREAM_ACCESS_KEY": "u",
           "GATEWAY_UPSTREAM_SECRET_KEY": "p", "GATEWAY_KMS_REGION": "eu-west-1"}
    assert load_config(path, env).listen == "127.0.0.1:2"
    cfg = load_config(path, env, listen="127.0.0.1:0")
    assert cfg.listen_host_port == ("127.0.0.1", 0)
    assert cfg.default_encryption == "passthrough"
    assert cfg.trust_forwarded_proto is True
    assert cfg.credentials[-1].access_key == "EK"
    assert cfg.upstream.url == "https://s3.example"
    assert cfg.kms.region == "eu-west-1"


@pytest.mark.parametrize("text,env,message", [
    ('[gateway]\nlisten = "nonsense"\n', {}, "listen must be HOST:PORT"),
    ('[gateway]\ndefault_encryption = "rot13"\n', {}, "gateway.default_encryption must be one of"),
    ('[gateway]\ntypo = 1\n', {}, "unknown setting(s) in [gateway]: typo"),
    ('[gateway]\nallow_ssec_over_http = "maybe"\n', {}, "must be true or false"),
    ('[gateway]\ntls_cert_file = "/nonexistent.pem"\n', {}, "must be set together"),
    ('[upstream]\nurl = "ftp://x"\n', {}, "upstream.url must start with http"),
    ('[upstream]\nurl = "http://x"\n', {}, "upstream.access_key and upstream.secret_key are required"),
    ('[buckets.b]\nencryption = "none"\n', {}, "buckets.b.encryption must be one of"),
    ('[upstream]\nread_timeout = "soon"\n', {}, "upstream.read_timeout (GATEWAY_UPSTREAM_READ_TIMEOUT) must be a number"),
    ('[upstream]\nread_timeout = 0\n', {}, "upstream.read_timeout (GATEWAY_UPSTREAM_READ_TIMEOUT) must be a positive"),
    ("", {"GATEWAY_ACCESS_KEY": "only"}, "must be set together"),
    ("not = [toml", {}, "is not valid TOML"),
])
def test_invalid_settings_are_refused_with_their_name(tmp_path, text, env, message):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), env)
    assert message in str(info.value)


def test_upstream_read_timeout_defaults_to_60_s_and_comes_from_file_or_environment(tmp_path):
    assert load_config(None, {}).upstream.read_timeout == 60.0
    path = _write(tmp_path, "[upstream]\nread_timeout = 2.5\n")
    assert load_config(path, {}).upstream.read_timeout == 2.5
    assert load_config(path, {"GATEWAY_UPSTREAM_READ_TIMEOUT": "7"}).upstream.read_timeout == 7.0


def test_remote_kms_time_bound_from_file_and_environment(tmp_path):
    assert (load_config(None, {}).kms.timeout, load_config(None, {}).kms.max_attempts) == (5.0, 3)
    path = _write(tmp_path, "[kms]\ntimeout = 2\nmax_attempts = 2\n")
    assert (load_config(path, {}).kms.timeout, load_config(path, {}).kms.max_attempts) == (2.0, 2)
    env = {"GATEWAY_KMS_TIMEOUT": "0.5", "GATEWAY_KMS_MAX_ATTEMPTS": "1"}
    assert (load_config(path, env).kms.timeout, load_config(path, env).kms.max_attempts) == (0.5, 1)
    for bad in ({"GATEWAY_KMS_TIMEOUT": "0"}, {"GATEWAY_KMS_TIMEOUT": "soon"}, {"GATEWAY_KMS_MAX_ATTEMPTS": "1.5"}):
        with pytest.raises(ConfigError, match=r"kms\.(timeout|max_attempts) \(GATEWAY_KMS_"):
            load_config(path, bad)


def test_missing_config_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml", {})


def test_example_config_is_valid():
    cfg = load_config(EXAMPLE, {})
    assert cfg.bucket_policy("legacy-bucket").encryption == "passthrough"


# The configured bucket policy, then the request's SSE headers, decide a PUT's encryption (gateway/sseheaders.py).
KEY = b"k" * 32
SSEC = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(KEY).decode(),
        "x-amz-server-side-encryption-customer-key-md5": base64.b64encode(hashlib.md5(KEY).digest()).decode()}


def _policy_config(tmp_path):
    return load_config(_write(tmp_path, '[gateway]\ndefault_kms_key_id = "alias/gw"\n'
                                        '[buckets.old]\nencryption = "passthrough"\n'
                                        '[buckets.own]\nkms_key_id = "alias/own"\n'), {})


def test_encrypting_bucket_uses_its_key_then_the_default(tmp_path):
    cfg = _policy_config(tmp_path)
    assert decide_put(cfg, "own", {}, secure=False) == KmsRequest(SseMode.KMS, "alias/own", {})
    assert decide_put(cfg, "other", {}, secure=False) == KmsRequest(SseMode.KMS, "alias/gw", {})


def test_passthrough_bucket_stores_plaintext_unless_the_client_asks_for_encryption(tmp_path):
    cfg = _policy_config(tmp_path)
    assert decide_put(cfg, "old", {}, secure=False) is None
    asked = {"x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": "alias/x"}
    assert decide_put(cfg, "old", asked, secure=False) == KmsRequest(SseMode.KMS, "alias/x", {})
    sse_s3 = decide_put(cfg, "old", {"x-amz-server-side-encryption": "AES256"}, secure=False)
    assert sse_s3 == KmsRequest(SseMode.S3, "alias/gw", {}) and sse_s3.mode is SseMode.S3


def test_sse_c_needs_tls_unless_allowed(tmp_path):
    cfg = _policy_config(tmp_path)
    with pytest.raises(S3Error) as info:
        decide_put(cfg, "own", SSEC, secure=False)
    assert (info.value.code, info.value.status) == ("InvalidRequest", 400)
    assert decide_put(cfg, "own", SSEC, secure=True) == CustomerKeyRequest(CustomerKey(KEY))
    assert customer_key(SSEC, secure=True, allow_http=False) == CustomerKey(KEY)
    assert customer_key({}, secure=False, allow_http=False) is None


@pytest.mark.parametrize("change,code,argument", [
    ({"x-amz-server-side-encryption-customer-algorithm": "AES128"}, "InvalidEncryptionAlgorithmError",
     "x-amz-server-side-encryption-customer-algorithm"),
    ({"x-amz-server-side-encryption-customer-key": "c2hvcnQ="}, "InvalidArgument",
     "x-amz-server-side-encryption-customer-key"),
    ({"x-amz-server-side-encryption-customer-key-md5": "AAAAAAAAAAAAAAAAAAAAAA=="}, "InvalidArgument",
     "x-amz-server-side-encryption-customer-key-md5"),
])
def test_malformed_sse_c_headers_are_400_naming_the_header(change, code, argument):
    with pytest.raises(S3Error) as info:
        customer_key({**SSEC, **change}, secure=True, allow_http=False)
    assert (info.value.code, info.value.status, info.value.fields["ArgumentName"]) == (code, 400, argument)


def test_unknown_sse_value_and_sse_c_with_kms_are_refused(tmp_path):
    cfg = _policy_config(tmp_path)
    for headers in ({"x-amz-server-side-encryption": "rot13"},
                    {**SSEC, "x-amz-server-side-encryption": "aws:kms"}):
        with pytest.raises(S3Error) as info:
            decide_put(cfg, "own", headers, secure=True)
        assert (info.value.code, info.value.status) == ("InvalidArgument", 400)


def _context(pairs: dict) -> str:
    return base64.b64encode(json.dumps(pairs).encode()).decode()


def test_a_client_context_goes_with_sse_kms_only_and_may_not_set_the_s3_arn(tmp_path):
    cfg = _policy_config(tmp_path)
    kms = {"x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-context": _context({"a": "b"})}
    assert decide_put(cfg, "own", kms, secure=False) == KmsRequest(SseMode.KMS, "alias/own", {"a": "b"})
    sse_s3 = {**kms, "x-amz-server-side-encryption": "AES256"}
    assert decide_put(cfg, "own", sse_s3, secure=False) == KmsRequest(SseMode.S3, "alias/own", {})
    for bad in (_context({"aws:s3:arn": "arn:aws:s3:::other/k"}), _context({"a": 1}), "not base64!"):
        for headers in (kms, sse_s3):
            with pytest.raises(S3Error) as info:
                decide_put(cfg, "own", {**headers, "x-amz-server-side-encryption-context": bad}, secure=False)
            assert (info.value.code, info.value.status) == ("InvalidArgument", 400)


def test_answers_report_the_mode_the_object_is_stored_with(tmp_path):
    params, arn = StreamParams.new(), "arn:aws:kms:us-east-1:111122223333:key/abc"
    kms = EncryptionInfo(KmsSeal(SseMode.KMS, bytes(60), arn, b"w"), SingleStream(params, 1))
    sse_s3 = EncryptionInfo(KmsSeal(SseMode.S3, bytes(60), arn, b"w"), Multipart("t" * 22))
    ssec = EncryptionInfo(CustomerKeySeal(bytes(60), bytes(32), bytes(32)), SingleStream(params, 1))
    md5 = base64.b64encode(hashlib.md5(KEY).digest()).decode()
    assert mode_headers(None, None) == {}
    assert mode_headers(kms, None) == {"x-amz-server-side-encryption": "aws:kms",
                                       "x-amz-server-side-encryption-aws-kms-key-id": arn}
    assert mode_headers(sse_s3, None) == {"x-amz-server-side-encryption": "AES256"}
    assert mode_headers(ssec, CustomerKey(KEY)) == {"x-amz-server-side-encryption-customer-algorithm": "AES256",
                                                    "x-amz-server-side-encryption-customer-key-md5": md5}
    assert mode_headers(ssec, None) == {}


def test_log_level_comes_from_the_file_or_gateway_log_level_and_an_unknown_one_is_refused(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\nlog_level = "debug"\n')
    assert load_config(path, {}).log_level == "debug"
    assert load_config(path, {"GATEWAY_LOG_LEVEL": "WARNING"}).log_level == "WARNING"
    with pytest.raises(ConfigError, match="GATEWAY_LOG_LEVEL"):
        load_config(path, {"GATEWAY_LOG_LEVEL": "chatty"})


def test_the_log_filter_redacts_configured_secrets_and_key_material_in_messages_and_tracebacks():
    import logging

    from common.logsetup import REDACTED, RedactingFilter
    redactor = RedactingFilter(["upstream-secret-key", "test"])
    record = logging.LogRecord("botocore", logging.DEBUG, __file__, 1,
                               "body %s key %s", ('{"Plaintext":"c2VjcmV0IGtleSBieXRlcw=="}', "upstream-secret-key"),
                               None)
    assert redactor.filter(record)
    assert record.getMessage() == f'body {{"Plaintext":{REDACTED}}} key {REDACTED}'
    assert redactor.redact("StringToSign:\nAWS4-HMAC-SHA256\n...") == f"StringToSign:\n{REDACTED}"
    assert redactor.redact("a test credential") == "a test credential"  # too short to be redacted


def test_the_log_filter_redacts_a_quoted_key_whole_despite_escaped_quotes():
    from common.logsetup import REDACTED, RedactingFilter
    redactor = RedactingFilter()
    both_quotes = bytes(range(32)) + b"'quote\"both TAIL-OF-KEY"
    cases = [  # (message, the escape it holds)
        (repr({"Plaintext": both_quotes, "KeyId": "k"}), "\\'"),            # b'..\'.."..'
        (repr({"Plaintext": b"\\'x TAIL-OF-KEY", "KeyId": "k"}), "\\\\"),   # b"\\'.."
        ('{"Plaintext":"ab\\"cd TAIL-OF-KEY","KeyId":"k"}', '\\"'),        # JSON: "..\".."
        ("""{'Plaintext': 'ab\\"cd\\' TAIL-OF-KEY', 'KeyId': 'k'}""", '\\"'),  # '..\"..\'..'
        ("Plaintext=b'cut off \\' TAIL-OF-KEY", "\\'"),                    # never closed
    ]
    for message, escape in cases:
        assert escape in message and "TAIL-OF-KEY" in message
        clean = redactor.redact(message)
        assert "TAIL-OF-KEY" not in clean and REDACTED in clean, (message, clean)
        assert "KeyId" not in message or "'KeyId': 'k'" in clean or '"KeyId":"k"' in clean, clean


def test_the_gateway_redacts_the_embedded_key_services_root_key_passphrase_and_credentials(tmp_path):
    from gateway.config import secrets_of
    root_key = bytes(range(100, 132))
    path = _write(tmp_path, '[gateway]\n[keyservice]\n[[keyservice.credentials]]\naccess_key = "AKKS"\n'
                            'secret_key = "file-keyservice-secret"\n')
    env = {"KEYSERVICE_ROOT_KEY": base64.b64encode(root_key).decode(), "KEYSERVICE_ROOT_PASSPHRASE": "pass phrase 1",
           "KEYSERVICE_ACCESS_KEY": "AKENV", "KEYSERVICE_SECRET_KEY": "env-keyservice-secret"}
    found = set(secrets_of(load_config(path, {}), env))
    assert {env["KEYSERVICE_ROOT_KEY"], root_key.hex(), "pass phrase 1", "env-keyservice-secret",
            "file-keyservice-secret"} <= found
    key_file = tmp_path / "root.key"
    key_file.write_text(root_key.hex())
    found = set(secrets_of(load_config(path, {}), {"KEYSERVICE_ROOT_KEY_FILE": str(key_file)}))
    assert {root_key.hex(), base64.b64encode(root_key).decode()} <= found
    # settings the key service will refuse: what they name is redacted all the same
    refused = {"KEYSERVICE_SECRET_KEY": "env-keyservice-secret"}  # without its access key: a config error
    assert "env-keyservice-secret" in secrets_of(load_config(None, {}), refused)


# Slow-client limits and the upstream pool (issue 8, item 3): TOML and GATEWAY_* variables.
LIMIT_SETTINGS = {  # setting: (section, environment variable, default, a non-default value)
    "header_timeout": ("gateway", "GATEWAY_HEADER_TIMEOUT", 30.0, 2.5),
    "idle_timeout": ("gateway", "GATEWAY_IDLE_TIMEOUT", 60.0, 3.0),
    "body_timeout": ("gateway", "GATEWAY_BODY_TIMEOUT", 20.0, 4.0),
    "send_timeout": ("gateway", "GATEWAY_SEND_TIMEOUT", 60.0, 5.0),
    "max_connections": ("gateway", "GATEWAY_MAX_CONNECTIONS", 1024, 7),
    "body_min_rate": ("gateway", "GATEWAY_BODY_MIN_RATE", 500.0, 100.0),
    "max_connections_per_ip": ("gateway", "GATEWAY_MAX_CONNECTIONS_PER_IP", 0, 16),
    "pool_size": ("upstream", "GATEWAY_UPSTREAM_POOL_SIZE", 100, 9),
    "max_attempts": ("upstream", "GATEWAY_UPSTREAM_MAX_ATTEMPTS", 3, 2),
    "pool_wait": ("upstream", "GATEWAY_UPSTREAM_POOL_WAIT", 10.0, 1.5),
}


def _limit(cfg, section: str, name: str):
    return getattr(cfg.upstream if section == "upstream" else cfg, name)


@pytest.mark.parametrize("name", LIMIT_SETTINGS)
def test_slow_client_limits_have_defaults_and_come_from_the_file_or_the_environment(tmp_path, name):
    section, env_name, default, value = LIMIT_SETTINGS[name]
    assert _limit(load_config(None, {}), section, name) == default
    path = _write(tmp_path, f"[{section}]\n{name} = {value}\n")
    assert _limit(load_config(path, {}), section, name) == value
    assert _limit(load_config(path, {env_name: str(value * 2)}), section, name) == value * 2
    assert _limit(load_config(path, {env_name: ""}), section, name) == value


def test_limits_reach_the_servers_guard_as_one_value():
    cfg = load_config(None, {"GATEWAY_HEADER_TIMEOUT": "1", "GATEWAY_MAX_CONNECTIONS": "3"})
    assert (cfg.limits.header_timeout, cfg.limits.max_connections, cfg.limits.body_timeout) == (1.0, 3, 20.0)


@pytest.mark.parametrize("env,message", [
    ({"GATEWAY_HEADER_TIMEOUT": "soon"}, "gateway.header_timeout (GATEWAY_HEADER_TIMEOUT) must be a number"),
    ({"GATEWAY_BODY_TIMEOUT": "0"}, "gateway.body_timeout (GATEWAY_BODY_TIMEOUT) must be a positive number"),
    ({"GATEWAY_MAX_CONNECTIONS": "2.5"}, "gateway.max_connections (GATEWAY_MAX_CONNECTIONS) must be a whole number"),
    ({"GATEWAY_UPSTREAM_POOL_SIZE": "-1"}, "upstream.pool_size (GATEWAY_UPSTREAM_POOL_SIZE) must be a positive"),
    ({"GATEWAY_UPSTREAM_POOL_WAIT": "inf"}, "upstream.pool_wait (GATEWAY_UPSTREAM_POOL_WAIT) must be a positive"),
    ({"GATEWAY_BODY_MIN_RATE": "-1"}, "gateway.body_min_rate (GATEWAY_BODY_MIN_RATE) must be a number >= 0"),
    ({"GATEWAY_BODY_MIN_RATE": "fast"}, "gateway.body_min_rate (GATEWAY_BODY_MIN_RATE) must be a number"),
    ({"GATEWAY_MAX_CONNECTIONS_PER_IP": "1.5"},
     "gateway.max_connections_per_ip (GATEWAY_MAX_CONNECTIONS_PER_IP) must be a whole number"),
    ({"GATEWAY_MAX_CONNECTIONS_PER_IP": "-1"},
     "gateway.max_connections_per_ip (GATEWAY_MAX_CONNECTIONS_PER_IP) must be a number >= 0"),
])
def test_invalid_limits_are_refused_with_their_name(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, env)


def test_a_body_min_rate_of_0_turns_the_minimum_rate_off(tmp_path):
    assert load_config(None, {"GATEWAY_BODY_MIN_RATE": "0"}).limits.body_min_rate == 0.0
    assert load_config(_write(tmp_path, "[gateway]\nbody_min_rate = 0\n"), {}).limits.body_min_rate == 0.0
    with pytest.raises(ConfigError, match="body_min_rate"):
        load_config(_write(tmp_path, "[gateway]\nbody_min_rate = true\n"), {})


def test_limits_in_the_file_must_be_numbers(tmp_path):
    with pytest.raises(ConfigError, match="idle_timeout"):
        load_config(_write(tmp_path, '[gateway]\nidle_timeout = "long"\n'), {})


@pytest.mark.parametrize("domain", ["S3.Example.test", "-s3.example", "s3.example.", "s3 example"])
def test_a_domain_that_is_no_dns_name_is_refused(domain):
    with pytest.raises(ConfigError) as error:
        load_config(None, {"GATEWAY_DOMAIN": domain})
    assert str(error.value) == ("gateway.domain (GATEWAY_DOMAIN) must be a DNS name such as s3.example.test, "
                                f"got {domain!r}")


def test_the_trailer_checksum_buffer_comes_from_the_file_or_the_environment_and_0_turns_it_off(tmp_path):
    assert load_config(None, {}).trailer_checksum_buffer == 64 * 1024 * 1024
    path = tmp_path / "g.toml"
    path.write_text("[gateway]\ntrailer_checksum_buffer = 1048576\n")
    assert load_config(path, {}).trailer_checksum_buffer == 1048576
    assert load_config(path, {"GATEWAY_TRAILER_CHECKSUM_BUFFER": "0"}).trailer_checksum_buffer == 0
    with pytest.raises(ConfigError, match="GATEWAY_TRAILER_CHECKSUM_BUFFER"):
        load_config(None, {"GATEWAY_TRAILER_CHECKSUM_BUFFER": "-1"})


_MAPPED = """
[[gateway.credentials]]
access_key = "AKA"
secret_key = "SKA"
upstream_access_key = "UPA"
upstream_secret_key = "UPSA"
[[gateway.credentials]]
access_key = "AKS"
secret_key = "SKS"
[upstream]
url = "http://127.0.0.1:9000"
access_key = "service"
secret_key = "service-secret"
"""


def test_a_credential_maps_to_its_own_upstream_user_and_one_without_uses_the_upstream_credential(tmp_path):
    cfg = load_config(_write(tmp_path, "[gateway]\n" + _MAPPED), {})
    mapped, unmapped = cfg.credentials
    assert (mapped.upstream_access_key, mapped.upstream_secret_key) == ("UPA", "UPSA")
    assert mapped.upstream_user == ("UPA", "UPSA")
    assert unmapped.upstream_user is None
    assert (cfg.upstream.access_key, cfg.upstream.secret_key) == ("service", "service-secret")


def test_the_environment_credential_uses_the_upstream_credential_unless_given_an_upstream_user(tmp_path):
    path = _write(tmp_path, "[gateway]\n" + _MAPPED)
    env = {"GATEWAY_ACCESS_KEY": "EK", "GATEWAY_SECRET_KEY": "ES", "GATEWAY_UPSTREAM_ACCESS_KEY": "u2",
           "GATEWAY_UPSTREAM_SECRET_KEY": "p2"}
    cfg = load_config(path, env)
    assert (cfg.credentials[-1].access_key, cfg.credentials[-1].upstream_user) == ("EK", None)
    assert (cfg.upstream.access_key, cfg.upstream.secret_key) == ("u2", "p2")  # [upstream], as before
    assert cfg.credentials[0].upstream_user == ("UPA", "UPSA")
    mapped = load_config(path, {**env, "GATEWAY_UPSTREAM_USER_ACCESS_KEY": "UE",
                                "GATEWAY_UPSTREAM_USER_SECRET_KEY": "USE"})
    assert mapped.credentials[-1].upstream_user == ("UE", "USE")
    assert (mapped.upstream.access_key, mapped.upstream.secret_key) == ("u2", "p2")


@pytest.mark.parametrize("env,message", [
    ({"GATEWAY_ACCESS_KEY": "EK", "GATEWAY_SECRET_KEY": "ES", "GATEWAY_UPSTREAM_USER_ACCESS_KEY": "UE"},
     "GATEWAY_UPSTREAM_USER_ACCESS_KEY and GATEWAY_UPSTREAM_USER_SECRET_KEY must be set together"),
    ({"GATEWAY_UPSTREAM_USER_SECRET_KEY": "USE"},
     "GATEWAY_UPSTREAM_USER_ACCESS_KEY and GATEWAY_UPSTREAM_USER_SECRET_KEY must be set together"),
    ({"GATEWAY_UPSTREAM_USER_ACCESS_KEY": "UE", "GATEWAY_UPSTREAM_USER_SECRET_KEY": "USE"},
     "GATEWAY_UPSTREAM_USER_ACCESS_KEY and GATEWAY_UPSTREAM_USER_SECRET_KEY are the upstream user of "
     "GATEWAY_ACCESS_KEY, which is not set"),
])
def test_a_wrong_environment_upstream_user_is_a_one_line_config_error(env, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, env)
    assert str(caught.value) == message


@pytest.mark.parametrize("half", ['upstream_access_key = "UPA"', 'upstream_secret_key = "UPSA"',
                                  'upstream_access_key = "UPA"\nupstream_secret_key = ""'])
def test_half_an_upstream_key_pair_is_a_one_line_config_error(tmp_path, half):
    path = _write(tmp_path, f'[gateway]\n[[gateway.credentials]]\naccess_key = "AK"\nsecret_key = "SK"\n{half}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value) == ("gateway.credentials[0].upstream_access_key and "
                                 "gateway.credentials[0].upstream_secret_key must be set together")


def test_an_upstream_key_that_is_no_string_is_a_config_error(tmp_path):
    path = _write(tmp_path, '[gateway]\n[[gateway.credentials]]\naccess_key = "AK"\nsecret_key = "SK"\n'
                            'upstream_access_key = 1\nupstream_secret_key = "x"\n')
    with pytest.raises(ConfigError, match=r"^gateway.credentials\[0\].upstream_access_key must be a string, got 1$"):
        load_config(path, {})


def test_an_unknown_credential_field_names_the_fields_it_takes(tmp_path):
    path = _write(tmp_path, '[gateway]\n[[gateway.credentials]]\naccess_key = "AK"\nsecret_key = "SK"\n'
                            'upstream_key = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value) == ("gateway.credentials[0] takes only access_key, secret_key, principal, "
                                 "upstream_access_key, upstream_secret_key")


def test_an_upstream_users_secret_key_is_redacted_from_logs(tmp_path):
    from gateway.config import secrets_of
    assert "UPSA" in secrets_of(load_config(_write(tmp_path, "[gateway]\n" + _MAPPED), {}), {})


def test_observability_settings_from_the_file_the_environment_and_the_command_line(tmp_path):
    path = _write(tmp_path, '[gateway]\nadmin_listen = "127.0.0.1:9090"\naccess_log = "off"\n'
                            'access_log_format = "text"\n')
    cfg = load_config(path, {})
    assert (cfg.admin_host_port, cfg.access_log, cfg.access_log_format) == (("127.0.0.1", 9090), "off", "text")
    cfg = load_config(path, {"GATEWAY_ADMIN_LISTEN": "0.0.0.0:9100", "GATEWAY_ACCESS_LOG": "/var/log/gw.log",
                             "GATEWAY_ACCESS_LOG_FORMAT": "json"}, admin_listen="[::1]:9200")
    assert (cfg.admin_host_port, cfg.access_log, cfg.access_log_format) == (("::1", 9200), "/var/log/gw.log", "json")
    assert load_config(None, {}).admin_host_port is None and load_config(None, {}).access_log == "stdout"


@pytest.mark.parametrize("env, message", [
    ({"GATEWAY_ADMIN_LISTEN": "9090"}, "gateway.admin_listen (GATEWAY_ADMIN_LISTEN) must be HOST:PORT, got '9090'"),
    ({"GATEWAY_ACCESS_LOG_FORMAT": "xml"}, "GATEWAY_ACCESS_LOG_FORMAT) must be one of json, text, got 'xml'"),
    ({"GATEWAY_ACCESS_LOG": " "}, "GATEWAY_ACCESS_LOG) must be stdout, stderr, off or a file path"),
])
def test_a_bad_observability_setting_is_refused_naming_it(env, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, env)
    assert message in str(error.value)


@pytest.mark.parametrize("text, named", [('[gatway]\nlisten = "127.0.0.1:1"\n', "[gatway]"),
                                         ('[upstrem]\nurl = "http://127.0.0.1:9000"\n', "[upstrem]"),
                                         ('listen = "127.0.0.1:1"\n', "[listen]")])
def test_an_unknown_top_level_section_or_key_is_refused_naming_it(tmp_path, text, named):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        load_config(path, {})
    assert str(refused.value) == (f"unknown section(s) in {path}: {named} (known: [gateway], [upstream], [kms], "
                                  "[buckets], [keyservice])")


def test_every_known_section_is_accepted_and_startup_checks_default_on_with_an_environment_switch(tmp_path):
    path = _write(tmp_path, '[gateway]\n[upstream]\n[kms]\n[buckets]\n[keyservice]\n')
    assert load_config(path, {}).startup_checks is True
    assert load_config(path, {"GATEWAY_STARTUP_CHECKS": "false"}).startup_checks is False
    with pytest.raises(ConfigError, match=r"gateway.startup_checks \(GATEWAY_STARTUP_CHECKS\) must be true or false"):
        load_config(path, {"GATEWAY_STARTUP_CHECKS": "maybe"})
