"""Scheduled maintenance: a Celery app (beat + worker) running the reconcile, stuck, expire and
reembed sweeps (`python -m maintenance_worker worker|beat`)."""
