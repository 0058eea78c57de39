"""The Open Inference Protocol (KServe v2) conversions: metadata, infer request -> /predict payload, located
errors, infer response with /predict's numbers, cheap refusal of hostile bodies, and what tritonclient sends."""

from __future__ import annotations

from collections.abc import Iterator
from copy import deepcopy
from typing import Any

import numpy as np
import orjson
import pytest

from pipelines.core.config import DatasetConfig
from pipelines.data.validation.suite import load_suite
from pipelines.serving.answers import answer
from pipelines.serving.inference_protocol import (
    check_outputs,
    error_body,
    model_metadata,
    oip_error,
    to_payload,
    to_response,
)
from pipelines.serving.parsing import InputError, parse_batch
from pipelines.training.contract import InputContract, contract_from_config
from tests.conftest import REPO_ROOT

# Two flights as /predict records (the flights contract: 3 categorical features, 12 numeric ones with bounds).
RECORDS: list[dict[str, Any]] = [
    {
        "carrier": "UA",
        "origin": "EWR",
        "dest": "IAH",
        "distance": 1400,
        "sched_hour": 5,
        "day_of_week": 1,
        "month": 4,
        "temp": 51.1,
        "dewp": 30.0,
        "humid": 44.0,
        "wind_dir": 270,
        "wind_speed": 12.7,
        "precip": 0,
        "pressure": 1012.1,
        "visib": 10,
    },
    {
        "carrier": "DL",
        "origin": "JFK",
        "dest": "ATL",
        "distance": 760.5,
        "sched_hour": 18,
        "day_of_week": 6,
        "month": 12,
        "temp": None,
        "dewp": -3.5,
        "humid": 81.25,
        "wind_dir": None,
        "wind_speed": 0,
        "precip": 0.02,
        "pressure": None,
        "visib": 2.5,
    },
]


@pytest.fixture
def contract(flights_config: DatasetConfig) -> InputContract:
    return contract_from_config(flights_config, load_suite(REPO_ROOT / "expectations", "flights"))


def infer_request(contract: InputContract, records: list[dict[str, Any]] = RECORDS) -> dict[str, Any]:
    """An infer request of ``records``: one input per feature, FP64 for numbers, BYTES for categories."""
    return {
        "id": "req-1",
        "inputs": [
            {
                "name": spec.name,
                "datatype": "FP64" if spec.kind == "numeric" else "BYTES",
                "shape": [len(records)],
                "data": [record[spec.name] for record in records],
            }
            for spec in contract.fields
        ],
    }


def input_index(body: dict[str, Any], name: str) -> int:
    return next(i for i, tensor in enumerate(body["inputs"]) if tensor["name"] == name)


def refusal(body: Any, contract: InputContract, **kwargs: Any) -> InputError:
    with pytest.raises(InputError) as caught:
        to_payload(body, contract, **kwargs)
    return caught.value


# --- metadata -------------------------------------------------------------------------------------------------


def test_metadata_lists_the_contract_inputs_in_model_order_and_the_binary_outputs(contract: InputContract) -> None:
    # given the flights contract of a binary model, when its metadata is asked for
    meta = model_metadata("flights", "7", contract, "binary", ())
    # then every feature is an input in model order, numbers FP64 and categories BYTES, any number of rows
    assert [tensor["name"] for tensor in meta["inputs"]] == contract.names
    assert meta["inputs"][0] == {"name": "carrier", "datatype": "BYTES", "shape": [-1]}
    assert meta["inputs"][7] == {"name": "temp", "datatype": "FP64", "shape": [-1]}
    # and the outputs are the probability and the decision
    assert meta["outputs"] == [
        {"name": "probability", "datatype": "FP64", "shape": [-1]},
        {"name": "decision", "datatype": "INT64", "shape": [-1]},
    ]
    assert (meta["name"], meta["versions"], meta["platform"]) == ("flights", ["7"], "sklearn")
    assert meta["parameters"] == {"task": "binary", "optional_inputs": ["_id", "_event_time"]}


