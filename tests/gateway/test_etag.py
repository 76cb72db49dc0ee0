"""The client-visible ETag rule, ETag matching, and conditional requests evaluated against it."""
from gateway.etag import client_etag, etag_matches
from gateway.handlers.conditions import evaluate_conditions


def test_encrypted_etag_is_upstream_md5_with_part_suffix():
    assert client_etag('"0123456789abcdef0123456789abcdef"') == '"0123456789abcdef0123456789abcdef-1"'


def test_encrypted_etag_accepts_unquoted_upstream_etag():
    assert client_etag("0123456789abcdef0123456789abcdef") == '"0123456789abcdef0123456789abcdef-1"'


def test_upstream_etag_that_already_has_a_suffix_is_kept():
    assert client_etag('"abc-3"') == '"abc-3"'


def test_etag_matches_quoted_unquoted_weak_and_lists():
    etag = '"abc-1"'
    assert etag_matches('"abc-1"', etag)
    assert etag_matches("abc-1", etag)
    assert etag_matches('W/"abc-1"', etag)
    assert etag_matches('"zzz", "abc-1"', etag)
    assert etag_matches("*", etag)


def test_etag_does_not_match_other_tags():
    assert not etag_matches('"abc"', '"abc-1"')
    assert not etag_matches('"zzz", "yyy"', '"abc-1"')


ETAG = '"abc-1"'
MODIFIED = "Wed, 01 Jan 2025 12:00:00 GMT"
BEFORE = "Tue, 31 Dec 2024 12:00:00 GMT"
AFTER = "Thu, 02 Jan 2025 12:00:00 GMT"


def test_no_conditions_serve_the_object():
    assert evaluate_conditions({}, ETAG, MODIFIED) is None


def test_if_match_mismatch_is_412_and_match_wins_over_if_unmodified_since():
    assert evaluate_conditions({"if-match": '"other"'}, ETAG, MODIFIED) == 412
    assert evaluate_conditions({"if-match": ETAG, "if-unmodified-since": BEFORE}, ETAG, MODIFIED) is None


def test_if_unmodified_since_before_last_modified_is_412():
    assert evaluate_conditions({"if-unmodified-since": BEFORE}, ETAG, MODIFIED) == 412
    assert evaluate_conditions({"if-unmodified-since": AFTER}, ETAG, MODIFIED) is None


def test_if_none_match_on_the_client_etag_is_304_and_wins_over_if_modified_since():
    assert evaluate_conditions({"if-none-match": ETAG}, ETAG, MODIFIED) == 304
    assert evaluate_conditions({"if-none-match": '"other"', "if-modified-since": AFTER}, ETAG, MODIFIED) is None


def test_if_modified_since_not_modified_is_304():
    assert evaluate_conditions({"if-modified-since": AFTER}, ETAG, MODIFIED) == 304
    assert evaluate_conditions({"if-modified-since": BEFORE}, ETAG, MODIFIED) is None


def test_unparseable_dates_are_ignored():
    assert evaluate_conditions({"if-modified-since": "yesterday"}, ETAG, MODIFIED) is None
