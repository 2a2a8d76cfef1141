"""Parley's shared core: settings, wire contracts, seams (Broker, BlobStore, Embedder,
VectorStore, ChatModel) and the consumer runtime that every worker runs on."""

__version__ = "0.1.0"