def test_metadata_of_multiclass_and_regression_models(contract: InputContract) -> None:
    # given a multiclass model with three classes, then its outputs are the probabilities (n x 3) and the class
    meta = model_metadata("iris", None, contract, "multiclass", ("setosa", "versicolor", "virginica"))
    assert meta["outputs"] == [
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
        {"name": "class", "datatype": "BYTES", "shape": [-1]},
    ]
    assert meta["parameters"]["classes"] == ["setosa", "versicolor", "virginica"]
    # and without a version being served, no version is listed
    assert meta["versions"] == []
    # given a regression model, then its one output is the value
    meta = model_metadata("minutes", "2", contract, "regression", ())
    assert meta["outputs"] == [{"name": "value", "datatype": "FP64", "shape": [-1]}]
    assert "classes" not in meta["parameters"]
    # and an unknown task is a programming error
    with pytest.raises(ValueError, match="unknown task"):
        model_metadata("x", "1", contract, "ranking", ())


# --- request -> payload ---------------------------------------------------------------------------------------


def test_a_valid_request_becomes_the_predict_payload_that_parse_batch_accepts(contract: InputContract) -> None:
    # given an infer request of two flights with their ids and event times, nulls where the weather is missing
    body = infer_request(contract)
    body["inputs"].append({"name": "_id", "datatype": "BYTES", "shape": [2], "data": ["UA1545", "DL2"]})
    body["inputs"].append(
        {"name": "_event_time", "datatype": "BYTES", "shape": [2], "data": ["2013-04-01T05:15:00", None]}
    )
    body["parameters"] = {"anything": True}
    # when converted
    payload, requested = to_payload(body, contract, max_records=1000)
    # then the records are the flights, the ids, event times and request id carried over, all outputs asked for
    assert payload == {
        "records": RECORDS,
        "ids": ["UA1545", "DL2"],
        "event_times": ["2013-04-01T05:15:00", None],
        "request_id": "req-1",
    }
    assert requested is None
    # and the /predict parser takes it as it is (nulls as missing values)
    batch = parse_batch(payload, contract, max_records=1000)
    assert batch.size == 2 and batch.request_id == "req-1" and batch.ids == ["UA1545", "DL2"]
    assert np.isnan(batch.numeric["temp"][1]) and batch.categorical["carrier"] == ["UA", "DL"]


def test_nested_rows_of_a_shape_n_by_1_any_numeric_datatype_and_integer_ids_are_accepted(
    contract: InputContract,
) -> None:
    # given the features as [n, 1] tensors nested row by row, integers typed INT64, and integer ids
    body = infer_request(contract)
    for tensor in body["inputs"]:
        tensor["shape"] = [2, 1]
        tensor["data"] = [[value] for value in tensor["data"]]
    body["inputs"][input_index(body, "sched_hour")]["datatype"] = "INT64"
    body["inputs"][input_index(body, "visib")]["datatype"] = "FP32"
    body["inputs"].append({"name": "_id", "datatype": "INT64", "shape": [2, 1], "data": [11, 12]})
    # when converted, then the rows are flattened into the same records and the ids carried over
    payload, _ = to_payload(body, contract)
    assert payload["records"] == RECORDS
    assert payload["ids"] == [11, 12]
    assert parse_batch(payload, contract, max_records=10).ids == ["11", "12"]


def test_requested_outputs_are_returned_by_name(contract: InputContract) -> None:
    # given a request for the decision only (as tritonclient sends it: binary_data false)
    body = infer_request(contract)
    body["outputs"] = [{"name": "decision", "parameters": {"binary_data": False}}]
    # when converted, then the requested names come back
    assert to_payload(body, contract)[1] == ["decision"]
    # and an empty list asks for every output
    body["outputs"] = []
    assert to_payload(body, contract)[1] is None


TEMP = ["inputs", 7]  # the temperature's input in a request of every feature in model order
TEMP_AGAIN = {"name": "temp", "datatype": "FP64", "shape": [2], "data": [51.1, None]}

