"""One root exception, and under it three families a consumer's handler may raise:

- flow control, for the consumer runtime (:mod:`parley.runtime.consumer`): :class:`Retry` (try
  the message again, after ``delay``) and :class:`Reject` (dead-letter it at once, with the
  reason); :class:`Unsettled` is what the runtime hands its hooks when it gives up on a message
  that was never settled;
- :class:`UserError`: what went wrong with the user's own input (an encrypted PDF, a file with
  no text), in words for that user. Terminal: never retried nor dead-lettered; the service's
  ``on_user_error`` hook records it (a document's status);
- anything else, ours or not (:class:`ConfigError`, a ``ConnectionError``): unexpected, so
  retried up to the queue's ``max_attempts``, then dead-lettered after ``on_retry_exhausted``.
"""

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


class Unsettled(ParleyError):
    """Not raised: handed to ``on_retry_exhausted`` for a message delivered more often than
    ``max_attempts`` without ever being settled (its handling killed or hung the worker)."""

    reason = "max_deliveries"


class UserError(ParleyError):
    """The user's input cannot be used, and trying again cannot change that; ``message`` is
    shown to that user as it is. Terminal for the work item: not retried, not dead-lettered."""

    reason = "unusable"


class ConfigError(ParleyError):
    """The settings are wrong or incomplete; the message says which variable to set."""

    reason = "config"


class NotFound(ParleyError):
    reason = "not_found"


class TooLarge(UserError):
    """Over a size limit of ``limit`` bytes; ``size`` is the whole size when it is known (a
    stream refused at the limit is not read to its end)."""

    reason = "too_large"

    def __init__(
        self, message: str, *, limit: int, size: int | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.limit = limit
        self.size = size
