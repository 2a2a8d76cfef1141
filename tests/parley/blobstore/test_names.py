"""The naming rules shared by every store (pure functions)."""

from __future__ import annotations

import pytest

from parley.blobstore.names import (
    check_container,
    check_metadata,
    check_path,
    check_prefix,
    decode_metadata_value,
    encode_metadata_value,
)
from parley.errors import Reject

from .test_contract import HOSTILE_PATHS, UNICODE_NAME


@pytest.mark.parametrize("path", HOSTILE_PATHS, ids=range(len(HOSTILE_PATHS)))
def test_hostile_paths(path: str) -> None:
    with pytest.raises(Reject) as caught:
        check_path(path)
    assert caught.value.reason == "bad_blob_path"
    assert "bad blob path" in caught.value.message


@pytest.mark.parametrize(
    "path", ["a", "acme/reports/q3.pdf", "...", "a b/c#d?.pdf", UNICODE_NAME, "x" * 250,
             "é" * 125, "a/" * 253 + "b"],
)
def test_valid_paths(path: str) -> None:
    assert check_path(path) == path


def test_messages_say_what_is_wrong() -> None:
    cases = {
        "../x": "'..' segments",
        "/etc/passwd": "absolute",
        "a\\b": "backslashes",
        "a\x00b": "U+0000",
        "a//b": "empty segment",
        "x" * 1025: "1024 characters",
    }
    for path, words in cases.items():
        with pytest.raises(Reject) as caught:
            check_path(path)
        assert words in caught.value.message


def test_prefixes() -> None:
    for prefix in ("", "a", "a/", "acme/rep"):
        assert check_prefix(prefix) == prefix
    for prefix in ("/", "../", "a//", "a\\"):
        with pytest.raises(Reject):
            check_prefix(prefix)


def test_container_names() -> None:
    for name in ("documents", "abc", "a-1", "x" * 63):
        assert check_container(name) == name
    for name in ("ab", "x" * 64, "Docs", "-abc", "abc-", "a--b", ".meta", "a_b", "../a"):
        with pytest.raises(Reject):
            check_container(name)


@pytest.mark.parametrize(
    "value", ["", "plain-ASCII_1.2", UNICODE_NAME, " edge spaces ", "100%", "%41", "\x00\n\t",
              "a+b=c&d", "日本語のファイル名.docx"],
)
def test_metadata_values_round_trip_as_ascii(value: str) -> None:
    encoded = encode_metadata_value(value)
    assert encoded.isascii() and encoded.isprintable() and " " not in encoded
    assert decode_metadata_value(encoded) == value


def test_plain_values_stay_readable_and_foreign_values_survive() -> None:
    assert encode_metadata_value("acme/q3-final_v2.pdf") == "acme/q3-final_v2.pdf"
    assert decode_metadata_value("100% done") == "100% done"
    assert decode_metadata_value("%FF%FE") == "%FF%FE"  # not UTF-8: left as written


def test_metadata_keys() -> None:
    assert check_metadata({"filename": "x", "_a1": "y", "Tenant": "z"}) == {
        "filename": "x", "_a1": "y", "Tenant": "z",
    }
    assert check_metadata(None) == {}
    for bad in ({"file-name": "x"}, {"1a": "x"}, {"": "x"}, {"a b": "x"}, {"ü": "x"},
                {"a": "x", "A": "y"}):
        with pytest.raises(Reject):
            check_metadata(bad)
    with pytest.raises(Reject, match="8192"):
        check_metadata({"big": "é" * 1500})  # 9000 bytes once percent-encoded