# (mistake, [(operation, path, value)...] that make it, status, location of the error (or of each error), a piece
# of the first error's message); operations: "set" the value at path, "del" it, "add" it to the list at path,
# "all" inputs get the value's fields, "twice": every input sent twice.
STRUCTURAL: list[tuple[str, list[tuple[str, list[Any], Any]], int, list[Any], str]] = [
    ("unknown top-level field", [("set", ["bogus"], 1)], 400, ["bogus"], "unknown field 'bogus'"),
    ("id not a string", [("set", ["id"], 42)], 400, ["id"], "'id' must be a string"),
    ("parameters not an object", [("set", ["parameters"], [1])], 400, ["parameters"], "must be an object"),
    ("no inputs", [("del", ["inputs"], None)], 400, ["inputs"], "non-empty list"),
    ("empty inputs", [("set", ["inputs"], [])], 400, ["inputs"], "non-empty list"),
    ("input not an object", [("set", TEMP, "temp")], 400, [TEMP, ["inputs", "temp"]], "must be an object"),
    ("unknown field in an input", [("set", [*TEMP, "contents"], {})], 400, [*TEMP, "contents"], "'contents'"),
    ("name not a string", [("set", [*TEMP, "name"], 7)], 400, [[*TEMP, "name"], ["inputs", "temp"]], "'name'"),
    ("datatype not of the protocol", [("set", [*TEMP, "datatype"], "FLOAT")], 400, [*TEMP, "datatype"], "'FLOAT'"),
    (
        "datatype not fitting a numeric feature",
        [("set", [*TEMP, "datatype"], "BYTES")],
        422,
        [*TEMP, "datatype"],
        "'temp' is a numeric feature",
    ),
    (
        "datatype not fitting a categorical feature",
        [("set", ["inputs", 0, "datatype"], "FP64")],
        422,
        ["inputs", 0, "datatype"],
        "'carrier' is a categorical feature",
    ),
    ("bool is not a numeric datatype", [("set", [*TEMP, "datatype"], "BOOL")], 422, [*TEMP, "datatype"], "'BOOL'"),
    ("shape not a list", [("set", [*TEMP, "shape"], 2)], 400, [*TEMP, "shape"], "non-negative integers"),
    ("shape negative", [("set", [*TEMP, "shape"], [-2])], 400, [*TEMP, "shape"], "non-negative integers"),
    ("shape of 3 dimensions", [("set", [*TEMP, "shape"], [2, 1, 1])], 422, [*TEMP, "shape"], "[n] or [n, 1]"),
    ("shape with 2 columns", [("set", [*TEMP, "shape"], [1, 2])], 422, [*TEMP, "shape"], "[n] or [n, 1]"),
    ("shape against data", [("set", [*TEMP, "shape"], [3])], 400, [*TEMP, "data"], "has 2 values but shape [3]"),
    (
        "rows differ between inputs",
        [("set", [*TEMP, "shape"], [1]), ("set", [*TEMP, "data"], [51.1])],
        422,
        [*TEMP, "shape"],
        "'temp' has 1 rows but 'carrier' has 2",
    ),
    ("no rows", [("all", [], {"shape": [0], "data": []})], 422, ["inputs", 0, "shape"], "'carrier' has no rows"),
    ("data not a list", [("set", [*TEMP, "data"], "51.1")], 400, [*TEMP, "data"], "'data' must be a list"),
    (
        "binary data",
        [("del", [*TEMP, "data"], None), ("set", [*TEMP, "parameters"], {"binary_data_size": 16})],
        400,
        [*TEMP, "data"],
        "binary_data=False",
    ),
    (
        "data nested deeper than its shape",
        [("set", [*TEMP, "data"], [[51.1], [None]])],
        400,
        [*TEMP, "data"],
        "nested as its shape",
    ),
    (
        "unknown input",
        [("add", ["inputs"], {"name": "tailnum", "datatype": "BYTES", "shape": [2], "data": ["N1", "N2"]})],
        422,
        ["inputs", 15, "name"],
        "unknown input 'tailnum': the model takes ['carrier'",
    ),
    ("input given twice", [("add", ["inputs"], TEMP_AGAIN)], 422, ["inputs", 15, "name"], "'temp' is given twice"),
    ("missing input", [("del", TEMP, None)], 422, ["inputs", "temp"], "input 'temp' is missing"),
    ("too many inputs", [("twice", [], None)], 422, ["inputs"], "30 inputs, but the model takes one per feature"),
    (
        "id input of a wrong datatype",
        [("add", ["inputs"], {"name": "_id", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]})],
        422,
        ["inputs", 15, "datatype"],
        "'_id' is an optional input",
    ),
    ("outputs not a list", [("set", ["outputs"], {"name": "decision"})], 400, ["outputs"], "must be a list"),
    ("output without a name", [("set", ["outputs"], [{}])], 400, ["outputs", 0, "name"], "'name' must be a string"),
    (
        "output asked twice",
        [("set", ["outputs"], [{"name": "decision"}, {"name": "decision"}])],
        400,
        ["outputs", 1, "name"],
        "requested twice",
    ),
    (
        "classification output",
        [("set", ["outputs"], [{"name": "decision", "parameters": {"classification": 2}}])],
        400,
        ["outputs", 0, "parameters", "classification"],
        "not supported",
    ),
]


