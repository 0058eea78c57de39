"""Executors and workers: the wall time of N ``train_<dataset>`` runs started at once, per stack topology.

Run from the repository root (``--help`` lists every option)::

    .venv/bin/python -m benchmarks.topology_scale [--n 1 2 4 8] [--configs embedded celery1 celery2]
    .venv/bin/python -m benchmarks.topology_scale --render runtime/benchmarks/topology_scale.json [--markdown]

Configurations (``--configs``), each a fresh stack of the project (``pipelines.stack.services.up``) on free ports
in a fresh folder ``runtime/benchmarks/topology_scale-<time>-<random>/<config>/``, stopped after, its PostgreSQL
databases and Celery queue dropped after:

- ``embedded``: Airflow on SQLite with the LocalExecutor (parallelism 4), MLflow and the warehouse on SQLite;
- ``embedded-cold``: the same without preloading the loop's libraries (``AIRFLOW_PRELOAD=false``: each task
  imports them, as with Airflow's own LocalExecutor);
- ``celery1``: the production profile (CeleryExecutor on PostgreSQL, Redis broker, MLflow and the warehouse on
  PostgreSQL) with 1 Celery worker of concurrency 2;
- ``celery1-cold``: ``celery1`` without the worker preloading the loop's libraries (Celery's ``imports`` left
  empty: each task imports them, as with Airflow's default Celery settings);
- ``celery2``: the same with 2 Celery workers of concurrency 2 each;
- ``celery1x4``: 1 Celery worker of concurrency 4 (as many task slots as ``celery2``, one worker process).

Every configuration gets the same dataset configs: the shipped ``flights.yaml`` (the prediction service serves
it; nothing of it runs) and ``flights_01`` ... ``flights_<sum of N>``, copies of it under other names, each with
its own warehouse table, registered model and experiment, ``approval.mode: auto`` (the gate's pass deploys, no
person) and no schedule (nothing else runs). Each name's table is seeded with [2013-01-01, 2013-03-01) before
anything is timed. For each N (``--n``), in order, on the same stack: N fresh names, their ``train_<name>`` DAGs
unpaused, one run of each triggered at once through the REST API with the window [2013-01-01, 2013-03-01) (the
shortest window on which the shipped gate passes: on January alone ROC AUC is 0.636 < 0.65). Every run is the
first of its model (no champion to score), so all rounds do the same work per run.

Measured per round: the wall time from the first trigger to the end of the last run (the runs' ``end_date`` from
the API), each run's states and duration, each task instance's scheduled / queued / start / end times (slot wait,
start-up wait, running time, hand-offs between tasks), the CPU used meanwhile by the stack's processes (the
services and every process they start), by PostgreSQL and Redis, by other processes and by the whole machine
(``/proc``, sampled every second), and the stack's peak PSS (proportional set size: pages shared between forked
processes counted once). Before each configuration it waits (at most ``--quiet-wait`` s) until the machine is busy
under ``--quiet-below`` cores, records what ran and times a fresh interpreter importing pandas, scikit-learn and
MLflow (this VM's speed at such work drifts); before each round it waits until processes outside the stack use
under ``--settle-below`` cores and the stack under ``--settle-stack-below`` (done starting; its idle cost is part
of what is measured, not waited for).

Raw figures go to ``runtime/benchmarks/topology_scale.json`` (and a copy in the run's folder); the tables are
printed (``--markdown``: the whole section for ``docs/benchmarks.md``, also written to
``runtime/benchmarks/topology_scale.md``). No timed assertion anywhere: the figures are reported, not checked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from benchmarks.machine import describe as describe_machine
from pipelines.core.logging_setup import configure
from pipelines.stack import databases, services
from pipelines.stack.airflow_client import TERMINAL_RUN_STATES, AirflowClient
from pipelines.stack.dag_runs import wait_for_dag
from pipelines.stack.processes import free_port, port_is_free
from pipelines.stack.settings import StackSettings

log = logging.getLogger("benchmarks.topology_scale")

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNTIME_DIR = REPO_ROOT / "runtime" / "benchmarks"
JSON_OUT = RUNTIME_DIR / "topology_scale.json"
MARKDOWN_OUT = RUNTIME_DIR / "topology_scale.md"
SHIPPED_CONFIG = REPO_ROOT / "pipelines" / "conf" / "datasets" / "flights.yaml"

WINDOW = ("2013-01-01", "2013-03-01")
# The training DAG's tasks in the order they run on the auto-approval path (approve and refuse are skipped).
CHAIN = ["extract", "validate", "train", "evaluate", "gate", "route", "approve_by_policy", "deploy"]
RAN_STATES = frozenset({"success", "failed", "up_for_retry"})
IDLE_SECONDS = 20.0  # the stack's own cost with nothing to run, measured after the rounds


@dataclass(frozen=True)
class Topology:
    """One configuration of the stack."""

    name: str
    profile: str
    workers: int = 0
    concurrency: int = 0
    description: str = ""
    preload: bool = True

    @property
    def slots(self) -> int:
        """Task slots: Airflow's parallelism (4 here) and, with Celery, the workers' processes."""
        return 4 if self.profile == "embedded" else self.workers * self.concurrency


TOPOLOGIES = {
    t.name: t
    for t in [
        Topology("embedded", "embedded", description="LocalExecutor on SQLite, parallelism 4"),
        Topology(
            "embedded-cold",
            "embedded",
            description="the same, libraries not preloaded (every task imports them: Airflow's default)",
            preload=False,
        ),
        Topology("celery1", "production", 1, 2, "CeleryExecutor on PostgreSQL + Redis, 1 worker x 2"),
        Topology(
            "celery1-cold",
            "production",
            1,
            2,
            "the same, libraries not preloaded by the worker (every task imports them: Airflow's default)",
            preload=False,
        ),
        Topology("celery2", "production", 2, 2, "CeleryExecutor on PostgreSQL + Redis, 2 workers x 2"),
        Topology("celery1x4", "production", 1, 4, "CeleryExecutor on PostgreSQL + Redis, 1 worker x 4"),
    ]
}


@dataclass
class Options:
    ns: list[int]
    configs: list[str]
    out: Path
    quiet_below: float
    quiet_wait: float
    settle_below: float
    settle_stack_below: float
    round_timeout: float
    skip_after: float
    poll: float
    mlflow_workers: int


# Machine and processes (/proc).

CLK = os.sysconf("SC_CLK_TCK")


def versions() -> dict[str, str]:
    names = ["apache-airflow", "apache-airflow-providers-celery", "celery", "mlflow", "scikit-learn", "pandas"]
    found = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def _run_text(command: list[str]) -> str:
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def commit() -> str:
    return _run_text(["git", "rev-parse", "--short", "HEAD"])


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK


def wait_for_quiet(limit: float, patience: float) -> float:
    """Wait (at most ``patience`` s) until the machine is busy under ``limit`` cores; the last load seen."""
    deadline = time.monotonic() + patience
    while True:
        before = busy_seconds()
        time.sleep(3.0)
        load = (busy_seconds() - before) / 3.0
        if load < limit or time.monotonic() >= deadline:
            return load


def busiest_processes(count: int = 5) -> list[str]:
    """The processes that used the most CPU over the last ~2 s (``top``'s view), as short lines."""
    first = proc_table()
    time.sleep(2.0)
    second = proc_table()
    used = sorted(
        ((second[p].cpu - first[p].cpu) / 2.0, p) for p in second if p in first and second[p].cpu > first[p].cpu
    )
    lines = []
    for cores, pid in reversed(used[-count:]):
        lines.append(f"{cores:.2f} cores pid {pid} {second[pid].comm}: {second[pid].cmdline[:120]}")
    return lines


@dataclass(frozen=True)
class Proc:
    ppid: int
    comm: str
    cpu: float  # user + system seconds of the process itself
    cmdline: str = ""


def proc_table(with_cmdline: bool = True) -> dict[int, Proc]:
    """Every process now: parent, name, CPU seconds used."""
    table: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = ""
            if with_cmdline:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2 :].split()
        table[pid] = Proc(int(rest[1]), comm, (int(rest[11]) + int(rest[12])) / CLK, cmdline.strip())
    return table


