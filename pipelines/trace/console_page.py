"""The ops console as one self-contained HTML page (no external asset; one small inline script, for links): a card
per dataset with its champion, live performance and trend, a drift calendar, the policy's decisions and the audit
trail, and the approvals waiting for someone. Every value is escaped; links to Airflow open in the top window (the
page is shown in an iframe of the Airflow UI), links to MLflow in a new tab.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from html import escape

from pipelines.trace.console import Champion, DatasetView, LivePerformance

STATE_LABELS = {
    "ok": "no drift",
    "drift": "drift",
    "insufficient_data": "insufficient data",
    "retraining": "retraining decided",
    "new_champion": "new champion",
}


@dataclass(frozen=True)
class PendingApproval:
    """An approval request nobody has answered yet (read from Airflow by the plugin)."""

    dataset: str
    subject: str
    dag_id: str
    run_id: str
    requested_at: datetime
    deadline: datetime | None
    url: str


def render(
    views: list[DatasetView],
    pending: list[PendingApproval],
    now: datetime,
    *,
    title: str = "Models",
    note: str = "",
) -> str:
    """The whole page; ``now`` only measures how long approvals have waited. Cards of datasets with a champion come
    first, each group in the order given."""
    body = [f"<h1>{escape(title)}</h1>"]
    if note:
        body.append(f'<p class="muted">{escape(note)}</p>')
    body.append(_pending(pending, now))
    if not views:
        body.append('<p class="muted">No dataset is configured.</p>')
    for view in sorted(views, key=lambda v: v.champion is None):
        body.append(_card(view))
    return _PAGE.format(title=escape(title), css=_CSS, body="\n".join(body), script=_SCRIPT)


def _pending(pending: list[PendingApproval], now: datetime) -> str:
    if not pending:
        return '<section id="pending"><h2>Waiting for approval</h2><p class="muted">Nothing is waiting.</p></section>'
    rows = []
    for item in sorted(pending, key=lambda p: p.requested_at):
        left = f"{_duration(item.deadline - now)} left" if item.deadline else "no deadline"
        rows.append(
            f"<tr><td>{escape(item.dataset)}</td><td>{_link(item.url, item.subject, top=True)}</td>"
            f"<td>{_stamp(item.requested_at)}</td><td>{_duration(now - item.requested_at)}</td><td>{left}</td></tr>"
        )
    return (
        '<section id="pending"><h2>Waiting for approval</h2><table><tr><th>dataset</th><th>request</th>'
        "<th>asked</th><th>waiting</th><th>deadline</th></tr>" + "".join(rows) + "</table></section>"
    )


def _card(view: DatasetView) -> str:
    parts = [
        f'<section class="card" id="dataset-{escape(view.name)}">',
        f'<h2>{escape(view.name)} <span class="muted">{escape(view.task)} · {escape(view.model_name)}</span></h2>',
    ]
    if view.description:
        parts.append(f'<p class="muted">{escape(view.description)}</p>')
    for problem in view.problems:
        parts.append(f'<p class="problem">Could not read {escape(problem)}</p>')
    parts.append(_champion(view))
    parts.append(_live(view))
    parts.append(_calendar(view))
    parts.append(_decisions(view))
    parts.append(_audit(view))
    parts.append("</section>")
    return "\n".join(parts)


def _champion(view: DatasetView) -> str:
    champion = view.champion
    if champion is None:
        return (
            '<div class="champion"><p><b>No champion yet.</b> '
            f"{_link(view.training_dag_url, 'Run the training DAG', top=True)}.</p></div>"
        )
    metrics = _metrics_table(champion.holdout, view.headline_metric)
    approved = "not recorded"
    if champion.approved_by:
        approved = (
            f"{escape(champion.approved_by)} ({escape(champion.approval_mode or '')}) {_stamp(champion.approved_at)}"
        )
        if champion.approval_comment:
            approved += f' <span class="muted">“{escape(champion.approval_comment)}”</span>'
    rollback = _rollback(view, champion)
    return (
        '<div class="champion">'
        f'<p class="headline">Champion <b class="version">v{escape(champion.version)}</b> '
        f"{_link(champion.version_url, 'model version')} · {_link(champion.run_url, 'training run')}</p>"
        f"<p>serving since {_stamp(champion.since)} · approved by {approved}</p>"
        f"<p>holdout: {metrics}</p>{rollback}</div>"
    )


def _rollback(view: DatasetView, champion: Champion) -> str:
    if not champion.previous_version:
        return '<p class="muted">No previous champion.</p>'
    return (
        f"<p>previous champion v{escape(champion.previous_version)} · roll back with "
        f"<code>{escape(view.rollback_command)}</code> (to v{escape(champion.previous_version)})</p>"
    )


def _live(view: DatasetView) -> str:
    if view.champion is None:
        return ""
    cells = [_live_cell(view, perf) for perf in view.live] or [
        '<span class="muted">no window monitored since it became champion</span>'
    ]
    return (
        f'<div class="live"><h3>Live performance ({escape(view.headline_metric)})</h3><p>'
        + " · ".join(cells)
        + f"</p>{_sparkline(view)}</div>"
    )


def _live_cell(view: DatasetView, perf: LivePerformance) -> str:
    value = perf.metrics.get(view.headline_metric)
    shown = f"{value:.3f}" if value is not None else "n/a"
    return (
        f"last {perf.days} days (to {perf.end}): <b>{shown}</b> "
        f'<span class="muted">({perf.labelled:,} labelled of {perf.predictions:,} predictions)</span>'
    )


def _sparkline(view: DatasetView) -> str:
    points = view.trend
    if len(points) < 2:
        return '<p class="muted">Not enough monitored windows for a trend.</p>'
    values = [v for _, v in points]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    width, height = 360, 60
    step = width / (len(points) - 1)
    coords = " ".join(
        f"{i * step:.1f},{height - 4 - (v - low) / span * (height - 8):.1f}" for i, v in enumerate(values)
    )
    label = f"{view.headline_metric} per window, {points[0][0]} to {points[-1][0]}: {low:.3f} to {high:.3f}"
    return (
        f'<svg class="trend" role="img" aria-label="{escape(label)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{escape(label)}</title>'
        f'<polyline fill="none" stroke="#2563eb" stroke-width="2" points="{coords}"/></svg>'
        f'<span class="muted"> {low:.3f} – {high:.3f} over the last {len(points)} windows</span>'
    )


def _calendar(view: DatasetView) -> str:
    if not view.calendar:
        return '<div class="calendar"><h3>Drift calendar</h3><p class="muted">No monitored window yet.</p></div>'
    months: dict[tuple[int, int], dict[int, str]] = defaultdict(dict)
    for cell in view.calendar:
        label = STATE_LABELS.get(cell.state, cell.state)
        months[(cell.start.year, cell.start.month)][cell.start.day] = (
            f'<a class="cell {escape(cell.state)}" href="{escape(cell.report_url)}" target="_blank" '
            f'rel="noopener" title="{escape(cell.title)}" aria-label="{escape(f"{cell.start}: {label}")}"></a>'
        )
    rows = []
    for (year, month), days in sorted(months.items()):
        first = date(year, month, 1)
        last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        cells = "".join(days.get(day, '<span class="cell none"></span>') for day in range(1, last.day + 1))
        rows.append(f'<div class="month"><span class="label">{first:%b %Y}</span>{cells}</div>')
    legend = "".join(f'<span class="cell {state}"></span> {label} ' for state, label in STATE_LABELS.items())
    return f'<div class="calendar"><h3>Drift calendar</h3>{"".join(rows)}<p class="legend">{legend}</p></div>'


def _decisions(view: DatasetView) -> str:
    if not view.decisions:
        return '<div><h3>Retraining policy</h3><p class="muted">No decision yet.</p></div>'
    rows = []
    for d in view.decisions:
        verdict = "<b>retrain</b>" if d.retrain else "keep"
        run = _link(d.training_run_url, "training run", top=True) if d.training_run_url else ""
        reasons = "".join(f"<li>{escape(r)}</li>" for r in d.reasons)
        rows.append(
            f"<tr><td>{d.window_end}</td><td>{verdict}</td><td>{escape(d.trigger or '')}</td>"
            f"<td>{escape(d.summary)}<ul>{reasons}</ul></td><td>{run}</td></tr>"
        )
    hidden = view.decisions_not_listed
    note = (
        f'<p class="muted">The latest decision and the decisions to retrain; {hidden} other '
        f"{'decision' if hidden == 1 else 'decisions'} to keep the champion not listed.</p>"
        if hidden
        else ""
    )
    return (
        '<div class="decisions"><h3>Retraining policy</h3><table><tr><th>window end</th><th>decision</th>'
        "<th>trigger</th><th>why</th><th></th></tr>" + "".join(rows) + f"</table>{note}</div>"
    )


def _audit(view: DatasetView) -> str:
    if not view.audit:
        return '<div><h3>Audit trail</h3><p class="muted">Nothing recorded yet.</p></div>'
    rows = []
    for e in view.audit:
        runs = _link(e.dag_runs_url, "DAG runs", top=True) if e.dag_runs_url else ""
        rows.append(
            f'<tr><td>{_stamp(e.at)}</td><td class="event {escape(e.event)}">{escape(e.event)}</td>'
            f"<td>{_link(e.version_url, 'v' + e.version)}</td><td>{escape(e.actor)}</td><td>{escape(e.mode)}</td>"
            f"<td>{escape(e.comment)}</td><td>{runs}</td></tr>"
        )
    return (
        '<div class="audit"><h3>Audit trail</h3><table><tr><th>when</th><th>event</th><th>version</th><th>by</th>'
        "<th>mode</th><th>comment</th><th></th></tr>" + "".join(rows) + "</table></div>"
    )


def _metrics_table(metrics: dict[str, float], headline: str) -> str:
    if not metrics:
        return '<span class="muted">not recorded</span>'
    ordered = sorted(metrics.items(), key=lambda kv: (kv[0] != headline, kv[0]))
    return " · ".join((f"<b>{escape(k)} {v:.3f}</b>" if k == headline else f"{escape(k)} {v:.3f}") for k, v in ordered)


def _link(url: str | None, text: str, *, top: bool = False) -> str:
    if not url:
        return ""
    target = 'target="_top"' if top else 'target="_blank" rel="noopener"'
    return f'<a href="{escape(url)}" {target}>{escape(text)}</a>'


def _stamp(value: datetime | str | None) -> str:
    if value is None:
        return '<span class="muted">unknown</span>'
    text = value.isoformat(timespec="minutes") if isinstance(value, datetime) else str(value)
    return f"<time>{escape(text.replace('T', ' ').removesuffix('+00:00'))}</time>"


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 0:
        return "overdue"
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{css}</style></head>
<body>{body}<script>{script}</script></body></html>"""