def mutated(contract: InputContract, operations: list[tuple[str, list[Any], Any]]) -> dict[str, Any]:
    """A valid request of the two flights changed by ``operations``."""
    body = infer_request(contract)
    for operation, path, value in operations:
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        if operation == "set":
            parent[path[-1]] = deepcopy(value)
        elif operation == "del":
            del parent[path[-1]]
        elif operation == "add":
            parent[path[-1]].append(deepcopy(value))
        elif operation == "all":
            for tensor in body["inputs"]:
                tensor.update(deepcopy(value))
        else:
            body["inputs"] += deepcopy(body["inputs"])
    return body


@pytest.mark.parametrize(
    ("operations", "status", "loc", "message"), [case[1:] for case in STRUCTURAL], ids=[case[0] for case in STRUCTURAL]
)
def test_each_structural_mistake_is_refused_at_its_place(
    contract: InputContract, operations: list[tuple[str, list[Any], Any]], status: int, loc: list[Any], message: str
) -> None:
    # given a valid request with one mistake
    body = mutated(contract, operations)
    # when converted, then it is refused with the status of its kind, naming its place, and that problem only
    # (an input without a readable name also leaves its feature missing)
    exc = refusal(body, contract)
    assert exc.status == status
    assert [error["loc"] for error in exc.errors] == (loc if isinstance(loc[0], list) else [loc]), exc.errors
    assert message in exc.errors[0]["msg"]


def test_every_problem_is_reported_up_to_twenty_and_a_malformed_body_wins_over_a_misfit(
    contract: InputContract,
) -> None:
    # given a request with a contract problem (an input missing) and a structural one (an unknown field)
    body = infer_request(contract)
    del body["inputs"][7]
    body["extra"] = True
    # when converted, then both are reported, and the status is the malformed body's 400
    exc = refusal(body, contract)
    assert exc.status == 400
    assert [error["loc"] for error in exc.errors] == [["extra"], ["inputs", "temp"]]
    # given 30 unknown top-level fields, then exactly the first 20 are reported
    body = infer_request(contract) | {f"x{i}": i for i in range(30)}
    exc = refusal(body, contract)
    assert [error["loc"] for error in exc.errors] == [[f"x{i}"] for i in range(20)]
    # given a body that is not an object, then it is refused as such
    assert refusal([1, 2], contract).status == 400


def test_more_rows_than_the_limit_are_refused_with_413(contract: InputContract) -> None:
    # given a request of two rows and a limit of one, when converted, then 413 names the shape
    exc = refusal(infer_request(contract), contract, max_records=1)
    assert exc.status == 413
    assert exc.errors[0]["loc"] == ["inputs", 0, "shape"] and "2 rows exceed the limit of 1" in exc.errors[0]["msg"]