def descendants(table: dict[int, Proc], roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    found, todo = set(), [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def process_kind(cmdline: str) -> str:
    """A short name for a process of the stack: its title up to the first detail (paths and ids dropped)."""
    words = [w.rsplit("/", 1)[-1] for w in cmdline.split()]
    if words and words[0].startswith("python"):
        words = words[1:]
        if words[:1] == ["-m"]:
            words = words[1:]
    text = " ".join(words)
    for cut in (" --", ":", " -w", " -q"):
        text = text.split(cut, 1)[0]
    return text[:48] or "?"


@dataclass
class Sampler:
    """Samples every process each ``interval`` s: CPU by category (the stack, by service and kind of process;
    PostgreSQL and Redis; this script; other processes) and the stack's PSS. Processes that live less than one
    interval are missed (the whole machine's figure is not)."""

    roots: dict[int, str]  # pid of each service of the stack -> its name
    interval: float = 1.0
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    category: dict[int, str] = field(default_factory=dict)
    label: dict[int, str] = field(default_factory=dict)
    peak_pss_mb: float = 0.0
    peak_processes: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _busy0: float = 0.0
    _t0: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)

    def _classify(self, pid: int, proc: Proc, table: dict[int, Proc], stack: set[int]) -> tuple[str, str]:
        if pid in stack:
            root = pid
            while root not in self.roots and root in table:
                root = table[root].ppid
            return "stack", f"{self.roots.get(root, '?')}: {process_kind(_cmdline(pid))}"
        if proc.comm.startswith(("postgres", "redis-server")):
            return "databases", proc.comm
        if pid == os.getpid() or proc.ppid == os.getpid():
            return "benchmark", "benchmark"
        return "other", f"{pid} {_cmdline(pid)[:100] or proc.comm}"

    def sample(self) -> None:
        table = proc_table(with_cmdline=False)
        stack = descendants(table, set(self.roots))
        fresh = self.samples > 0
        for pid, proc in table.items():
            if pid not in self.category:
                self.category[pid], self.label[pid] = self._classify(pid, proc, table, stack)
                self.first[pid] = 0.0 if fresh else proc.cpu
            elif proc.cpu < self.last.get(pid, 0.0):  # pid reused: keep what the old one used
                self.first[pid] -= self.last[pid]
            self.last[pid] = proc.cpu
        if stack:
            self.peak_pss_mb = max(self.peak_pss_mb, sum(pss_mb(pid) for pid in stack))
            self.peak_processes = max(self.peak_processes, len(stack))
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._busy0, self._t0 = busy_seconds(), time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        elapsed = time.monotonic() - self._t0
        cpu: dict[str, float] = {}
        stack_kinds: dict[str, float] = {}
        others: dict[str, float] = {}
        for pid, cat in self.category.items():
            used = max(0.0, self.last.get(pid, 0.0) - self.first.get(pid, 0.0))
            cpu[cat] = cpu.get(cat, 0.0) + used
            if cat == "stack":
                stack_kinds[self.label[pid]] = stack_kinds.get(self.label[pid], 0.0) + used
            elif cat == "other" and used > 0.5:
                others[self.label[pid]] = used
        machine_s = busy_seconds() - self._busy0
        self.result = {
            "elapsed_s": elapsed,
            "machine_cpu_s": machine_s,
            "machine_cores": machine_s / elapsed,
            "cpu_s": cpu,
            "cores": {k: v / elapsed for k, v in cpu.items()},
            "unattributed_cores": max(0.0, machine_s - sum(cpu.values())) / elapsed,
            "stack_cpu_s_by_kind": dict(sorted(stack_kinds.items(), key=lambda kv: -kv[1])),
            "other_cpu_s_by_process": dict(sorted(others.items(), key=lambda kv: -kv[1])[:10]),
            "stack_peak_pss_mb": self.peak_pss_mb,
            "stack_peak_processes": self.peak_processes,
            "loadavg_end": list(os.getloadavg()),
            "samples": self.samples,
        }
        return self.result


def settle(roots: dict[int, str], limit: float, stack_limit: float, patience: float) -> dict[str, float]:
    """Before a round: wait (at most ``patience`` s) until processes outside the stack use under ``limit`` cores and
    the stack under ``stack_limit`` (done starting: it idles at 0.4-0.75 cores here, 1.9 while starting).

    The stack's idle cost (scheduler loop, dag-processor, MLflow's job consumers) is part of what is measured: it
    is reported, not waited for.
    """
    deadline = time.monotonic() + patience
    while True:
        sampler = Sampler(roots)
        sampler.start()
        time.sleep(5.0)
        seen = sampler.stop()
        outside = seen["machine_cores"] - seen["cores"].get("stack", 0.0)
        stack = seen["cores"].get("stack", 0.0)
        if (outside < limit and stack < stack_limit) or time.monotonic() >= deadline:
            return {"machine_cores": seen["machine_cores"], "stack_cores": stack, "outside_cores": outside}


def speed_probe(repeat: int = 2) -> float:
    """Seconds to import pandas, scikit-learn and MLflow in a fresh interpreter (best of ``repeat``), what every task
    process does first. This VM's speed at that kind of work varied within an hour while a pure-Python loop did not:
    recorded before each configuration so that configurations measured apart can be compared."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    command = [sys.executable, "-c", "import pandas, sklearn.ensemble, mlflow"]
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, check=False)
        best = min(best, time.perf_counter() - started)
    return best


# The stack.


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (one log server port per Celery worker)."""
    while True:
        first = free_port()
        if first + count <= 65535 and all(port_is_free(first + i) for i in range(count)):
            return first


def stack_settings(topology: Topology, home: Path, datasets_dir: Path, mlflow_workers: int) -> StackSettings:
    values: dict[str, Any] = {
        "MLOPS_PROFILE": topology.profile,
        "MLOPS_HOME": home,
        "MLOPS_DATASETS_DIR": datasets_dir,
        "MLFLOW_PORT": free_port(),
        "AIRFLOW_PORT": free_port(),
        "SERVING_PORT": free_port(),
        "AIRFLOW_WORKER_LOG_PORT": _free_ports(max(1, topology.workers)),
        "AIRFLOW_TRIGGER_LOG_PORT": free_port(),
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(12),
        "AIRFLOW_PRELOAD": topology.preload,
    }
    if topology.profile == "production":
        values.update(
            {
                "STACK_DB_PREFIX": f"bench_topo_{secrets.token_hex(4)}",
                "CELERY_WORKERS": topology.workers,
                "CELERY_WORKER_CONCURRENCY": topology.concurrency,
            }
        )
    return StackSettings(**values, mlflow_workers=mlflow_workers)


def dataset_names(count: int) -> list[str]:
    return [f"flights_{i:02d}" for i in range(1, count + 1)]


def write_dataset_configs(folder: Path, names: list[str]) -> None:
    """The shipped flights config (the prediction service serves it) and its copies under ``names``."""
    folder.mkdir(parents=True, exist_ok=True)
    shipped = yaml.safe_load(SHIPPED_CONFIG.read_text())
    shipped["monitoring"]["schedule"] = None
    (folder / "flights.yaml").write_text(yaml.safe_dump(shipped, sort_keys=False))
    for name in names:
        copy = yaml.safe_load(SHIPPED_CONFIG.read_text())
        suffix = name.removeprefix("flights_")
        copy["name"] = name
        copy["source"]["table"] = name
        copy["model"]["registered_name"] = f"flights-delay-{suffix}"
        copy["model"]["experiment"] = name
        copy["approval"] = {"mode": "auto", "timeout_minutes": copy["approval"]["timeout_minutes"]}
        copy["monitoring"]["schedule"] = None
        copy["schedule"] = None
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(copy, sort_keys=False))


