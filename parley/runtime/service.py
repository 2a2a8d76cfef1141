"""What a worker plugs into the consumer runtime: how a queue message is read, what is done with
each item in it, and hooks for the outcomes, in the manner of dramatiq's middleware.

A :class:`Service` turns a delivery into typed items (:meth:`~Service.parse`: a wire contract
from :mod:`parley.contracts`; :class:`~parley.errors.Reject` when the body is not one) and
handles them one by one, in order (:meth:`~Service.handle`: the business logic alone). Most
messages hold one item; an Event Grid delivery may hold several events. The consumer
(:mod:`parley.runtime.consumer`) settles the delivery and calls the hooks; each does nothing
unless a service overrides it:

- ``on_rejected(delivery, item, error)``: the message goes to the dead letters at once, not
  retried: malformed (``item`` is None) or a :class:`~parley.errors.Reject` raised by the handler;
- ``on_user_error(delivery, item, error)``: the handler raised a
  :class:`~parley.errors.UserError`: terminal for that item (recorded by the hook, e.g. as the
  document's status), not retried; the message's next items are handled. A hook that fails
  counts as a failure of the handler (retried): the user's outcome must be recorded;
- ``on_retry_exhausted(delivery, item, error)``: the last attempt failed (``error`` is what it
  raised), or the message was delivered more than ``max_attempts`` times without being settled
  (``error`` is :class:`~parley.errors.Unsettled`; called for each item the body holds, or once
  with None when it holds none). Called before the dead letter; a failing hook is logged, and
  the message is dead-lettered all the same.

As in dramatiq, the retry policy is the runtime's and the give-up is a hook (its Retries
middleware's "retries exhausted" callback); dramatiq's ``after_nack`` is either of
``on_rejected`` and ``on_retry_exhausted`` here. ``before_process_message`` has no counterpart:
nothing needs one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from parley.broker import Message
from parley.contracts import problems
from parley.errors import Reject, UserError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

Handler = Callable[[Message], Awaitable[None]]


class Service(Generic[T]):
    """A queue's typed handler and its hooks. Subclasses define :meth:`parse` and
    :meth:`handle` and override the hooks they need."""

    def parse(self, delivery: Message) -> Sequence[T]:
        """The items of one delivery, in order. Raises :class:`Reject` for a body that is not
        the queue's contract (``malformed_message`` with what is wrong)."""
        raise NotImplementedError

    async def handle(self, item: T, delivery: Message) -> None:
        """Do the work of one item. Raise :class:`~parley.errors.Retry` to have the message
        delivered again, :class:`Reject` to dead-letter it, :class:`UserError` to end this
        item for its user; anything else is retried up to the queue's ``max_attempts``."""
        raise NotImplementedError

    async def on_rejected(self, delivery: Message, item: T | None, error: Reject) -> None:
        """The delivery goes to the dead letters with ``error`` as the reason."""

    async def on_user_error(self, delivery: Message, item: T, error: UserError) -> None:
        """``item`` ended with ``error``, whose message is for its user."""

    async def on_retry_exhausted(
        self, delivery: Message, item: T | None, error: Exception
    ) -> None:
        """The runtime gives up on the delivery; ``item`` is the one being handled (None when
        the body holds no item)."""

    async def __call__(self, delivery: Message) -> None:
        """Handle a delivery as the consumer does, without settling it or calling the hooks
        other than ``on_user_error`` (for tools and tests that drive a service by hand)."""
        for item in self.parse(delivery):
            try:
                await self.handle(item, delivery)
            except UserError as error:
                await self.on_user_error(delivery, item, error)


class Plain(Service[Message]):
    """A bare ``async def handler(message)`` as a service: the delivery is its one item."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def parse(self, delivery: Message) -> Sequence[Message]:
        return (delivery,)

    async def handle(self, item: Message, delivery: Message) -> None:
        await self.handler(item)


def as_service(handler: Service[Any] | Handler) -> Service[Any]:
    return handler if isinstance(handler, Service) else Plain(handler)


def typed(contract: type[M], delivery: Message, *, what: str) -> M:
    """The delivery's body as ``contract``; :class:`Reject` (``malformed_message``) naming
    ``what`` was expected and what is wrong, never the offending input."""
    try:
        return contract.model_validate_json(delivery.body)
    except ValidationError as exc:
        raise Reject(f"not a {what}: {problems(exc)}", reason="malformed_message") from exc