def test_hostile_bodies_are_refused_without_work_per_element(contract: InputContract) -> None:
    # given a 2 MB body of unknown fields (no inputs at all)
    body: dict[str, Any] = {f"field{i:07d}": 0 for i in range(120_000)}
    assert len(orjson.dumps(body)) > 2_000_000
    # when converted, then it is refused with the first 20 fields and the missing inputs, nothing more
    exc = refusal(body, contract)
    assert exc.status == 400 and len(exc.errors) == 20
    assert exc.errors[0]["loc"] == ["field0000000"]
    # given an input with 1,000,000 values among inputs of two rows (and the same as the only rows)
    body = infer_request(contract)
    temp = body["inputs"][input_index(body, "temp")]
    temp["shape"], temp["data"] = [1_000_000], [0.0] * 1_000_000
    # when converted, then the rows that differ are refused (422), and over the limit it is a 413
    exc = refusal(body, contract)
    assert exc.status == 422 and exc.errors[0]["loc"] == ["inputs", 7, "shape"]
    for tensor in body["inputs"]:
        tensor["shape"], tensor["data"] = [1_000_000], temp["data"]
    assert refusal(body, contract, max_records=1000).status == 413
    # given a shape, inputs and outputs of a million entries, then each is refused by its length alone
    body = infer_request(contract)
    body["inputs"][0]["shape"] = [1] * 1_000_000
    assert refusal(body, contract).errors[0]["loc"] == ["inputs", 0, "shape"]
    body = {"inputs": [{}] * 1_000_000}
    assert refusal(body, contract).errors[0]["loc"] == ["inputs"]
    body = infer_request(contract) | {"outputs": [{"name": "probability"}] * 1_000_000}
    assert refusal(body, contract).errors[0]["loc"] == ["outputs"]
    # given a long unknown field name, then the message and the location show it cut
    body = infer_request(contract) | {"y" * 1_000_000: 1}
    error = refusal(body, contract).errors[0]
    assert len(error["loc"][0]) == 50 and len(error["msg"]) < 200
    # given a body of unknown fields that cannot be read past its 20th key, then it is refused all the same
    assert refusal(TwentyKeysAtMost({f"x{i}": i for i in range(1000)}), contract).status == 400


class TwentyKeysAtMost(dict[str, Any]):
    """A decoded body whose keys cannot be read past the 20th: proof that no more are looked at."""

    def __iter__(self) -> Iterator[str]:
        for read, key in enumerate(super().__iter__()):
            if read == 20:
                raise AssertionError("more than 20 keys were read")
            yield key


# --- errors ---------------------------------------------------------------------------------------------------


def test_parse_batch_errors_are_located_in_the_infer_request(contract: InputContract) -> None:
    # given a well-formed request whose values break the contract: a temperature out of bounds in row 1,
    # a null carrier in row 0, a number as an event time and an empty id
    records = deepcopy(RECORDS)
    records[1]["temp"] = 500.0
    records[0]["carrier"] = None
    body = infer_request(contract, records)
    body["inputs"].append({"name": "_event_time", "datatype": "BYTES", "shape": [2], "data": [None, "soon"]})
    body["id"] = ""
    payload, _ = to_payload(body, contract)
    with pytest.raises(InputError) as caught:
        parse_batch(payload, contract, max_records=10)
    # when its errors are relocated
    exc = oip_error(caught.value)
    # then each names the input and row, in the infer request's terms, with the same status
    assert exc.status == 422
    assert [error["loc"] for error in exc.errors] == [
        ["inputs", "_event_time", "data", 1],
        ["id"],
        ["inputs", "carrier", "data", 0],
        ["inputs", "temp", "data", 1],
    ]
    messages = [error["msg"] for error in exc.errors]
    assert messages[0] == "row 1: input '_event_time' 'soon' is not an ISO 8601 date-time"
    assert messages[1] == "'id' must be a string of 1 to 128 characters"
    assert messages[3] == "row 1: field 'temp' = 500.0 is outside its bounds [-20.0, 120.0]"
    # and the ids' locations too
    ids = oip_error(InputError(422, [{"loc": ["ids", 4], "msg": "ids[4] must be a string", "type": "type_error"}]))
    assert ids.errors == [
        {"loc": ["inputs", "_id", "data", 4], "msg": "row 4: input '_id' must be a string", "type": "type_error"}
    ]


def test_errors_already_in_the_infer_request_terms_pass_unchanged(contract: InputContract) -> None:
    # given a /predict body sent to the infer route: its fields are unknown there
    exc = refusal({"records": RECORDS, "ids": ["a", "b"], "request_id": "r"}, contract)
    # when relocated as the route relocates every error, then nothing changes
    assert oip_error(exc).errors == exc.errors
    assert [error["loc"] for error in exc.errors] == [["records"], ["ids"], ["request_id"], ["inputs"]]