def seed_all(stack: StackSettings, names: list[str]) -> float:
    """Seed every name's table with the window (the flights read once; the pipeline's own ``seed``)."""
    from pipelines.core.config import load_dataset_config
    from pipelines.core.runs import Window
    from pipelines.data.seed import seed
    from pipelines.data.sources import load_source

    started = time.perf_counter()
    settings = services.pipeline_settings(stack)
    window = Window(datetime.fromisoformat(WINDOW[0]).date(), datetime.fromisoformat(WINDOW[1]).date())
    source = None
    for name in names:
        config = load_dataset_config(name, stack.datasets_dir)
        source = load_source(config) if source is None else source
        seed(config, settings, window, source)
    return time.perf_counter() - started


class BenchClient(AirflowClient):
    """The project's REST client plus the two batch reads this benchmark needs."""

    def runs_of(self, dag_ids: list[str]) -> list[dict[str, Any]]:
        body = {"dag_ids": dag_ids, "page_limit": 1000}
        return list(self._call("POST", "/dags/~/dagRuns/list", json=body)["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"])


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _secs(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier).total_seconds()


def run_breakdown(run: dict[str, Any], tis: list[dict[str, Any]]) -> dict[str, Any]:
    """Where one run's time went: tasks running, waiting for a slot, starting, and the hand-offs between them."""
    ran = [ti for ti in tis if ti["state"] in RAN_STATES and ti.get("start_date")]
    ran.sort(key=lambda ti: ti["start_date"])
    tasks: dict[str, dict[str, Any]] = {}
    handoffs: list[float] = []
    previous_end: datetime | None = None
    for ti in ran:
        scheduled, queued = _ts(ti.get("scheduled_when")), _ts(ti.get("queued_when"))
        start, end = _ts(ti["start_date"]), _ts(ti.get("end_date"))
        tasks[ti["task_id"]] = {
            "state": ti["state"],
            "try_number": ti["try_number"],
            "hostname": ti.get("hostname"),
            "running_s": _secs(end, start),
            "slot_wait_s": _secs(queued, scheduled),
            "start_wait_s": _secs(start, queued),
        }
        handoff = _secs(scheduled, previous_end)
        if handoff is not None:
            handoffs.append(handoff)
        previous_end = end
    queued_at, start, end = _ts(run.get("queued_at")), _ts(run.get("start_date")), _ts(run.get("end_date"))
    duration = _secs(end, start)

    def total(key: str) -> float:
        return sum(t[key] or 0.0 for t in tasks.values())

    running, slot_wait, start_wait = total("running_s"), total("slot_wait_s"), total("start_wait_s")
    return {
        "dag_id": run["dag_id"],
        "run_id": run["dag_run_id"],
        "state": run["state"],
        "task_states": {ti["task_id"]: ti["state"] for ti in tis},
        "queued_at": run.get("queued_at"),
        "start_date": run.get("start_date"),
        "end_date": run.get("end_date"),
        "run_start_wait_s": _secs(start, queued_at),
        "duration_s": duration,
        "running_s": running,
        "slot_wait_s": slot_wait,
        "start_wait_s": start_wait,
        "handoff_s": sum(handoffs),
        "other_s": None if duration is None else duration - running - slot_wait - start_wait - sum(handoffs),
        "tasks": tasks,
    }


