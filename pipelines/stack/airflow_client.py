"""A small client of Airflow 3's REST API (``/api/v2``): trigger runs, follow them, answer approvals."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

log = logging.getLogger(__name__)

TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class AirflowApiError(RuntimeError):
    """Airflow answered a request with an error."""


class AirflowClient:
    """Authenticated calls to one Airflow api-server (simple auth manager: ``POST /auth/token``)."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        response = self._http.post("/auth/token", json={"username": username, "password": password})
        if response.status_code not in (200, 201):
            raise AirflowApiError(
                f"login as {username!r} at {self.base_url} failed: {response.status_code} {response.text[:300]}"
            )
        self._http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, f"/api/v2{path}", **kwargs)
        if response.status_code >= 400:
            raise AirflowApiError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def dag(self, dag_id: str) -> dict[str, Any]:
        """The DAG's details (raises until the dag-processor has parsed it)."""
        result: dict[str, Any] = self._call("GET", f"/dags/{dag_id}")
        return result

    def import_errors(self) -> list[dict[str, Any]]:
        """DAG files that failed to import."""
        return list(self._call("GET", "/importErrors")["import_errors"])

    def add_connection(self, conn_id: str, conn_type: str, **fields: Any) -> None:
        """Store an Airflow connection (``host``, ``port``, ``login``, ``password``, ``extra``...) in Airflow's
        metadata database, as an ops person does under Admin -> Connections."""
        self._call("POST", "/connections", json={"connection_id": conn_id, "conn_type": conn_type, **fields})

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None, note: str | None = None) -> str:
        """Start a run now (no logical date); returns its run id."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        if note:
            body["note"] = note
        return str(self._call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        return result

    def runs(self, dag_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The DAG's runs, newest first (id, state, conf, note...)."""
        found = self._call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": limit, "order_by": "-run_after"})
        return list(found["dag_runs"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """``{task_id: state}`` of a run."""
        tis = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}

    def task_hosts(self, dag_id: str, run_id: str) -> dict[str, str]:
        """``{task_id: hostname}`` of the tasks of a run that ran somewhere (the worker that ran each)."""
        tis = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["hostname"] for ti in tis if ti.get("hostname")}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom value (deserialized)."""
        entry = self._call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"deserialize": True, "stringify": False},
        )
        return entry["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The text of one try of a task's log, as the UI shows it (one line per event)."""
        found = self._call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": True},
            headers={"Accept": "application/json"},
        )
        content = found.get("content", [])
        if isinstance(content, str):
            return content
        return "\n".join(
            " ".join(str(v) for k, v in e.items() if k in ("event", "error_detail")) if isinstance(e, dict) else str(e)
            for e in content
        )

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"
        )
        return result

    def answer(self, dag_id: str, run_id: str, task_id: str, option: str, params: dict[str, Any]) -> dict[str, Any]:
        """Answer a human-in-the-loop task as the logged-in user (``Approve`` / ``Reject``).

        A script must first wait until the scheduler has processed the exit of the worker that parked the task
        (:func:`pipelines.stack.dag_runs.answer_when_parked` does): see there for the Airflow 3.3.2 race.
        """
        result: dict[str, Any] = self._call(
            "PATCH",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails",
            json={"chosen_options": [option], "params_input": params},
        )
        return result

    def follow(
        self,
        dag_id: str,
        run_id: str,
        *,
        timeout: float,
        on_change: Callable[[dict[str, str | None]], None] | None = None,
        stop_when: Callable[[dict[str, str | None]], bool] | None = None,
        interval: float = 2.0,
    ) -> str:
        """Poll the run, reporting task state changes, until it ends or ``stop_when``; returns the run state.

        Task states are read only for ``on_change`` or ``stop_when``: otherwise one request a poll (each one costs
        the api-server CPU that the tasks it serves could use)."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            if on_change is not None or stop_when is not None:
                states = self.task_states(dag_id, run_id)
                if states != seen and on_change is not None:
                    on_change(states)
                seen = states
            run_state = str(self.run(dag_id, run_id)["state"])
            if run_state in TERMINAL_RUN_STATES or (stop_when is not None and stop_when(seen)):
                return run_state
            time.sleep(interval)
        raise TimeoutError(f"run {run_id} of {dag_id} did not finish within {timeout:.0f} s (last: {seen})")
