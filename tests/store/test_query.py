"""SQL reads only the store: no table functions, no files, no data echoed in errors; and any
image id works as a selection, even one that reads like SQL."""

import numpy as np
import pytest

import odinlab

SECRET = "hunter2-top-secret"


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret.csv"
    path.write_text(f"image_id\n{SECRET}\n")
    return path


@pytest.mark.parametrize("query", [
    "SELECT * FROM read_csv('{path}')",
    "SELECT * FROM READ_CSV /* hidden */ ('{path}')",
    "SELECT * FROM \"read_csv\"('{path}')",
    "SELECT * FROM `read_csv`('{path}')",
    "SELECT * FROM images, read_csv('{path}')",
    "SELECT image_id FROM images WHERE image_id IN (SELECT image_id FROM read_csv('{path}'))",
    "SELECT * FROM read_parquet('{path}')",
    "select * from read_json('{path}')",
])
def test_table_functions_are_refused_in_sql_and_in_selections(tiny_store, secret_file, query):
    query = query.format(path=secret_file)
    for call in (tiny_store.sql, tiny_store.select, tiny_store.pixels):
        with pytest.raises(odinlab.QueryError, match="reads only its tables") as error:
            call(query)
        assert SECRET not in str(error.value)


def test_a_string_that_mentions_read_csv_is_data_not_a_call(tiny_store):
    found = tiny_store.sql("SELECT COUNT(*) AS n FROM images WHERE image_id = 'read_csv(x)'")
    assert found["n"][0] == 0


def test_value_dependent_errors_do_not_echo_data(tiny_store):
    tiny_store.ingest(np.zeros((1, 8, 8), np.uint8), labels=[0], ids=[SECRET])
    with pytest.raises(odinlab.QueryError) as error:
        tiny_store.sql("SELECT CAST(image_id AS INTEGER) AS x FROM images")
    assert SECRET not in str(error.value)


def test_an_id_that_reads_like_sql_selects_that_image(tiny_store):
    tiny_store.ingest(np.full((2, 8, 8), 9, np.uint8), labels=[0, 1], ids=["with love", "select me"])
    assert tiny_store.select("with love").ids == ["with love"]
    assert tiny_store.select("select me").ids == ["select me"]
    assert tiny_store.pixels("with love")[0, 0, 0, 0] == 9
    # A real query still works, and a split name is a split.
    assert tiny_store.select("SELECT image_id FROM images WHERE image_id = 'with love'").ids == ["with love"]
    assert len(tiny_store.select("val")) == 20