def run_round(api: BenchClient, names: list[str], roots: dict[int, str], opts: Options, label: str) -> dict[str, Any]:
    """Trigger one run of each ``train_<name>`` at once and follow them all to the end."""
    dag_ids = [f"train_{n}" for n in names]
    for dag_id in dag_ids:
        api.unpause(dag_id)
    conf = {"reason": "benchmark", "window_start": WINDOW[0], "window_end": WINDOW[1]}
    sampler = Sampler(roots)
    sampler.start()
    first_trigger = datetime.now(UTC)
    t0 = time.monotonic()
    run_ids = {}
    for dag_id in dag_ids:
        run_ids[dag_id] = api.trigger(dag_id, conf, note=f"benchmarks/topology_scale.py {label}")
    trigger_span = time.monotonic() - t0
    deadline = t0 + opts.round_timeout
    wanted = set(run_ids.values())
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        runs = [r for r in api.runs_of(dag_ids) if r["dag_run_id"] in wanted]
        states = {r["dag_id"]: r["state"] for r in runs}
        if len(runs) == len(wanted) and all(s in TERMINAL_RUN_STATES for s in states.values()):
            break
        time.sleep(opts.poll)
    else:
        sampler.stop()
        raise TimeoutError(f"{label}: runs not finished after {opts.round_timeout:.0f} s: {states}")
    observed = time.monotonic() - t0
    cpu = sampler.stop()
    details = [run_breakdown(r, api.task_instances(r["dag_id"], r["dag_run_id"])) for r in runs]
    last_end = max(_ts(d["end_date"]) or first_trigger for d in details)
    wall = (last_end - first_trigger).total_seconds()
    return {
        "n": len(names),
        "names": names,
        "first_trigger": first_trigger.isoformat(),
        "trigger_span_s": trigger_span,
        "wall_s": wall,
        "observed_s": observed,
        "runs": sorted(details, key=lambda d: d["dag_id"]),
        "cpu": cpu,
    }


