"""How long a throttled HTTP service asks to be left alone: read by every adapter that calls one
(the Azure OpenAI embedder here, the chat-completions models of the inference worker)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from a 429's headers: ``retry-after-ms`` (Azure OpenAI), else
    ``Retry-After`` as seconds or an HTTP date (counted from ``now``, default the clock). None
    when absent or unreadable; never negative."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
