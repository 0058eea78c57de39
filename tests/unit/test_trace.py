"""The pure parts of lineage and reproduce: comparing predictions, naming environment differences, rendering."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.core.environment import differences, environment
from pipelines.core.errors import PipelineError
from pipelines.trace.lineage import SECTIONS, render
from pipelines.trace.reproduce import Reproduction, _compare


def test_equal_predictions_are_bit_equal_and_any_change_is_counted_and_measured() -> None:
    # given the recorded holdout probabilities of a multiclass model
    recorded = np.array([[0.2, 0.8, 0.0], [0.5, 0.25, 0.25]])
    # then the same numbers are bit-equal
    assert _compare(recorded, recorded.copy()) == (True, 0.0, 0)
    # and a change in the last bit of one value is found, counted and measured
    changed = recorded.copy()
    changed[1, 2] = np.nextafter(changed[1, 2], 1.0)
    equal, largest, count = _compare(recorded, changed)
    assert not equal and count == 1 and 0 < largest < 1e-15


def test_predictions_of_another_shape_are_an_error_naming_both_shapes() -> None:
    with pytest.raises(PipelineError, match=r"shape \(2,\), the record holds \(3,\)"):
        _compare(np.zeros(3), np.zeros(2))


def test_environment_differences_name_each_changed_package_and_the_lock() -> None:
    # given the environment recorded at training, and this one with scikit-learn older and the lock changed
    here = environment()
    packages = json.loads(here["env.packages"])
    recorded = {**here, "env.lock_sha256": "0" * 64, "env.packages": json.dumps({**packages, "scikit-learn": "1.0"})}
    # then each difference is one line saying what was recorded and what is here
    lines = differences(recorded, here)
    assert lines == [
        f"env.lock_sha256: recorded {'0' * 64}, here {here['env.lock_sha256']}",
        f"scikit-learn: recorded 1.0, here {packages['scikit-learn']}",
    ]
    assert differences(here, here) == []


def test_a_reproduction_summary_gives_the_verdict_and_what_differs() -> None:
    same = Reproduction("m", "3", "r", "abc", 42, 100, True, 0.0, 0)
    assert "bit-equal predictions on all 100 holdout rows" in same.summary()
    assert "environment: same as recorded" in same.summary()
    other = Reproduction("m", "3", "r", "abc", 42, 100, False, 2.5e-7, 4, ["numpy: recorded 2.3.0, here 2.4.6"])
    assert "NOT equal: 4 values of 100 holdout rows differ, the largest by 2.5e-07" in other.summary()
    assert "  numpy: recorded 2.3.0, here 2.4.6" in other.summary()


def test_a_lineage_record_renders_every_section_as_readable_lines() -> None:
    # given a record with nested sections, lists and empty values
    record = {section: {} for section in SECTIONS}
    record["model"] = {"name": "wine-cultivar", "version": "2", "task": "multiclass"}
    record["gate"] = {"decision": "passed", "reasons": ["PASS accuracy 0.98 vs floor 0.85"]}
    record["evaluation"] = {"holdout": {"accuracy": 0.98148}, "champion_holdout": {}}
    record["audit"] = [{"at": "2026-01-01T00:00:00", "event": "approved", "actor": "ann", "comment": ""}]
    text = render(record)
    # then it opens with the version and shows each section, values formatted for people
    assert text.startswith("wine-cultivar version 2 (multiclass)")
    assert all(f"\n{section}:" in text for section in SECTIONS[1:])
    assert "gate:\n  decision: passed\n  reasons:\n    - PASS accuracy 0.98 vs floor 0.85" in text
    assert "    accuracy: 0.9815\n  champion_holdout: (none)" in text
    assert "  - at 2026-01-01T00:00:00, event approved, actor ann" in text


def test_retention_keeps_the_newest_the_protected_and_the_young_newest_first() -> None:
    from datetime import UTC, datetime, timedelta

    from pipelines.monitoring.retention import Item, plan

    day = datetime(2026, 1, 1, tzinfo=UTC)
    items = [
        Item("a", day, "trained the champion (v1)"),
        Item("b", day + timedelta(days=1)),
        Item("c", day + timedelta(days=2)),
        Item("d", day + timedelta(days=3)),
        Item("e", day + timedelta(days=10)),
    ]
    # when the two newest are kept and nothing made after day 5 may go
    verdicts = plan(items, keep_newest=2, young_since=day + timedelta(days=5))
    # then e and d stay as the newest, a as protected, and b and c go; the verdicts come newest first
    assert [(v.key, v.keep) for v in verdicts] == [("e", True), ("d", True), ("c", False), ("b", False), ("a", True)]
    assert verdicts[4].reason == "trained the champion (v1)" and verdicts[2].reason == "older than the 2 newest"
    # and with a later age limit the young ones stay too
    assert [v.keep for v in plan(items, 1, day + timedelta(days=2, hours=12))] == [True, True, False, False, True]
