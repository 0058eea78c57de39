"""Reading a dataset's rows, read only: files (CSV, Parquet, folders), the derived row key, the errors that name
what to fix (never a database URL), the scikit-learn demo loader, seeding a file once and extract's Parquet."""

from __future__ import annotations

import json
import re
import traceback
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines.core.config import ROW_KEY, DatasetConfig, load_config_file
from pipelines.core.errors import ConfigError, NotFoundError
from pipelines.core.runs import RunContext, Window
from pipelines.core.settings import Settings
from pipelines.data.extract import extract, parquet_safe
from pipelines.data.seed import seed
from pipelines.data.sources import load_source, read_source, row_keys, sanitize_column
from tests.conftest import REPO_ROOT

JANUARY = Window(date(2024, 1, 1), date(2024, 2, 1))
SECRET = "s3cr3t-pa55"


def shop_config(source: dict[str, Any], target: dict[str, Any] | None = None) -> DatasetConfig:
    """A small binary dataset of orders: a label column with its positive class, two features."""
    raw: dict[str, Any] = {
        "name": "shop",
        "source": source,
        "target": target or {"task": "binary", "column": "churned", "positive": "yes"},
        "features": [{"name": "amount", "type": "numeric"}, {"name": "region", "type": "categorical"}],
        "expectation_suite": "shop",
        "model": {
            "registered_name": "shop",
            "experiment": "shop",
            "estimator": "sklearn.linear_model.LogisticRegression",
        },
    }
    if source.get("time_column"):
        raw["window"] = {"start": "2024-01-01", "end": "2024-02-01"}
    return DatasetConfig.model_validate(raw)


def orders() -> pd.DataFrame:
    """Six orders, two of them outside January 2024, listed out of time order."""
    return pd.DataFrame(
        {
            "order_id": ["007", "002", "003", "004", "005", "006"],
            "ordered_at": pd.to_datetime(
                [
                    "2024-01-20 10:00",
                    "2023-12-31 23:59",
                    "2024-01-02 08:00",
                    "2024-02-01 00:00",
                    "2024-01-01 00:00",
                    "2024-01-15 12:00",
                ]
            ),
            "amount": [10.5, 20.0, 30.25, 40.0, 50.0, 60.0],
            "region": ["north", "south", "north", "east", "west", "south"],
            "churned": ["yes", "no", "no", "yes", None, "no"],
        }
    )


TIMED = {"kind": "file", "time_column": "ordered_at", "key_column": "order_id"}


def test_a_csv_file_gives_the_window_sorted_by_time_with_the_time_parsed(
    tmp_path: Path, isolated_settings: Settings
) -> None:
    # given the orders as a CSV file, with a time and a key column
    path = tmp_path / "orders.csv"
    orders().to_csv(path, index=False)
    config = shop_config({**TIMED, "path": str(path)})
    # when January is read
    frame = read_source(config, isolated_settings, JANUARY)
    # then only January's orders come, in time order, the time parsed and the key kept as text
    assert frame["order_id"].tolist() == ["005", "003", "006", "007"]
    assert pd.api.types.is_datetime64_any_dtype(frame["ordered_at"])
    assert ROW_KEY not in frame.columns
    # and without a window, every row comes
    assert len(read_source(config, isolated_settings, None)) == 6


def test_a_parquet_file_and_a_folder_of_them_read_like_the_csv(tmp_path: Path, isolated_settings: Settings) -> None:
    # given the same orders as one Parquet file, and split over a folder of two Parquet files
    single = tmp_path / "orders.parquet"
    orders().to_parquet(single, index=False)
    folder = tmp_path / "orders"
    folder.mkdir()
    orders().iloc[3:].to_parquet(folder / "b.parquet", index=False)
    orders().iloc[:3].to_parquet(folder / "a.parquet", index=False)
    (folder / "notes.txt").write_text("not data")
    # when each is read for January
    from_file = read_source(shop_config({**TIMED, "path": str(single)}), isolated_settings, JANUARY)
    from_folder = read_source(shop_config({**TIMED, "path": str(folder)}), isolated_settings, JANUARY)
    # then both hold the same rows as the CSV would
    assert from_file["order_id"].tolist() == ["005", "003", "006", "007"]
    pd.testing.assert_frame_equal(from_file, from_folder)


def test_a_folder_of_csv_files_is_read_in_name_order_without_a_time_column(
    tmp_path: Path, isolated_settings: Settings
) -> None:
    # given a folder of two CSV files and a dataset with a key but no time column
    folder = tmp_path / "parts"
    folder.mkdir()
    orders().iloc[:2].to_csv(folder / "2.csv", index=False)
    orders().iloc[2:].to_csv(folder / "1.csv", index=False)
    config = shop_config({"kind": "file", "path": str(folder), "format": "csv", "key_column": "order_id"})
    # when it is read (a window is ignored without a time column)
    frame = read_source(config, isolated_settings, JANUARY)
    # then every row comes, in key order, so that every read gives the same snapshot
    assert frame["order_id"].tolist() == ["002", "003", "004", "005", "006", "007"]


