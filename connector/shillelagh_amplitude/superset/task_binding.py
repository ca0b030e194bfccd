"""SQL Lab's Celery task resolved once, when the web app starts, not by its first callers at once.

Synchronous SQL Lab runs its Celery task ``sql_lab.get_sql_results`` in the web process, as a plain call through
the module's ``PromiseProxy``, which Celery resolves to the registered task on first use, without a lock. In a
threaded gunicorn worker (compose runs 8 threads) the first SQL Lab queries at once could call a task with no
request stack: ``AttributeError: 'NoneType' object has no attribute 'push'``, seen by the worker-kill test on
new workers. Resolving the proxy at start, in one thread, leaves no first call to race.
"""

from __future__ import annotations


def resolve_sql_lab_task() -> None:
    """Resolve SQL Lab's task proxy now, before any request."""
    from superset.sql_lab import get_sql_results

    get_sql_results.__evaluate__()
