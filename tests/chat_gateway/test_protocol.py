"""Client message parsing: every failure is a typed, readable error."""

from __future__ import annotations

import json

import pytest

from chat_gateway import protocol
from chat_gateway.protocol import Ask, ErrorCode, ProtocolError, Resume


def test_valid_messages() -> None:
    ask = protocol.parse(json.dumps({"type": "ask", "question": "q", "conversation_id": "c-1"}))
    assert isinstance(ask, Ask) and ask.conversation_id == "c-1"
    resume = protocol.parse(json.dumps({"type": "resume", "turn_id": "a" * 32, "offset": "1-2"}))
    assert isinstance(resume, Resume) and resume.offset == "1-2"


@pytest.mark.parametrize(
    ("raw", "code", "words"),
    [
        ("nope", ErrorCode.BAD_REQUEST, "not valid JSON"),
        ('"text"', ErrorCode.BAD_REQUEST, "JSON object"),
        ('{"type": "hello"}', ErrorCode.UNKNOWN_TYPE, "expected one of"),
        ('{"type": "ask"}', ErrorCode.BAD_REQUEST, "question"),
        ('{"type": "ask", "question": "q", "max_tokens": 0}', ErrorCode.BAD_REQUEST, "max_tokens"),
        ('{"type": "resume", "turn_id": "' + "a" * 32 + '", "offset": "x"}',
         ErrorCode.BAD_REQUEST, "offset"),
        (json.dumps({"type": "ask", "question": "é" * 9000}), ErrorCode.TOO_LARGE, "larger"),
    ],
)
def test_errors(raw: str, code: ErrorCode, words: str) -> None:
    with pytest.raises(ProtocolError) as error:
        protocol.parse(raw)
    assert error.value.code == code and words in error.value.message


def test_error_event_shape() -> None:
    event = protocol.error(ErrorCode.RATE_LIMITED, "slow down", retry_after=1.23456, hint="wait")
    assert event == {"type": "error", "code": "rate_limited", "message": "slow down",
                     "hint": "wait", "retry_after": 1.235}