# The Airflow UI shows the page in an iframe sandboxed without allow-top-navigation or allow-popups (Airflow 3's
# external views), so a link with a target would do nothing there. Same origin, the page may reach the Airflow
# window: the click is replayed on the same link made in it (Airflow pages then open in it, MLflow in a new tab).
# Opened on its own, the page's links work as written.
_SCRIPT = """
document.addEventListener("click", function (event) {
  var link = event.target.closest ? event.target.closest("a[target]") : null;
  if (!link || window.top === window || event.defaultPrevented) return;
  var doc;
  try { doc = window.top.document; } catch (error) { return; }
  event.preventDefault();
  var copy = doc.createElement("a");
  copy.href = link.href;
  copy.target = link.target;
  copy.rel = link.rel;
  copy.style.display = "none";
  doc.body.appendChild(copy);
  copy.click();
  copy.remove();
});
"""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#111827;background:#fff}
h1{font-size:1.4rem;margin:0 0 12px}h2{font-size:1.15rem;margin:0 0 6px}h3{font-size:1rem;margin:14px 0 6px}
.muted{color:#6b7280;font-weight:normal}.problem{color:#b91c1c}
.card{border:1px solid #e5e7eb;border-radius:8px;padding:14px 16px;margin:0 0 18px}
.headline{font-size:1.05rem}.version{font-size:1.2rem}
table{border-collapse:collapse;font-size:.88rem}td,th{border-bottom:1px solid #f3f4f6;padding:4px 8px;text-align:left;
vertical-align:top}ul{margin:2px 0 0 16px;padding:0}
.month{display:flex;align-items:center;gap:2px;margin:2px 0}.month .label{width:70px;font-size:.8rem;color:#374151}
.cell{display:inline-block;width:13px;height:13px;border-radius:2px;background:#f3f4f6}
.cell.ok{background:#86efac}.cell.drift{background:#fbbf24}.cell.insufficient_data{background:#d1d5db}
.cell.retraining{background:#f97316}.cell.new_champion{background:#2563eb}.cell.none{background:#fafafa}
.legend{font-size:.8rem;color:#374151}.legend .cell{vertical-align:middle}
.event.refused,.event.artifact_refused,.event.serving_switch_failed,.event.rolled_back{color:#b91c1c}
.event.deployed,.event.approved{color:#15803d}code{background:#f3f4f6;padding:1px 4px;border-radius:4px}
"""