def test_the_error_body_has_a_short_line_and_every_located_problem(contract: InputContract) -> None:
    # given five problems
    errors = [{"loc": ["inputs", i], "msg": f"problem {i}", "type": "t"} for i in range(5)]
    # when made an error body, then the line joins the first three and counts the rest, the detail keeps all
    body = error_body(InputError(422, errors))
    assert body == {"error": "problem 0; problem 1; problem 2; and 2 more (see 'detail')", "detail": errors}
    # and a single problem is the line itself
    assert error_body(InputError(400, errors[:1]))["error"] == "problem 0"


# --- output -> response ---------------------------------------------------------------------------------------


def test_binary_response_has_the_predict_answers_bit_for_bit() -> None:
    # given probabilities around the threshold (one exactly on it)
    rng = np.random.default_rng(7)
    output = np.concatenate([rng.random(50), [0.3]])
    # when answered through both routes
    response = to_response("flights", "3", "req-1", "binary", output, 0.3, (), None)
    predictions = answer("binary", output, [None] * len(output), 0.3).predictions
    # then the outputs are the probability (FP64) and the decision (INT64), every number the same as /predict's
    assert [(o["name"], o["datatype"], o["shape"]) for o in response["outputs"]] == [
        ("probability", "FP64", [51]),
        ("decision", "INT64", [51]),
    ]
    probability, decision = (o["data"] for o in response["outputs"])
    assert orjson.dumps(probability) == orjson.dumps([p["probability"] for p in predictions])
    assert decision == [p["decision"] for p in predictions] and decision[-1] == 1
    assert (response["model_name"], response["model_version"], response["id"]) == ("flights", "3", "req-1")


def test_multiclass_response_flattens_the_probabilities_row_major_and_names_the_class() -> None:
    # given class probabilities of 20 rows, the last with a tie, in a column-major array
    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(3), 20)
    proba[-1] = [0.4, 0.4, 0.2]
    output = np.asfortranarray(proba)
    classes = ("a", "b", "c")
    # when answered through both routes
    response = to_response("iris", "1", "r", "multiclass", output, 0.5, classes, None)
    predictions = answer("multiclass", output, [None] * 20, 0.5, classes).predictions
    # then the probabilities are n x 3 row by row, bit for bit, and the class is /predict's (the first on a tie)
    probabilities, predicted = response["outputs"]
    assert (probabilities["name"], probabilities["shape"], predicted["shape"]) == ("probabilities", [20, 3], [20])
    expected = [p for row in predictions for p in row["probabilities"].values()]
    assert orjson.dumps(probabilities["data"]) == orjson.dumps(expected)
    assert predicted["data"] == [p["class"] for p in predictions] and predicted["data"][-1] == "a"
    # and probabilities that do not match the classes are a programming error
    with pytest.raises(ValueError, match="do not match"):
        to_response("iris", "1", "r", "multiclass", output[:, :2], 0.5, classes, None)


def test_regression_response_and_requested_subsets_in_metadata_order() -> None:
    # given predicted values, when answered, then the value is /predict's bit for bit
    values = np.random.default_rng(5).normal(30, 20, 10)
    response = to_response("minutes", "2", "r", "regression", values, 0.5, (), ["value"])
    assert response["outputs"][0]["shape"] == [10]
    expected = [p["value"] for p in answer("regression", values, [None] * 10, 0.5).predictions]
    assert orjson.dumps(response["outputs"][0]["data"]) == orjson.dumps(expected)
    # given a binary model asked for its outputs in reverse order, then they come in metadata order
    proba = np.array([0.1, 0.9])
    both = to_response("f", "1", "r", "binary", proba, 0.5, (), ["decision", "probability"])
    assert [o["name"] for o in both["outputs"]] == ["probability", "decision"]
    # and asked for the decision only, then only the decision comes
    only = to_response("f", "1", "r", "binary", proba, 0.5, (), ["decision"])
    assert only["outputs"] == [{"name": "decision", "datatype": "INT64", "shape": [2], "data": [0, 1]}]


def test_an_output_the_model_does_not_produce_is_refused_before_scoring() -> None:
    # given a binary model asked for a class, when checked, then 400 names the place and the outputs there are
    with pytest.raises(InputError) as caught:
        check_outputs("binary", ["probability", "class"])
    assert caught.value.status == 400
    assert caught.value.errors[0]["loc"] == ["outputs", 1, "name"]
    assert "['probability', 'decision']" in caught.value.errors[0]["msg"]
    # and outputs the model produces, or none asked for, pass
    check_outputs("multiclass", ["class"])
    check_outputs("regression", None)