CPU_GROUPS = ["task processes", "scheduler", "api-server", "MLflow server", "Celery", "the rest"]


def cpu_group(label: str) -> str:
    """Which part of the stack a process (``service: kind``) belongs to, for the CPU table."""
    service, _, kind = label.partition(": ")
    if kind.startswith(("airflow worker", "airflow supervisor", "airflow task")):
        return "task processes"
    if kind.startswith("[celeryd") or kind.startswith("airflow celery"):
        return "Celery"
    found = {"airflow-scheduler": "scheduler", "airflow-api-server": "api-server", "mlflow": "MLflow server"}
    return found.get(service, "the rest")


def cpu_by_group(kinds: dict[str, float]) -> dict[str, float]:
    groups = dict.fromkeys(CPU_GROUPS, 0.0)
    for label, seconds in kinds.items():
        groups[cpu_group(label)] += seconds
    return groups


def summarize_round(entry: dict[str, Any]) -> dict[str, Any]:
    runs = entry["runs"]
    n = entry["n"]

    def mean(key: str) -> float:
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.fmean(values) if values else float("nan")

    per_task: dict[str, dict[str, float]] = {}
    for task in CHAIN:
        found = [r["tasks"][task] for r in runs if task in r["tasks"]]
        if found:
            per_task[task] = {
                "running_s": statistics.fmean(t["running_s"] or 0.0 for t in found),
                "max_running_s": max(t["running_s"] or 0.0 for t in found),
                "wait_s": statistics.fmean((t["slot_wait_s"] or 0.0) + (t["start_wait_s"] or 0.0) for t in found),
            }
    durations = [r["duration_s"] for r in runs if r["duration_s"] is not None]
    cpu = entry["cpu"]
    return {
        "n": n,
        "wall_s": entry["wall_s"],
        "per_dag_s": entry["wall_s"] / n,
        "ok": sum(r["state"] == "success" for r in runs),
        "deployed": sum(r["task_states"].get("deploy") == "success" for r in runs),
        "retries": sum(t["try_number"] > 1 for r in runs for t in r["tasks"].values()),
        "duration_mean_s": statistics.fmean(durations) if durations else float("nan"),
        "duration_max_s": max(durations, default=float("nan")),
        "run_start_wait_s": mean("run_start_wait_s"),
        "running_s": mean("running_s"),
        "slot_wait_s": mean("slot_wait_s"),
        "start_wait_s": mean("start_wait_s"),
        "handoff_s": mean("handoff_s"),
        "other_s": mean("other_s"),
        "per_task": per_task,
        "machine_cores": cpu["machine_cores"],
        "stack_cores": cpu["cores"].get("stack", 0.0),
        "db_cores": cpu["cores"].get("databases", 0.0),
        "other_cores": cpu["cores"].get("other", 0.0),
        "stack_cpu_s_per_run": cpu["cpu_s"].get("stack", 0.0) / n,
        "stack_cpu_s_per_run_by_group": {k: v / n for k, v in cpu_by_group(cpu["stack_cpu_s_by_kind"]).items()},
        "stack_peak_pss_mb": cpu["stack_peak_pss_mb"],
    }


