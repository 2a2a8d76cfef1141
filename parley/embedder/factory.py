"""Builds the embedder the settings name: Azure OpenAI, or all-MiniLM-L6-v2 on a GPU
(sentence-transformers, the ``gpu`` extra) or on the CPU (onnxruntime, the default)."""

from __future__ import annotations

from parley.embedder import Embedder
from parley.errors import ConfigError
from parley.settings import Settings

DEVICES = ("auto", "cpu", "cuda")


def build_embedder(settings: Settings) -> Embedder:
    """``PARLEY_EMBEDDER=azure-openai`` -> :class:`AzureOpenAIEmbedder`. Else by
    ``PARLEY_EMBED_DEVICE``: ``cuda`` -> :class:`GpuEmbedder` (a :class:`ConfigError` if torch is
    missing), ``cpu`` -> :class:`LocalEmbedder`, ``auto`` -> the GPU one when torch sees a CUDA
    device, else the local one. Raises :class:`ConfigError` for an unknown device."""
    if settings.embedder == "azure-openai":
        from parley.embedder.azure import AzureOpenAIEmbedder

        return AzureOpenAIEmbedder.from_settings(settings)
    device = settings.embed_device
    if device not in DEVICES:
        raise ConfigError(
            f"unknown embedding device {device!r}",
            hint="set PARLEY_EMBED_DEVICE to auto, cpu or cuda",
        )
    if device != "cpu":
        from parley.embedder.gpu import GpuEmbedder, cuda_available

        if device == "cuda" or cuda_available():
            return GpuEmbedder(device="cuda")
    from parley.embedder.local import LocalEmbedder, LocalEmbedderConfig

    return LocalEmbedder(LocalEmbedderConfig(threads=settings.embed_threads))