# --- a real client ----------------------------------------------------------------------------------------------


def test_what_tritonclient_sends_is_accepted_and_its_answer_read_back(contract: InputContract) -> None:
    from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

    # given the two flights as tritonclient builds them: numpy arrays per feature, data in the JSON,
    # categories as an object array of shape [n, 1], hours as INT64, the weather as FP64 and FP32; tritonclient
    # cannot send a null in a numeric array (NaN is not JSON), so the missing weather is filled in
    flights = deepcopy(RECORDS)
    flights[1].update(temp=40.0, wind_dir=180, pressure=1000.0, visib=0.1)
    inputs = []
    for spec in contract.fields:
        column = [record[spec.name] for record in flights]
        if spec.kind == "categorical":
            tensor = InferInput(spec.name, [2, 1], "BYTES")
            tensor.set_data_from_numpy(np.array(column, dtype=object).reshape(2, 1), binary_data=False)
        elif spec.name in ("sched_hour", "day_of_week", "month"):
            tensor = InferInput(spec.name, [2], "INT64")
            tensor.set_data_from_numpy(np.array(column, dtype=np.int64), binary_data=False)
        elif spec.name == "visib":
            tensor = InferInput(spec.name, [2], "FP32")
            tensor.set_data_from_numpy(np.array(column, dtype=np.float32), binary_data=False)
        else:
            tensor = InferInput(spec.name, [2], "FP64")
            tensor.set_data_from_numpy(np.array(column, dtype=np.float64), binary_data=False)
        inputs.append(tensor)
    ids = InferInput("_id", [2], "BYTES")
    ids.set_data_from_numpy(np.array([b"UA1545", b"DL2"], dtype=object), binary_data=False)
    inputs.append(ids)
    outputs = [InferRequestedOutput("probability", binary_data=False)]
    # when the client builds its request body as infer() does, and the service converts and parses it
    raw, header_length = InferenceServerClient.generate_request_body(inputs, outputs=outputs, request_id="req-7")
    assert header_length is None  # the whole body is JSON
    body = orjson.loads(raw)
    payload, requested = to_payload(body, contract, max_records=1000)
    batch = parse_batch(payload, contract, max_records=1000)
    # then the records are the flights (an FP32 value as float32 holds it), the ids and the id carried over, and
    # the one output asked for
    expected = deepcopy(flights)
    expected[1]["visib"] = float(np.float32(0.1))
    assert payload["records"] == expected and expected[1]["visib"] != 0.1
    assert (batch.ids, batch.request_id, requested) == (["UA1545", "DL2"], "req-7", ["probability"])
    # and the client reads the response back as the same numbers
    proba = np.array([0.171875, 0.8125000000000002])
    response = to_response("flights", "3", "req-7", "binary", proba, 0.5, (), requested)
    result = InferenceServerClient.parse_response_body(orjson.dumps(response))
    assert result.get_response()["id"] == "req-7"
    np.testing.assert_array_equal(result.as_numpy("probability"), proba)
    assert result.as_numpy("decision") is None
    # given no outputs named (the client then asks for binary outputs in the request's parameters)
    raw, _ = InferenceServerClient.generate_request_body(inputs)
    body = orjson.loads(raw)
    assert body["parameters"] == {"binary_data_output": True}
    # then every output is answered, in JSON, which the client reads
    assert to_payload(body, contract)[1] is None
    result = InferenceServerClient.parse_response_body(
        orjson.dumps(to_response("f", "3", "", "binary", proba, 0.5, (), None))
    )
    np.testing.assert_array_equal(result.as_numpy("decision"), [0, 1])
    # given the client's default binary data, then the refusal says how to send JSON data
    binary = InferInput("temp", [2], "FP64")
    binary.set_data_from_numpy(np.array([51.1, 40.0]))
    raw, header_length = InferenceServerClient.generate_request_body([*inputs[:7], binary, *inputs[8:]])
    body = orjson.loads(raw[:header_length])
    exc = refusal(body, contract)
    assert exc.errors[0]["loc"] == ["inputs", 7, "data"] and "binary_data=False" in exc.errors[0]["msg"]
