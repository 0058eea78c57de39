"""The host name a task reports (Airflow's ``[core] hostname_callable``) in the native production profile."""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    """``STACK_WORKER_NAME`` when several Celery workers share one machine, else the machine's FQDN.

    On separate machines (compose, Kubernetes) every worker has its own host name and this is not configured.
    """
    return os.environ.get("STACK_WORKER_NAME") or socket.getfqdn()
