"""One settings object, read from the environment (``PARLEY_*``) and passed down explicitly.

Defaults are the embedded local stack: Redis on localhost, a Chroma server on localhost, a blob
store in a local directory and models shipped inside PyPI packages. Nothing needs a cloud account.
Nested values use ``__``: ``PARLEY_QUEUES__INGEST__BACKEND=servicebus``.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parley.keys import Keys

# The folder `parley up` keeps its data in and writes stack.env to, for the other commands.
STATE_DIR = os.environ.get("PARLEY_STATE") or ".parley"


class BrokerBackend(StrEnum):
    REDIS = "redis"
    SERVICEBUS = "servicebus"


class QueueSettings(BaseModel):
    """Where one logical queue lives. ``name`` is the one name used by code, KEDA and Terraform."""

    name: str
    backend: BrokerBackend = BrokerBackend.REDIS
    concurrency: int = Field(default=4, ge=1, le=256)
    max_attempts: int = Field(default=5, ge=1, le=100)
    # Redis: a leased message idle this long is reclaimed (its consumer died). Service Bus: the
    # queue's LockDuration governs instead; keep both above the slowest handler.
    lease_seconds: float = Field(default=60.0, gt=0)


class Queues(BaseModel):
    ingest: QueueSettings = QueueSettings(name="parley-ingest", concurrency=2)
    embed: QueueSettings = QueueSettings(name="parley-embed", concurrency=2)
    chat: QueueSettings = QueueSettings(name="parley-chat", concurrency=8, lease_seconds=30.0)

    @model_validator(mode="before")
    @classmethod
    def _keep_defaults(cls, data: Any) -> Any:
        """A partial override (``PARLEY_QUEUES__INGEST__BACKEND=servicebus``) keeps the queue's
        other defaults (its name, concurrency...) instead of failing on the missing name."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            value = data.get(name)
            if isinstance(value, dict) and isinstance(field.default, QueueSettings):
                merged[name] = {**field.default.model_dump(), **value}
        return merged


