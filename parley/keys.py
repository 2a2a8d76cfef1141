"""Every Redis key that Parley's processes share, named in one place.

A key is the contract between the process that writes it and those that read it (a gateway and
an inference worker, an embed worker and the maintenance sweeps), often of two versions during a
rollout: so none is spelled anywhere else, and none changes without a migration. Every key starts
with the deployment's prefix (``PARLEY_REDIS_PREFIX``, default ``parley``), so several deployments
can share one Redis.

Who writes what, and what it holds, is said beside each key. Expiry is the writer's business.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """The key names under one prefix."""

    prefix: str = "parley"

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # ---------------------------------------------------------------------- documents (status.py)
    def tenants(self) -> str:
        """Set of every tenant that ever had a document."""
        return self._k("tenants")

    def record(self, tenant: str, document_id: str) -> str:
        """Hash: one document's status record."""
        return self._k("doc", tenant, document_id)

    def landed(self, tenant: str, document_id: str, version: str) -> str:
        """Set of the batch indexes of one version stored so far."""
        return self._k("doc", tenant, document_id, "landed", version)

    def documents(self, tenant: str) -> str:
        """Sorted set of a tenant's document ids, by last change."""
        return self._k("docs", tenant)

    def progress(self, tenant: str) -> str:
        """Stream of a tenant's document status changes (the portal follows it)."""
        return self._k("progress", tenant)

    def served(self, tenant: str) -> str:
        """Hash, the served map: document id -> the version searches may return."""
        return self._k("served", tenant)

    def watched(self, container: str) -> str:
        """Hash, the blob watcher's view of a container: path -> ETag it last announced."""
        return self._k("watch", container)

    def watcher_lease(self, container: str) -> str:
        """The lease of the one watcher that lists a container."""
        return self._k("watch", container, "lease")

    # ---------------------------------------------------------------- queues (broker/redis.py)
    def queue(self, queue: str) -> str:
        """Stream of a queue's messages (XLEN is the backlog KEDA reads)."""
        return self._k("q", queue)

    def delayed(self, queue: str) -> str:
        """Sorted set of a queue's delayed retries, by due time."""
        return self._k("q", queue, "delayed")

    def delayed_prefix(self, queue: str) -> str:
        """Prefix of the hashes holding delayed messages' bodies (a Lua script adds the token)."""
        return self.delayed(queue) + ":"

    def dead_letters(self, queue: str) -> str:
        """Stream of a queue's dead letters."""
        return self._k("q", queue, "dead")

    def consumers(self, queue: str) -> str:
        """Set of the queue's consumers that keep a heartbeat (``worker_alive``): one of them
        whose key has lapsed is dead, and its messages are taken without waiting for the lease."""
        return self._k("q", queue, "consumers")

    # ---------------------------------------------------------------------------- chat turns
    def turn(self, turn_id: str) -> str:
        """Stream of one turn's events (sources, tokens, one terminal event)."""
        return self._k("turn", turn_id)

    def turn_meta(self, turn_id: str) -> str:
        """JSON: the turn's tenant, conversation and trace context (the gateway's)."""
        return self._k("turn", turn_id, "meta")

    def turn_cancel(self, turn_id: str) -> str:
        """Set by a gateway to stop a turn's generation."""
        return self._k("turn", turn_id, "cancel")

    def turn_attached(self, turn_id: str) -> str:
        """Held (short expiry, refreshed) by the gateway replica relaying the turn."""
        return self._k("turn", turn_id, "attached")

    def turn_worker(self, turn_id: str) -> str:
        """The id of the inference worker answering the turn (set when it takes it)."""
        return self._k("turn", turn_id, "worker")

    def worker_alive(self, worker_id: str) -> str:
        """A consumer's heartbeat (every Redis broker that receives; an inference worker's turns
        name it too): present (3 s expiry, renewed every second) while it runs."""
        return self._k("worker", worker_id, "alive")

    def turns_pattern(self) -> str:
        """SCAN pattern of every turn key (the expire sweep)."""
        return self._k("turn", "*")

    def conversation(self, tenant: str, conversation_id: str) -> str:
        """List of a conversation's recent messages."""
        return self._k("conv", tenant, conversation_id)

    def conversations_pattern(self) -> str:
        """SCAN pattern of every conversation key (the expire sweep)."""
        return self._k("conv", "*")

    def conversation_meta(self, tenant: str, conversation_id: str) -> str:
        """Hash: a kept conversation's owner (subject), title, created, updated, turns."""
        return self._k("conv", tenant, conversation_id, "meta")

    def conversation_log(self, tenant: str, conversation_id: str) -> str:
        """List of a kept conversation's transcript: questions, answers with sources, model."""
        return self._k("conv", tenant, conversation_id, "log")

    def conversation_seen(self, tenant: str, conversation_id: str, turn_id: str, role: str) -> str:
        """Set when one message of a turn was added to the transcript (appends are idempotent)."""
        return self._k("conv", tenant, conversation_id, "logged", turn_id, role)

    def conversation_index(self, tenant: str, subject: str) -> str:
        """Sorted set of one user's conversation ids in a tenant, by last activity (seconds)."""
        return self._k("convs", tenant, subject)

    def feedback(self) -> str:
        """Hash: turn id -> JSON feedback on that answer (rating, question, answer, sources)."""
        return self._k("feedback")

    def rate(self, tenant: str, subject: str, window: int) -> str:
        """Counter of a subject's asks in one minute window."""
        return self._k("rate", tenant, subject, str(window))

    def tenant_rate(self, tenant: str, window: int) -> str:
        """Counter of all of a tenant's asks in one minute window."""
        return self._k("rate-tenant", tenant, str(window))

    def gateway_wake(self, gateway_id: str) -> str:
        """Stream a gateway process writes to wake its own blocked XREAD."""
        return self._k("gw", gateway_id, "wake")

    # ----------------------------------------------------------------------- embedding models
    def embedding_model(self, tenant: str) -> str:
        """JSON: the model whose collection is complete for a tenant (the reembed sweep's mark)."""
        return self._k("embedding-model", tenant)

    def embedding_target(self) -> str:
        """JSON: the deployment's target model and the models it replaced."""
        return self._k("embedding-target")

    def embedding_written(self, tenant: str) -> str:
        """Hash: model id -> when its collection of a tenant was last written."""
        return self._k("embedding-written", tenant)

    def chunk_generation(self, tenant: str) -> str:
        """Counter: bumped by every writer of a tenant's chunks after each write (upsert,
        delete); a searcher rebuilds its lexical index of the tenant when it moved."""
        return self._k("chunk-generation", tenant)

    def reembed_verify(self, tenant: str) -> str:
        """Set when a drop of one of a tenant's collections raced a write to it."""
        return self._k("reembed", "verify", tenant)

    # ---------------------------------------------------------------------------- maintenance
    def sweep_lease(self, sweep: str) -> str:
        """The lease of the one replica running a sweep."""
        return self._k("maintenance", "lease", sweep)

    def sweep_last(self, sweep: str) -> str:
        """JSON: a sweep's last report (``parley doctor`` shows it)."""
        return self._k("maintenance", "last", sweep)

    def reconcile_posted(self, path: str) -> str:
        """Set when the reconcile sweep re-posted a blob's ingest request (remembered a while)."""
        return self._k("reconcile", "posted", path)

    def stuck_retries(self, tenant: str, document_id: str, etag: str) -> str:
        """Counter of the stuck sweep's re-posts of one document's content."""
        return self._k("stuck", tenant, document_id, etag)

    def celery(self) -> str:
        """Prefix of Celery's own keys (its broker transport's ``global_keyprefix``)."""
        return self._k("celery") + ":"
