"""The adapter each seam gets from :class:`parley.settings.Settings`. The embedder: Azure OpenAI,
or all-MiniLM-L6-v2 on a GPU (sentence-transformers, the ``gpu`` extra) or on the CPU
(onnxruntime, the default); and, during a switch of embedding model, the embedder of the model
being left (``PARLEY_EMBEDDING_PREVIOUS__*``). The blob store: a local folder or Azure Blob
Storage. (The brokers, one per backend, are opened by :class:`backends.clients.Brokers`.)"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from parley.blobstore import BlobStore
from parley.embedder import Embedder, Tokenizer
from parley.errors import ConfigError
from parley.settings import Settings

DEVICES = ("auto", "cpu", "cuda")

# Fields of the previous embedder that default to the current one's when unset: where the
# service is and how to sign in, not which model it is.
_INHERITED = ("azure_openai_endpoint", "azure_openai_api_key", "azure_openai_api_version")


def build_embedder(settings: Settings) -> Embedder:
    """``PARLEY_EMBEDDER=azure-openai`` -> :class:`AzureOpenAIEmbedder`. Else by
    ``PARLEY_EMBED_DEVICE``: ``cuda`` -> :class:`GpuEmbedder` (a :class:`ConfigError` if torch is
    missing), ``cpu`` -> :class:`LocalEmbedder`, ``auto`` -> the GPU one when torch sees a CUDA
    device, else the local one. Raises :class:`ConfigError` for an unknown device."""
    if settings.embedder == "azure-openai":
        from backends.azure_embedder import AzureOpenAIEmbedder

        return AzureOpenAIEmbedder.from_settings(settings)
    if _on_gpu(settings):
        from parley.embedder.gpu import GpuEmbedder

        return GpuEmbedder(device="cuda")
    from parley.embedder.local import LocalEmbedder, LocalEmbedderConfig

    return LocalEmbedder(
        LocalEmbedderConfig(threads=settings.embed_threads, graph=settings.embed_graph,
                            spin=settings.embed_spin, cache=graph_cache())
    )


def graph_cache() -> Path | None:
    """Where the local embedder keeps its fused graph between processes: a folder of this user's
    in the temporary directory (``TMPDIR``; on Kubernetes the pod's ``/tmp`` volume, kept when a
    container restarts in its pod). None when that folder belongs to another user (on a shared
    machine a planted graph would be run)."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    folder = Path(tempfile.gettempdir()) / f"parley-{uid if uid is not None else 'user'}"
    try:
        if uid is not None and folder.stat().st_uid != uid:
            return None
    except OSError:
        pass  # not there yet: created (0700) by the first write
    return folder


def _on_gpu(settings: Settings) -> bool:
    """Whether the local model runs on the GPU: ``cuda``, or ``auto`` with a CUDA device seen by
    torch (imported only when installed). Raises :class:`ConfigError` for an unknown device."""
    device = settings.embed_device
    if device not in DEVICES:
        raise ConfigError(
            f"unknown embedding device {device!r}",
            hint="set PARLEY_EMBED_DEVICE to auto, cpu or cuda",
        )
    if device == "cpu":
        return False
    from parley.embedder.gpu import cuda_available

    return device == "cuda" or cuda_available()


def build_tokenizer(settings: Settings) -> Tokenizer:
    """The tokenizer of the embedder :func:`build_embedder` would give, without loading a model
    (for the ingest worker, which sizes chunks but embeds nothing)."""
    if settings.embedder == "azure-openai":
        from backends.azure_embedder import ApproxCl100kTokenizer

        return ApproxCl100kTokenizer()
    from parley.embedder.local import MiniLMTokenizer

    return MiniLMTokenizer()


def previous_settings(settings: Settings) -> Settings | None:
    """``settings`` with the embedding fields of ``PARLEY_EMBEDDING_PREVIOUS__*`` in place of the
    current ones (endpoint, key and API version inherited when unset); None when no previous
    embedding model is configured."""
    previous = settings.embedding_previous
    if previous is None:
        return None
    fields = {name: getattr(previous, name) for name in type(previous).model_fields}
    for name in _INHERITED:
        if fields[name] is None:
            fields[name] = getattr(settings, name)
    return settings.model_copy(update={**fields, "embedding_previous": None})


def build_previous_embedder(settings: Settings) -> Embedder | None:
    """The embedder of the model a switch is leaving, built like :func:`build_embedder`; None
    when ``PARLEY_EMBEDDING_PREVIOUS__*`` is not set."""
    previous = previous_settings(settings)
    return None if previous is None else build_embedder(previous)


async def model_id_of(settings: Settings) -> str:
    """The ``model_id`` :func:`build_embedder` would give, without loading a local model (the GPU
    embedder shares the id of the CPU one's fp32 graphs). Raises :class:`ConfigError` as it
    does."""
    if settings.embedder == "local":
        from parley.embedder.local import FP32_MODEL_ID, model_id_for

        return FP32_MODEL_ID if _on_gpu(settings) else model_id_for(settings.embed_graph)
    embedder = build_embedder(settings)  # Azure: builds a client, sends nothing
    try:
        return embedder.model_id
    finally:
        await embedder.close()


def open_blob_store(settings: Settings) -> BlobStore:
    """The blob store the settings name; no I/O happens until the first call on it.

    ``PARLEY_BLOB_BACKEND=local``: a directory at ``PARLEY_BLOB_DIR``.
    ``PARLEY_BLOB_BACKEND=azure``: ``PARLEY_BLOB_CONNECTION_STRING`` when set (Azurite, keys),
    else ``PARLEY_BLOB_ACCOUNT_URL`` with DefaultAzureCredential. The caller closes the store.
    """
    if settings.blob_backend == "local":
        from parley.blobstore.local import LocalBlobStore

        return LocalBlobStore(settings.blob_dir, settings.blob_container)
    from backends.azure_blob import AzureBlobStore

    if settings.blob_connection_string is not None:
        return AzureBlobStore.from_connection_string(
            settings.blob_connection_string.get_secret_value(),
            settings.blob_container,
            create_container=settings.blob_create_container,
        )
    if settings.blob_account_url:
        return AzureBlobStore.from_account_url(
            settings.blob_account_url,
            settings.blob_container,
            create_container=settings.blob_create_container,
        )
    raise ConfigError(
        "the azure blob backend needs an account URL or a connection string",
        hint="set PARLEY_BLOB_ACCOUNT_URL (Entra ID) or PARLEY_BLOB_CONNECTION_STRING",
    )
