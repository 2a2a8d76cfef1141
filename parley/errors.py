"""One root exception. Handlers raise :class:`Retry` to have a message tried again later and
:class:`Reject` to dead-letter it at once; anything else counts as a transient failure."""

from __future__ import annotations


class ParleyError(Exception):
    """Root of every error Parley raises on purpose.

    ``reason`` is a short machine-readable code (``encrypted_pdf``, ``broker_unreachable``),
    ``message`` says what happened and ``hint`` what a person can do about it.
    """

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.message} [{self.reason}]"
        return f"{text}; {self.hint}" if self.hint else text


class Retry(ParleyError):
    """Transient: try the message again after ``delay`` seconds (or the runtime's backoff)."""

    reason = "retry"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        hint: str | None = None,
        delay: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, hint=hint)
        self.delay = delay


class Reject(ParleyError):
    """Permanent: retrying cannot help; dead-letter the message with this reason."""

    reason = "rejected"


class ConfigError(ParleyError):
    """The settings are wrong or incomplete; the message says which variable to set."""

    reason = "config"


class NotFound(ParleyError):
    reason = "not_found"


class TooLarge(ParleyError):
    """Over a size limit of ``limit`` bytes; ``size`` is the whole size when it is known (a
    stream refused at the limit is not read to its end)."""

    reason = "too_large"

    def __init__(
        self, message: str, *, limit: int, size: int | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.limit = limit
        self.size = size
