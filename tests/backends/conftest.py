"""The Azure adapters' own tests use the fixtures of their seams' contract suites: Azurite's
``azure_store`` and the Service Bus peer."""

from __future__ import annotations

from tests.parley.blobstore.conftest import azure_store
from tests.parley.broker.conftest import servicebus_peer

__all__ = ["azure_store", "servicebus_peer"]