def measure_topology(topology: Topology, opts: Options, names_by_round: list[list[str]]) -> dict[str, Any]:
    folder = opts.out / topology.name
    all_names = [n for names in names_by_round for n in names]
    stack = stack_settings(topology, folder / "home", opts.out / "datasets", opts.mlflow_workers)
    entry: dict[str, Any] = {
        "topology": topology.__dict__ | {"slots": topology.slots},
        "stack": {
            "profile": stack.profile,
            "celery_workers": stack.celery_workers if stack.production else 0,
            "celery_concurrency": stack.celery_concurrency if stack.production else 0,
            "airflow_parallelism": int(services.stack_env(stack)["AIRFLOW__CORE__PARALLELISM"]),
            "mlflow_workers": stack.mlflow_workers,
            "db_prefix": stack.db_prefix if stack.production else None,
        },
    }
    log.info("[%s] waiting for other processes to use under %.1f cores", topology.name, opts.quiet_below)
    entry["load_before"] = {
        "other_cores": wait_for_quiet(opts.quiet_below, opts.quiet_wait),
        "speed_probe_s": speed_probe(),
        "loadavg": list(os.getloadavg()),
        "busiest": busiest_processes(),
    }
    log.info("[%s] load before: %.2f cores, loadavg %s", topology.name, entry["load_before"]["other_cores"],
             entry["load_before"]["loadavg"])  # fmt: skip
    rounds: list[dict[str, Any]] = []
    entry["rounds"] = rounds
    api: BenchClient | None = None
    try:
        t0 = time.perf_counter()
        services.up(stack, timeout=300)
        entry["startup_s"] = time.perf_counter() - t0
        log.info("[%s] stack up in %.0f s (%s)", topology.name, entry["startup_s"], stack.home)
        entry["seed_s"] = seed_all(stack, all_names)
        log.info("[%s] %d tables seeded in %.0f s", topology.name, len(all_names), entry["seed_s"])
        api = BenchClient(stack.airflow_url, stack.airflow_admin_user, services.admin_password(stack))
        for name in all_names:
            wait_for_dag(api, f"train_{name}")
        roots = {pid: s.name for s in services.all_services(stack) if (pid := s.pid()) is not None}
        for names in names_by_round:
            label = f"{topology.name} N={len(names)}"
            settled = settle(roots, opts.settle_below, opts.settle_stack_below, opts.quiet_wait)
            settled["speed_probe_s"] = speed_probe()
            log.info(
                "[%s] before the round: machine %.2f cores busy (the idle stack %.2f), import probe %.1f s",
                topology.name, settled["machine_cores"], settled["stack_cores"], settled["speed_probe_s"],
            )  # fmt: skip
            log.info("[%s] triggering %d runs: %s", topology.name, len(names), ", ".join(names))
            result = run_round(api, names, roots, opts, label)
            result["summary"] = summarize_round(result)
            result["before"] = settled
            rounds.append(result)
            s = result["summary"]
            log.info(
                "[%s] N=%d: wall %.1f s (%.1f s per DAG), runs %.1f s mean / %.1f s max, %d/%d succeeded, "
                "machine %.2f cores (stack %.2f), peak PSS %.0f MB",
                topology.name, s["n"], s["wall_s"], s["per_dag_s"], s["duration_mean_s"], s["duration_max_s"],
                s["ok"], s["n"], s["machine_cores"], s["stack_cores"], s["stack_peak_pss_mb"],
            )  # fmt: skip
            if s["wall_s"] > opts.skip_after and names is not names_by_round[-1]:
                entry["skipped"] = f"N={s['n']} took {s['wall_s']:.0f} s > {opts.skip_after:.0f} s: larger N skipped"
                log.warning("[%s] %s", topology.name, entry["skipped"])
                break
        settle(roots, opts.settle_below, opts.settle_stack_below, opts.quiet_wait)
        idle = Sampler(roots)
        idle.start()
        time.sleep(IDLE_SECONDS)
        entry["idle"] = idle.stop()
        log.info("[%s] idle stack after the rounds: %.2f cores", topology.name, entry["idle"]["cores"].get("stack", 0))
    finally:
        if api is not None:
            api.close()
        services.down(stack)
        if stack.production:
            entry["dropped"] = databases.drop_databases(stack)
            databases.drop_queue(stack)
        log.info("[%s] stack stopped%s", topology.name, " and databases dropped" if stack.production else "")
    return entry