def test_the_derived_key_is_stable_across_reads_and_column_order_and_distinct_per_content(
    tmp_path: Path, isolated_settings: Settings
) -> None:
    # given the orders without a key column, as CSV and as Parquet with the columns in another order
    data = orders().drop(columns=["order_id", "ordered_at"])
    csv, parquet = tmp_path / "o.csv", tmp_path / "o.parquet"
    data.to_csv(csv, index=False)
    data[list(reversed(data.columns))].to_parquet(parquet, index=False)
    # when both are read, twice
    first = read_source(shop_config({"kind": "file", "path": str(csv)}), isolated_settings)
    again = read_source(shop_config({"kind": "file", "path": str(csv)}), isolated_settings)
    other = read_source(shop_config({"kind": "file", "path": str(parquet)}), isolated_settings)
    # then each row has a 16-hex-digit key, the same on every read and whatever the column order
    assert all(re.fullmatch(r"[0-9a-f]{16}", key) for key in first[ROW_KEY])
    assert first[ROW_KEY].tolist() == again[ROW_KEY].tolist() == other[ROW_KEY].tolist()
    # and different rows get different keys
    assert first[ROW_KEY].nunique() == len(data)


def test_row_keys_depend_on_values_not_on_dtypes_and_identical_rows_share_one() -> None:
    # given the same content as integers and as whole floats, and one row repeated
    ints = pd.DataFrame({"a": [1, 2, 2], "b": ["x", None, None]})
    floats = pd.DataFrame({"a": [1.0, 2.0, 2.0], "b": ["x", None, None]})
    # then the keys agree across dtypes, repeated rows share a key, and a change of value changes the key
    assert row_keys(ints).tolist() == row_keys(floats).tolist()
    assert row_keys(ints)[1] == row_keys(ints)[2]
    assert row_keys(ints)[0] != row_keys(pd.DataFrame({"a": [1], "b": ["y"]}))[0]
    # and a missing value differs from the text "None" and from an empty string
    texts = row_keys(pd.DataFrame({"b": [None, "None", ""]}))
    assert texts.nunique() == 3


def test_an_unset_url_env_is_named_and_an_unreachable_database_never_shows_its_url(
    monkeypatch: pytest.MonkeyPatch, isolated_settings: Settings
) -> None:
    # given a table source whose URL variable is not set
    config = shop_config({"kind": "table", "table": "sales.orders", "url_env": "SHOP_DB_URL"})
    monkeypatch.delenv("SHOP_DB_URL", raising=False)
    # then reading it names the variable
    with pytest.raises(ConfigError, match=r"source.url_env SHOP_DB_URL is not set") as unset:
        read_source(config, isolated_settings)
    assert "shop.yaml" in str(unset.value)
    # given the variable holds a URL with a password, to a port where no database listens
    url = f"postgresql+psycopg2://shop:{SECRET}@127.0.0.1:1/shopdb"
    monkeypatch.setenv("SHOP_DB_URL", url)
    # then the error names the variable and the dialect, and neither it nor its traceback shows the URL
    with pytest.raises(NotFoundError, match=r"cannot reach source.url_env SHOP_DB_URL \(postgresql\)") as down:
        read_source(config, isolated_settings)
    shown = "".join(traceback.format_exception(down.value))
    assert SECRET not in shown and "shopdb" not in shown and "127.0.0.1" not in shown
    # and a value that is no URL at all is refused without being quoted
    monkeypatch.setenv("SHOP_DB_URL", f"not a url {SECRET}")
    with pytest.raises(ConfigError, match=r"SHOP_DB_URL does not hold a valid SQLAlchemy URL") as bad:
        read_source(config, isolated_settings)
    assert SECRET not in "".join(traceback.format_exception(bad.value))


def test_a_missing_file_or_folder_names_the_path(tmp_path: Path, isolated_settings: Settings) -> None:
    # given file sources whose path does not exist, and a folder with no data files
    missing = tmp_path / "nowhere" / "orders.parquet"
    empty = tmp_path / "empty"
    empty.mkdir()
    # then each error names the path
    with pytest.raises(NotFoundError, match=re.escape(str(missing))):
        read_source(shop_config({"kind": "file", "path": str(missing)}), isolated_settings)
    with pytest.raises(ConfigError, match=re.escape(str(empty))):
        read_source(shop_config({"kind": "file", "path": str(empty)}), isolated_settings)


def test_an_unreadable_file_names_the_path_and_the_format(tmp_path: Path, isolated_settings: Settings) -> None:
    # given a "Parquet" file that holds text
    path = tmp_path / "orders.parquet"
    path.write_text("order_id,amount\n1,2\n")
    # then reading it says which file could not be read as what
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))} cannot be read as parquet"):
        read_source(shop_config({"kind": "file", "path": str(path)}), isolated_settings)