class PreviousEmbedding(BaseModel):
    """The embedding model a switch is leaving (``PARLEY_EMBEDDING_PREVIOUS__<FIELD>``), with the
    same fields as the current embedder's settings. While a tenant's re-embedding into the
    current model is not complete, searches also read the tenant's collection of this model
    (:mod:`chat_gateway.search`). The endpoint, key and API version default to the current ones;
    the other fields have the same defaults as the current embedder's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    embedder: str = Field(pattern="^(local|azure-openai)$")
    embed_device: str = "auto"
    embed_threads: int = Field(default=0, ge=0)
    embed_graph: Literal["int8", "fp32", "packaged"] = "int8"
    azure_openai_endpoint: str | None = None
    azure_openai_api_key: SecretStr | None = None
    azure_openai_api_version: str | None = None
    azure_openai_embedding_deployment: str = "text-embedding-3-small"
    azure_openai_embedding_dimensions: int | None = None
    azure_openai_embedding_max_inputs: int = 2048
    azure_openai_embedding_max_tokens: int = 300_000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PARLEY_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        # Written by ``parley up`` (in its state folder, PARLEY_STATE) so that commands in
        # another terminal find the local stack; real environment variables take precedence.
        env_file=os.path.join(STATE_DIR, "stack.env"),
    )

    # --- infrastructure -------------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    chroma_url: str = "http://127.0.0.1:8000"
    servicebus_namespace: str | None = None  # e.g. "parley.servicebus.windows.net" (Entra ID)
    servicebus_connection_string: SecretStr | None = None  # local fallback / test peer
    queues: Queues = Queues()
    # Prefix of every Redis key Parley writes, so that two stacks can share one Redis.
    redis_prefix: str = "parley"
    # The ingest and embed workers' consumer name on Redis Streams; None: unique per process. A
    # process given its dead predecessor's name takes the messages it left at once (see
    # parley.broker.redis): set by `parley up` per child slot; on Kubernetes, the pod's name.
    consumer_name: str | None = Field(default=None, min_length=1, max_length=200)

    # --- blob store -------------------------------------------------------------------------
    blob_backend: str = Field(default="local", pattern="^(local|azure)$")
    blob_dir: Path = Path(".parley/blobs")
    blob_container: str = "documents"
    blob_account_url: str | None = None  # https://<account>.blob.core.windows.net (Entra ID)
    blob_connection_string: SecretStr | None = None  # Azurite or key-based fallback
    # Azure: create the container on first write if missing (Azurite/dev; Terraform on Azure).
    blob_create_container: bool = False
    # The local stack lists the container this often to emit BlobCreated/BlobDeleted events for
    # files dropped by other tools (Azurite has no Event Grid). 0 turns the watcher off.
    blob_watch_seconds: float = 2.0

    # --- documents ----------------------------------------------------------------------------
    default_tenant: str = "default"
    max_document_bytes: int = 100 * 1024 * 1024
    max_pages: int = 2000
    # Caps on what one document may produce: characters of extracted text (reason
    # too_much_text) and chunks (too_many_chunks). A small file can unpack to far more.
    max_document_chars: int = Field(default=10_000_000, ge=1)
    max_document_chunks: int = Field(default=20_000, ge=1)
    # Address-space limit of each extraction child. None: derived from the container's memory
    # limit (cgroup) so that every concurrent child fits beside the worker (see
    # ingest_worker.extract.isolation.child_memory_limit), at most 3 GiB.
    extract_memory_bytes: int | None = Field(default=None, ge=256 * 1024 * 1024)
    chunk_tokens: int = Field(default=200, ge=16)
    chunk_overlap_tokens: int = Field(default=30, ge=0)
    embed_batch_size: int = Field(default=32, ge=1)
    # OCR of scanned PDF pages and pictures in DOCX/PPTX (ingest worker): "local" (RapidOCR,
    # models inside its wheel), "azure" (Document Intelligence prebuilt-read) or "off".
    ocr: str = Field(default="local", pattern="^(local|azure|off)$")
    ocr_threads: int = Field(default=0, ge=0)  # local OCR's onnxruntime threads; 0 = one per core
    azure_docintel_endpoint: str | None = None  # https://<name>.cognitiveservices.azure.com
    azure_docintel_key: SecretStr | None = None

    # --- embeddings -------------------------------------------------------------------------
    embedder: str = Field(default="local", pattern="^(local|azure-openai)$")
    embed_device: str = "auto"  # auto | cpu | cuda (the GPU extra)
    # The local CPU embedder's onnxruntime threads; 0 = one per core.
    embed_threads: int = Field(default=0, ge=0)
    # Whether those threads spin between operators (onnxruntime's default) instead of sleeping:
    # 7-13% faster at load 5-7 on 2 cores, 1.2-1.4x slower at load 15 (bench/pipeline.py).
    embed_spin: bool = True
    # The local CPU embedder's graph: int8 (fused, int8 products; its own model id), fp32 (fused;
    # the vectors of the packaged file and of the GPU embedder), packaged (the file as shipped).
    embed_graph: Literal["int8", "fp32", "packaged"] = "int8"
    azure_openai_endpoint: str | None = None
    azure_openai_api_key: SecretStr | None = None  # else Entra ID (DefaultAzureCredential)
    azure_openai_api_version: str = "2024-10-21"
    azure_openai_embedding_deployment: str = "text-embedding-3-small"
    azure_openai_embedding_dimensions: int | None = None
    # Deployment limits: inputs per request and tokens per request.
    azure_openai_embedding_max_inputs: int = 2048
    azure_openai_embedding_max_tokens: int = 300_000
    # During a switch of embedding model: the model being left (see PreviousEmbedding). Set it
    # where searches run (gateway, CLI) until `parley doctor` says no tenant is switching.
    embedding_previous: PreviousEmbedding | None = None

    # --- chat -------------------------------------------------------------------------------
    chat_backend: str = Field(default="local", pattern="^(local|azure-openai|openai-compatible)$")
    chat_base_url: str | None = None  # vLLM / Kaito: http://workspace-phi-4-mini/v1
    chat_api_key: SecretStr | None = None
    chat_model: str = "smollm2-135m-instruct"
    azure_openai_chat_deployment: str = "gpt-4o-mini"
    # How answers are made (PARLEY_ANSWER_MODE; a question may ask for the other): extractive
    # quotes the passages of the sources that answer, with [n], and invents nothing; generative
    # has the chat model write it. Extractive is the default: on the answer benchmark with the
    # embedded model it is right more often (python -m bench answers, README).
    answer_mode: Literal["extractive", "generative"] = "extractive"
    # Extractive answers read a question's meaning too (inference_worker.meaning; ~250 MB).
    answer_meaning: bool = True
    # Generative answers: "not in the documents" (naming the closest sources) instead of the
    # model's when no passage covers the question's words. Off: a served model judges that.
    answer_not_found_guard: bool = True
    chat_max_tokens: int = 512
    chat_context_tokens: int = 2048
    # The sources an answer is made from. Extractive answers read them all (python -m bench
    # answers: 8 answered more questions than 5 and no fewer on any set, the answerer picking
    # the rows and sentences that fit); a generative prompt keeps those that fit
    # chat_context_tokens, in rank order.
    retrieval_k: int = Field(default=8, ge=1, le=50)
    stream_ttl_seconds: int = 3600
    # The retention of conversations: a conversation (its list entry, transcript and history) is
    # forgotten this long after its last turn.
    conversation_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    history_turns: int = 6

    # --- gateway ------------------------------------------------------------------------------
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    # Local auth: token -> tenant. Format "token1:tenantA,token2:tenantB". The built-in
    # "dev-token" is accepted only on a loopback bind or with allow_dev_token (below).
    local_tokens: SecretStr = SecretStr("dev-token:default")
    # Entra ID: both or neither (the gateway refuses to start with one). The audience is the API's
    # application ID URI (api://<client id>), which v1 tokens carry; v2 tokens carry the client
    # id, accepted as well when entra_client_id is set.
    entra_tenant_id: str | None = None
    entra_audience: str | None = None
    # The portal's app registration (a single-page app; Terraform makes it the same as the API's):
    # the portal signs users in with MSAL.js (authorization code + PKCE) and asks for
    # <entra_audience>/<entra_scope>. Unset: the portal asks for a token to paste.
    entra_client_id: str | None = None
    entra_scope: str = "access_as_user"
    # Accept the built-in "dev-token" on a non-loopback bind (a local dev cluster). Never on a
    # shared deployment.
    allow_dev_token: bool = False
    # The JWT claim naming the Parley tenant ("tid", "groups"...), and an optional map of claim
    # values to tenants ("<group-id>:<tenant>,..."); without a map the value is the tenant.
    entra_tenant_claim: str = "tid"
    entra_tenant_map: str = ""
    # permessage-deflate on the websocket (PARLEY_WS_COMPRESSION). Off: measured, it costs ~3x
    # the memory of an idle session (bench/sessions.py) and CPU per frame, for small JSON frames.
    ws_compression: bool = False
    max_upload_bytes: int = 100 * 1024 * 1024
    # Browser pages of other origins allowed to open a websocket session, comma-separated
    # ("https://portal.example.com"); the gateway's own origin is always allowed, and clients
    # that are not browsers (no Origin header) are not concerned.
    allowed_origins: str = ""
    # Uploads through one gateway replica at once (POST /api/documents), in all and per tenant;
    # more are refused with 429. Each is spooled to a temporary file of up to max_upload_bytes.
    max_concurrent_uploads: int = Field(default=4, ge=1)
    max_tenant_concurrent_uploads: int = Field(default=2, ge=1)

    # --- runtime ------------------------------------------------------------------------------
    log_level: str = "INFO"
    log_json: bool = True
    drain_seconds: float = 25.0
    metrics_port: int | None = None
    otlp_endpoint: str | None = None

    # --- maintenance (maintenance_worker/) ---------------------------
    maintenance_interval_seconds: float = Field(default=300.0, gt=0)
    # A document whose record has not moved for this long in a non-terminal stage is stuck:
    # re-posted, and failed with reason "stuck" after stuck_max_retries re-posts. Keep it above
    # the longest queue wait you expect (a backlog looks the same as a lost message).
    stuck_after_seconds: float = Field(default=1800.0, gt=0)
    stuck_max_retries: int = Field(default=3, ge=0)
    # Blobs and records changed this recently are left to the normal event path.
    reconcile_grace_seconds: float = Field(default=300.0, ge=0)

    @property
    def keys(self) -> Keys:
        """The Redis key names under this stack's prefix."""
        return Keys(self.redis_prefix)