def run(opts: Options) -> dict[str, Any]:
    opts.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    total = sum(opts.ns)
    names = dataset_names(total)
    write_dataset_configs(opts.out / "datasets", names)
    names_by_round, at = [], 0
    for n in opts.ns:
        names_by_round.append(names[at : at + n])
        at += n
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "versions": versions(),
        "commit": commit(),
        "options": {**opts.__dict__, "out": str(opts.out)},
        "window": WINDOW,
        "configs": {},
    }
    for name in opts.configs:
        results["configs"][name] = measure_topology(TOPOLOGIES[name], opts, names_by_round)
        (opts.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    results["elapsed_s"] = time.perf_counter() - started
    return results


# Report.


def _f(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def summary_table(results: dict[str, Any]) -> list[str]:
    base = {s["summary"]["n"]: s["summary"]["wall_s"] for s in results["configs"].get("embedded", {}).get("rounds", [])}
    probed = any("before" in r for e in results["configs"].values() for r in e["rounds"])
    lines = [
        "| configuration | N | wall s | vs embedded | s per DAG | marginal s per extra DAG | run s mean / max | "
        "per run: tasks running / waiting for a slot or start / hand-offs s | busy cores: machine (stack, PG+Redis, "
        "others) | stack CPU s per run | stack peak PSS GB | runs ok |"
        + (" import probe before, s |" if probed else ""),
        "|---|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|" + ("---:|" if probed else ""),
    ]
    for name, entry in results["configs"].items():
        previous: dict[str, Any] | None = None
        for rnd in entry["rounds"]:
            s = rnd["summary"]
            ratio = f"{s['wall_s'] / base[s['n']]:.2f}x" if s["n"] in base and name != "embedded" else ""
            probe = _f(rnd.get("before", {}).get("speed_probe_s"))
            marginal = "-"
            if previous is not None:
                marginal = _f((s["wall_s"] - previous["wall_s"]) / (s["n"] - previous["n"]))
            lines.append(
                f"| {name} | {s['n']} | {_f(s['wall_s'])} | {ratio} | {_f(s['per_dag_s'])} | {marginal} | "
                f"{_f(s['duration_mean_s'])} / {_f(s['duration_max_s'])} | {_f(s['running_s'])} / "
                f"{_f(s['slot_wait_s'] + s['start_wait_s'])} / {_f(s['handoff_s'])} | {_f(s['machine_cores'], 2)} "
                f"({_f(s['stack_cores'], 2)}, {_f(s['db_cores'], 2)}, {_f(s['other_cores'], 2)}) | "
                f"{_f(s['stack_cpu_s_per_run'], 0)} | {_f(s['stack_peak_pss_mb'] / 1024, 2)} | "
                f"{s['ok']}/{s['n']} |" + (f" {probe} |" if probed else "")
            )
            previous = s
    return lines


def task_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| configuration | N | " + " | ".join(CHAIN) + " |",
        "|---|---:|" + "---:|" * len(CHAIN),
    ]
    for name, entry in results["configs"].items():
        for rnd in entry["rounds"]:
            per = rnd["summary"]["per_task"]
            cells = [f"{_f(per[t]['running_s'])} + {_f(per[t]['wait_s'])}" if t in per else "-" for t in CHAIN]
            lines.append(f"| {name} | {rnd['summary']['n']} | " + " | ".join(cells) + " |")
    return lines


def cpu_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| configuration | N | " + " | ".join(CPU_GROUPS) + " | stack, all |",
        "|---|---:|" + "---:|" * (len(CPU_GROUPS) + 1),
    ]
    for name, entry in results["configs"].items():
        rows = [(str(r["summary"]["n"]), r["summary"]["stack_cpu_s_per_run_by_group"]) for r in entry["rounds"]]
        if "idle" in entry:
            rows.append((f"idle, {IDLE_SECONDS:.0f} s", cpu_by_group(entry["idle"]["stack_cpu_s_by_kind"])))
        for n, groups in rows:
            cells = [_f(groups[g]) for g in CPU_GROUPS]
            lines.append(f"| {name} | {n} | " + " | ".join(cells) + f" | {_f(sum(groups.values()))} |")
    return lines


