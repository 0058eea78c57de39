"""The input contract: built from the config and the reviewed suite, and every rule of request parsing."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest

from pipelines.data.validation.suite import load_suite
from pipelines.serving.parsing import InputError, parse_batch
from pipelines.training.contract import InputContract, contract_from_config
from tests.conftest import REPO_ROOT


@pytest.fixture
def contract(flights_config) -> InputContract:
    return contract_from_config(flights_config, load_suite(REPO_ROOT / "expectations", "flights"))


@pytest.fixture
def record() -> dict:
    return {
        "carrier": "UA",
        "origin": "EWR",
        "dest": "IAH",
        "distance": 1400,
        "sched_hour": 5,
        "day_of_week": 1,
        "month": 1,
        "temp": 39.0,
        "dewp": 28.0,
        "humid": 64.4,
        "wind_dir": 260,
        "wind_speed": 12.6,
        "precip": 0,
        "pressure": 1012.0,
        "visib": 10,
    }


def test_contract_takes_types_from_the_config_and_bounds_from_the_suite(
    contract: InputContract, flights_config
) -> None:
    fields = {f.name: f for f in contract.fields}
    # then the fields are the features, in model order
    assert contract.names == flights_config.feature_names
    # and the suite's reviewed bounds and not-null rules apply
    assert (fields["temp"].minimum, fields["temp"].maximum, fields["temp"].nullable) == (-20.0, 120.0, True)
    assert fields["carrier"].kind == "categorical" and not fields["carrier"].nullable
    assert (fields["distance"].minimum, fields["distance"].nullable) == (1.0, False)
    # and features derived from the time column get calendar bounds
    assert (fields["sched_hour"].minimum, fields["sched_hour"].maximum) == (0, 23)
    assert (fields["month"].minimum, fields["month"].maximum) == (1, 12)
    # and it survives the round trip through the model's metadata
    assert InputContract.from_dict(contract.to_dict()) == contract


def test_a_valid_batch_becomes_columns(contract: InputContract, record: dict) -> None:
    batch = parse_batch(
        {
            "records": [record, {**record, "temp": None, "dest": "ZZZ"}],
            "ids": ["a", 7],
            "event_times": ["2013-04-01T05:15:00", None],
            "request_id": "r1",
        },
        contract,
        10,
    )
    assert batch.size == 2 and batch.request_id == "r1"
    assert batch.categorical["dest"] == ["IAH", "ZZZ"]
    assert batch.numeric["temp"][0] == 39.0 and math.isnan(batch.numeric["temp"][1])
    assert batch.ids == ["a", "7"]
    assert batch.event_times == [datetime(2013, 4, 1, 5, 15), None]


@pytest.mark.parametrize(
    ("change", "loc", "kind"),
    [
        ({"temp": "warm"}, ["records", 0, "temp"], "type_error"),
        ({"temp": True}, ["records", 0, "temp"], "type_error"),
        ({"carrier": 3}, ["records", 0, "carrier"], "type_error"),
        ({"carrier": "x" * 201}, ["records", 0, "carrier"], "too_long"),
        ({"humid": 100.5}, ["records", 0, "humid"], "out_of_bounds"),
        ({"sched_hour": 24}, ["records", 0, "sched_hour"], "out_of_bounds"),
        ({"origin": None}, ["records", 0, "origin"], "null_forbidden"),
        ({"arr_delay": 3}, ["records", 0, "arr_delay"], "extra_forbidden"),
    ],
)
def test_a_record_breaking_a_rule_is_refused_naming_the_field(
    contract: InputContract, record: dict, change: dict, loc: list, kind: str
) -> None:
    with pytest.raises(InputError) as caught:
        parse_batch({"records": [{**record, **change}]}, contract, 10)
    assert caught.value.status == 422
    assert caught.value.errors[0]["loc"] == loc and caught.value.errors[0]["type"] == kind


def test_every_problem_is_reported_up_to_a_limit(contract: InputContract, record: dict) -> None:
    # given 30 records each missing a field
    records = [{k: v for k, v in record.items() if k != "visib"}] * 30
    with pytest.raises(InputError) as caught:
        parse_batch({"records": records}, contract, 100)
    # then the first 20 problems are listed, each with its record
    assert len(caught.value.errors) == 20
    assert [e["loc"][1] for e in caught.value.errors] == list(range(20))


@pytest.mark.parametrize(
    ("payload", "status", "loc"),
    [
        ([], 422, []),
        ({"records": []}, 422, ["records"]),
        ({"records": "x"}, 422, ["records"]),
        ({"records": [1]}, 422, ["records", 0]),
        ({"rows": []}, 422, ["rows"]),
        ({"records": [{}] * 11}, 413, ["records"]),
        ({"records": [{}], "request_id": ""}, 422, ["request_id"]),
    ],
)
def test_malformed_batches_are_refused(contract: InputContract, payload: object, status: int, loc: list) -> None:
    with pytest.raises(InputError) as caught:
        parse_batch(payload, contract, 10)
    assert caught.value.status == status and caught.value.errors[0]["loc"] == loc


def test_the_json_schema_documents_the_contract(contract: InputContract) -> None:
    schema = contract.json_schema()
    assert schema["additionalProperties"] is False and schema["required"] == contract.names
    assert schema["properties"]["temp"]["anyOf"][0] == {"type": "number", "minimum": -20.0, "maximum": 120.0}
    assert schema["properties"]["carrier"]["type"] == "string"


class _CountingDict(dict):  # type: ignore[type-arg]
    """A record that counts how many of its keys were read by iteration."""

    read = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        for key in super().__iter__():
            type(self).read += 1
            yield key


@pytest.mark.parametrize("where", ["record", "top level"])
def test_a_body_of_unknown_fields_is_refused_after_reading_twenty_of_them(
    contract: InputContract, record: dict, where: str
) -> None:
    # given a 2 MB body: one record (or the body itself) with 100,000 unknown fields of long names
    junk = _CountingDict({f"{'x' * 12}{i:07d}": 0 for i in range(100_000)})
    _CountingDict.read = 0
    payload = {"records": [{**record, **junk} if where == "record" else record]}
    if where == "top level":
        payload = _CountingDict({"records": [record], **junk})
    else:
        payload["records"][0] = _CountingDict(payload["records"][0])
    # when it is parsed
    with pytest.raises(InputError) as refused:
        parse_batch(payload, contract, max_records=1000)
    # then it is refused with at most 20 errors, each naming an unknown field, after reading about that many keys
    errors = refused.value.errors
    assert refused.value.status == 422 and len(errors) == 20
    assert all(e["type"] == "extra_forbidden" and "xxxxxxxxxxxx" in e["msg"] for e in errors)
    assert _CountingDict.read < 100, "the parser read every unknown field instead of stopping at the limit"


@pytest.mark.parametrize("size", [1, 16, 17, 50])  # up to 16: checked value by value; above: as arrays
def test_a_clean_batch_gets_the_same_columns_column_by_column_as_record_by_record(
    contract: InputContract, record: dict, size: int
) -> None:
    from pipelines.serving.parsing import _clean_columns, _parse_records

    # given a clean batch with nulls where allowed, ints and floats, unseen categories
    records = [
        {**record, "temp": None if i % 3 == 0 else 30 + i / 7, "distance": 100 + i, "dest": f"D{i % 5}"}
        for i in range(size)
    ]
    # when it is parsed a column at a time (the fast path) and record by record
    fast = _clean_columns(records, contract)
    errors: list = []
    slow = _parse_records(records, contract, errors)
    # then both give the same columns, NaN where null
    assert fast is not None and not errors
    assert fast[0] == slow[0]
    assert fast[1].keys() == slow[1].keys()
    for name in fast[1]:
        np.testing.assert_array_equal(fast[1][name], slow[1][name])
    assert np.isnan(fast[1]["temp"][0]) and fast[1]["distance"].dtype == np.float64


@pytest.mark.parametrize("size", [1, 40])
@pytest.mark.parametrize(
    "change",
    [
        {"temp": float("nan")},
        {"temp": float("inf")},
        {"temp": 10**400},
        {"temp": True},
        {"temp": "39"},
        {"humid": 100.5},
        {"sched_hour": -1},
        {"distance": None},
    ],
    ids=["nan", "inf", "huge-int", "bool", "string", "above", "below", "null-forbidden"],
)
def test_the_column_checks_leave_any_broken_number_to_the_record_by_record_path(
    contract: InputContract, record: dict, size: int, change: dict
) -> None:
    from pipelines.serving.parsing import _clean_columns

    # given a batch whose last record breaks a numeric rule (NaN and infinity can come from a decoded body too)
    records = [dict(record) for _ in range(size - 1)] + [{**record, **change}]
    # when checked a column at a time (value by value for a few records, as arrays for many), then it is not
    # passed as clean: the record-by-record path names the record and the rule
    assert _clean_columns(records, contract) is None
    with pytest.raises(InputError) as caught:
        parse_batch({"records": records}, contract, 100)
    assert caught.value.errors[0]["loc"][:2] == ["records", size - 1]


@pytest.mark.parametrize(
    "change", [{"humid": float("nan")}, {"humid": float("inf")}, {"temp": None, "distance": None}], ids=str
)
def test_the_block_check_tells_a_null_from_a_nan_and_a_null_where_allowed_from_one_where_not(
    contract: InputContract, record: dict, change: dict
) -> None:
    from pipelines.serving.parsing import _clean_columns

    # given 40 records with nulls where the contract allows them, and a last one breaking a rule among those nulls
    records = [{**record, "temp": None, "visib": None} for _ in range(39)] + [{**record, **change}]
    # then the block of numbers is not passed as clean (a NaN is not a null, a null is not allowed everywhere) ...
    assert _clean_columns(records, contract) is None
    # ... while the same batch without the last record is, its nulls as NaN
    clean = _clean_columns(records[:-1], contract)
    assert clean is not None and np.isnan(clean[1]["temp"]).all() and not np.isnan(clean[1]["humid"]).any()


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"temp": "warm"}, "type_error"),
        ({"visib": True}, "type_error"),
        ({"carrier": None}, "null_forbidden"),
        ({"dest": "x" * 201}, "too_long"),
        ({"humid": 100.5}, "out_of_bounds"),
        ({"arr_delay": 3}, "extra_forbidden"),
    ],
)
def test_a_bad_record_deep_in_a_large_batch_is_named_with_its_index(
    contract: InputContract, record: dict, change: dict, kind: str
) -> None:
    # given 100 good records but the 73rd
    records = [dict(record) for _ in range(100)]
    records[73] = {**record, **change}
    with pytest.raises(InputError) as caught:
        parse_batch({"records": records}, contract, 100)
    # then that record and rule are named, and nothing else
    assert [(e["loc"][1], e["type"]) for e in caught.value.errors] == [(73, kind)]


def test_a_record_with_a_field_swapped_for_an_unknown_one_is_refused(contract: InputContract, record: dict) -> None:
    # given records of the right size, one of which has an unknown field instead of visib
    swapped = {k: v for k, v in record.items() if k != "visib"} | {"visibility": 10}
    with pytest.raises(InputError) as caught:
        parse_batch({"records": [record] * 20 + [swapped]}, contract, 100)
    assert {(e["loc"][1], e["loc"][2], e["type"]) for e in caught.value.errors} == {
        (20, "visibility", "extra_forbidden"),
        (20, "visib", "missing"),
    }