@pytest.mark.parametrize(
    ("source", "target", "column", "field"),
    [
        ({**TIMED, "time_column": "placed_at"}, None, "placed_at", "source.time_column"),
        ({**TIMED, "key_column": "id"}, None, "id", "source.key_column"),
        (TIMED, {"task": "multiclass", "column": "segment"}, "segment", "target.column"),
    ],
)
def test_a_missing_named_column_is_named_with_its_field(
    tmp_path: Path,
    isolated_settings: Settings,
    source: dict[str, Any],
    target: dict[str, Any] | None,
    column: str,
    field: str,
) -> None:
    # given a file without the column the config names
    path = tmp_path / "orders.csv"
    orders().to_csv(path, index=False)
    config = shop_config({**source, "path": str(path)}, target)
    # then reading it names the column and the config field
    with pytest.raises(ConfigError, match=rf"no column '{column}' \({re.escape(field)}\)"):
        read_source(config, isolated_settings, JANUARY)


def test_sanitised_column_names() -> None:
    assert sanitize_column("mean radius") == "mean_radius"
    assert sanitize_column("od280/od315_of_diluted_wines") == "od280_od315_of_diluted_wines"
    assert sanitize_column("  Worst Concave Points ") == "worst_concave_points"


def test_the_sklearn_loader_gives_sanitised_features_and_named_labels() -> None:
    # given the shipped breast_cancer and wine configs (bundled scikit-learn data, no download)
    datasets = REPO_ROOT / "pipelines" / "conf" / "datasets"
    cancer = load_source(load_config_file(datasets / "breast_cancer.yaml"))
    wine_config = load_config_file(datasets / "wine.yaml")
    wine = load_source(wine_config)
    # then the columns are the configs' features plus the label column, labels by name
    assert len(cancer) == 569 and len(wine) == 178
    assert set(cancer["diagnosis"]) == {"malignant", "benign"}
    assert set(wine["cultivar"]) == {"class_0", "class_1", "class_2"}
    assert set(wine.columns) == {*wine_config.feature_names, "cultivar"}
    assert "mean_radius" in cancer.columns and "od280_od315_of_diluted_wines" in wine.columns


def test_seed_writes_a_file_source_once_and_never_touches_it_again(isolated_settings: Settings) -> None:
    # given the shipped wine config: a Parquet file in the runtime folder, seeded from scikit-learn
    config = load_config_file(REPO_ROOT / "pipelines" / "conf" / "datasets" / "wine.yaml")
    path = isolated_settings.home / "sources" / "wine.parquet"
    # when seeded twice, the file changed by its owner in between
    first = seed(config, isolated_settings, None)
    pd.read_parquet(path).head(10).to_parquet(path, index=False)
    second = seed(config, isolated_settings, None)
    # then the first wrote every row, the second left the owner's file as it was
    assert first.written and first.rows == 178 and first.destination == str(path)
    assert not second.written and len(pd.read_parquet(path)) == 10
    # and reading it gives the wine with its derived key
    frame = read_source(config, isolated_settings)
    assert len(frame) == 10 and frame[ROW_KEY].nunique() == 10


def test_seed_refuses_a_table_source(isolated_settings: Settings) -> None:
    config = shop_config({"kind": "table", "table": "orders"})
    with pytest.raises(ConfigError, match="seed never writes to a table or query source; nothing to seed for dataset"):
        seed(config, isolated_settings, JANUARY)


def test_a_column_of_mixed_types_is_written_as_text_and_extract_has_no_window_without_time(
    tmp_path: Path, isolated_settings: Settings
) -> None:
    # given a frame whose numeric column holds a word (as a SQL source with loose types gives it)
    frame = pd.DataFrame({"distance": [1200, "far", None, 3.5], "n": [1, 2, 3, 4]})
    safe = parquet_safe(frame)
    # then it is written as text, missing kept, the other columns untouched
    safe.to_parquet(tmp_path / "x.parquet")
    assert safe["distance"].tolist() == ["1200", "far", None, "3.5"]
    assert safe["n"].dtype == "int64"
    # given a file source without a time column
    path = tmp_path / "orders.csv"
    orders().drop(columns=["ordered_at"]).to_csv(path, index=False)
    config = shop_config({"kind": "file", "path": str(path), "key_column": "order_id"})
    # when extracted
    snapshot = extract(config, isolated_settings, None, RunContext(run_id="sources_test"))
    # then the snapshot holds every row and says it has no window
    saved = json.loads((Path(snapshot.path).parent / "snapshot.json").read_text())
    assert (saved["rows"], saved["window_start"], saved["window_end"]) == (6, "", "")
    assert saved["rows_without_outcome"] == 1