def render_markdown(results: dict[str, Any], full: bool = True) -> str:
    tables = [
        "Wall time from the first trigger to the end of the last run, N runs of N distinct `train_<name>` DAGs:",
        "",
        *summary_table(results),
        "",
        "Per task, mean over the N runs: running s + waiting s (scheduled to queued to started):",
        "",
        *task_table(results),
        "",
        "CPU seconds of the stack's processes per run (sampled every second from `/proc`; idle: the stack with "
        "nothing to run, after the rounds, in CPU seconds over that time):",
        "",
        *cpu_table(results),
    ]
    if not full:
        return "\n".join(tables)
    mach, ver = results["machine"], results["versions"]
    loads = []
    for name, entry in results["configs"].items():
        before = entry["load_before"]
        loads.append(
            f"{name}: {before['other_cores']:.2f} cores busy before (loadavg {before['loadavg'][0]:.2f}"
            + (f", import probe {before['speed_probe_s']:.1f} s" if "speed_probe_s" in before else "")
            + "); "
            f"stack up in {entry.get('startup_s', math.nan):.0f} s, idle stack "
            f"{entry['idle']['cores'].get('stack', 0):.2f} cores"
            if "idle" in entry
            else f"{name}: failed before measuring"
        )
    lines = [
        "## Executors and workers: N training DAGs at once",
        "",
        f"Measured {results['started_at'][:16].replace('T', ' ')} UTC by `benchmarks/topology_scale.py` on "
        f"{mach['nproc']} cores ({mach['cpu_model']}), {mach['memory_gb']} GB RAM; Python {mach['python']}, "
        f"Airflow {ver.get('apache-airflow')}, Celery {ver.get('celery')} (provider "
        f"{ver.get('apache-airflow-providers-celery')}), MLflow {ver.get('mlflow')}, scikit-learn "
        f"{ver.get('scikit-learn')}; code at commit `{results['commit']}`; whole run "
        f"{results.get('elapsed_s', float('nan')) / 60:.1f} min.",
        "",
        "Load before each configuration: " + "; ".join(loads) + ".",
        "",
        *tables,
    ]
    return "\n".join(lines)


# Command line.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.topology_scale", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8], help="runs started at once, per round")
    parser.add_argument(
        "--configs", nargs="+", default=["embedded", "celery1", "celery2"], choices=sorted(TOPOLOGIES),
        help="stack configurations, each a fresh stack; embedded first: the others' ratios are against it",
    )  # fmt: skip
    parser.add_argument("--quiet-below", type=float, default=0.3, help="before each configuration, wait until the "
                        "machine is busy under this many cores...")  # fmt: skip
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="...but at most this many seconds")
    parser.add_argument("--settle-below", type=float, default=0.3, help="before each round, wait until processes "
                        "outside the stack use under this many cores (at most --quiet-wait s)...")  # fmt: skip
    parser.add_argument("--settle-stack-below", type=float, default=1.0, help="...and the stack under this many")
    parser.add_argument("--round-timeout", type=float, default=1800.0, help="give up on a round after this many s")
    parser.add_argument("--skip-after", type=float, default=600.0, help="skip larger N once a round took longer")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between polls of the runs' states")
    parser.add_argument("--mlflow-workers", type=int, default=2, help="MLflow server workers (the stack's default)")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a fresh one in runtime/)")
    parser.add_argument("--render", type=Path, default=None, help="only print the tables of a results JSON")
    parser.add_argument("--markdown", action="store_true", help="print the whole docs/benchmarks.md section")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render is not None:
        print(render_markdown(json.loads(args.render.read_text()), full=args.markdown))
        return 0
    configure(fmt="%(asctime)s %(message)s")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = args.out or RUNTIME_DIR / f"topology_scale-{stamp}-{secrets.token_hex(3)}"
    opts = Options(
        ns=args.n,
        configs=args.configs,
        out=out,
        quiet_below=args.quiet_below,
        quiet_wait=args.quiet_wait,
        settle_below=args.settle_below,
        settle_stack_below=args.settle_stack_below,
        round_timeout=args.round_timeout,
        skip_after=args.skip_after,
        poll=args.poll,
        mlflow_workers=args.mlflow_workers,
    )
    results = run(opts)
    text = json.dumps(results, indent=2, default=str)
    (out / "results.json").write_text(text)
    JSON_OUT.parent.mkdir(parents=True, exist_ok=True)
    JSON_OUT.write_text(text)
    MARKDOWN_OUT.write_text(render_markdown(results) + "\n")
    log.info("raw figures: %s (and %s); stack state kept in %s", JSON_OUT, out / "results.json", out)
    print(render_markdown(results, full=args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
