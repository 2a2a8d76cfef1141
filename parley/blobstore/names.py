"""The naming rules every blob store applies, so that a path or metadata key accepted by one
adapter is accepted by all of them. Pure functions, no I/O.

Blob paths come from users (upload file names) and from other systems (blob events), so they are
untrusted: a bad one raises :class:`parley.errors.Reject` with a message saying what is wrong.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from urllib.parse import quote, unquote

from parley.errors import Reject

MAX_PATH_CHARS = 1024  # Azure's limit for a blob name
MAX_SEGMENTS = 254  # Azure's limit for "/"-separated segments
# NAME_MAX is 255 bytes on Linux file systems; the local store adds no suffix to data files,
# but keep a margin so a path valid here is valid on every common file system.
MAX_SEGMENT_BYTES = 250
MAX_METADATA_BYTES = 8 * 1024  # Azure: all metadata names and values together
DEFAULT_CONTENT_TYPE = "application/octet-stream"  # what Azure reports when none was set

_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
# Printable ASCII except "%" passes through unchanged, so ordinary values stay readable in the
# Azure portal; everything else (non-ASCII, controls, spaces, "%") is percent-encoded as UTF-8.
_SAFE_VALUE_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def _reject(what: str, value: str, why: str) -> Reject:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return Reject(f"bad {what} {shown!r}: {why}", reason=f"bad_{what.replace(' ', '_')}")


def _check_chars(what: str, value: str) -> None:
    if "\\" in value:
        raise _reject(what, value, "backslashes are not allowed (use '/')")
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise _reject(what, value, f"control character U+{ord(char):04X} is not allowed")


def check_container(name: str) -> str:
    """An Azure container name: 3-63 of ``a-z 0-9 -``, no leading/trailing/double hyphen."""
    if not _CONTAINER.match(name):
        raise _reject(
            "container name", name,
            "use 3-63 lowercase letters, digits and single hyphens, starting and ending with a "
            "letter or digit",
        )
    return name


def check_path(path: str) -> str:
    """Return ``path`` unchanged if it is a safe relative blob path, else raise Reject.

    Rejected: empty, leading ``/``, empty segments (``a//b``, trailing ``/``), ``.``/``..``
    segments, backslashes, control characters (NUL included), lone surrogates, more than
    1024 characters or 254 segments, a segment over 250 UTF-8 bytes.
    """
    if not isinstance(path, str) or not path:
        raise _reject("blob path", str(path), "it is empty")
    if len(path) > MAX_PATH_CHARS:
        raise _reject("blob path", path, f"longer than {MAX_PATH_CHARS} characters")
    _check_chars("blob path", path)
    if path.startswith("/"):
        raise _reject("blob path", path, "absolute paths are not allowed")
    segments = path.split("/")
    if len(segments) > MAX_SEGMENTS:
        raise _reject("blob path", path, f"more than {MAX_SEGMENTS} segments")
    for segment in segments:
        if not segment:
            raise _reject("blob path", path, "empty segment (leading, trailing or double '/')")
        if segment in (".", ".."):
            raise _reject("blob path", path, f"'{segment}' segments are not allowed")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise _reject("blob path", path, f"a segment is over {MAX_SEGMENT_BYTES} bytes")
    return path


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty, or the start of a valid path (it may end inside a segment or
    with ``/``)."""
    if prefix:
        check_path(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def check_content_type(content_type: str | None) -> str:
    """The content type to store: the given one if it is printable and at most 255 characters,
    else Reject; ``application/octet-stream`` when None."""
    if content_type is None:
        return DEFAULT_CONTENT_TYPE
    if not content_type or len(content_type) > 255 or not content_type.isprintable():
        raise _reject("content type", content_type, "use a printable MIME type")
    return content_type


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Metadata keys must be C# identifiers (Azure's rule, applied everywhere so stores agree);
    values are any text. Raises Reject when a key is bad or the encoded total exceeds 8 KiB."""
    result: dict[str, str] = {}
    seen: set[str] = set()
    total = 0
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not _METADATA_KEY.match(key):
            raise _reject(
                "metadata key", str(key),
                "use a letter or '_' followed by letters, digits or '_' (a C# identifier)",
            )
        if not isinstance(value, str):
            raise _reject("metadata value", repr(value), f"the value of {key!r} is not a string")
        if key.lower() in seen:
            raise _reject("metadata key", key, "keys are case-insensitive; this one repeats")
        seen.add(key.lower())
        total += len(key) + len(encode_metadata_value(value))
        result[key] = value
    if total > MAX_METADATA_BYTES:
        raise Reject(
            f"metadata is {total} bytes encoded, over the {MAX_METADATA_BYTES} byte limit",
            reason="metadata_too_large",
        )
    return result


def encode_metadata_value(value: str) -> str:
    """ASCII-safe form of a metadata value (Azure headers carry only ASCII):
    percent-encoded UTF-8, printable ASCII other than ``%`` left as is."""
    return quote(value, safe=_SAFE_VALUE_CHARS, encoding="utf-8", errors="strict")


def decode_metadata_value(value: str) -> str:
    """Inverse of :func:`encode_metadata_value`. A value written by another system that holds a
    ``%`` not followed by two hex digits is returned unchanged."""
    if "%" not in value:
        return value
    try:
        return unquote(value, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:  # not our encoding: another writer's literal "%FF"
        return value
