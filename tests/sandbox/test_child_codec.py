"""The encoding of tier-5 outputs between the sandbox and the worker: faithful, no pickle."""

from __future__ import annotations

import io
import json
import math
import pickle

import numpy as np
import pandas as pd
import pytest

from sandbox.isolation.child import Opaque, decode_value, encode_value


def round_trip(value: object) -> object:
    encoded, blobs = encode_value(value)
    wire = json.loads(json.dumps(encoded))  # what really crosses the pipe
    return decode_value(wire, tuple(blobs))


def test_plain_values_and_containers_come_back_as_they_were() -> None:
    value = {"a": 1, 2: [1.5, None, True], ("x", 3): ("t", "u"), "s": "text"}
    assert round_trip(value) == value
    back = round_trip({"nan": math.nan, "inf": -math.inf})
    assert isinstance(back, dict) and math.isnan(back["nan"]) and back["inf"] == -math.inf
    assert round_trip(np.float64(2.5)) == 2.5 and round_trip(np.int64(7)) == 7


def test_pandas_and_numpy_outputs_keep_their_index_and_names() -> None:
    series = pd.Series([1.0, 2.0], index=pd.Index(["press", "mill"], name="machine"), name="mean")
    back = round_trip(series)
    assert isinstance(back, pd.Series)
    pd.testing.assert_series_equal(back, series, check_names=True)
    frame = pd.DataFrame({"n": [3, 4]}, index=pd.Index(["a", "b"], name="k"))
    pd.testing.assert_frame_equal(round_trip({"t": frame})["t"], frame)  # type: ignore[index]
    array = round_trip(np.arange(6).reshape(2, 3))
    assert isinstance(array, np.ndarray) and array.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_what_cannot_travel_becomes_opaque_and_nothing_is_unpickled() -> None:
    assert isinstance(round_trip(object()), Opaque)
    assert isinstance(round_trip(np.array([object()], dtype=object)), Opaque)  # would need pickle
    nested: list[object] = []
    for _ in range(20):
        nested = [nested]
    assert "Opaque" in repr(round_trip(nested))
    # Hostile encodings: a blob index out of range, a pickled blob, unhashable keys.
    assert isinstance(decode_value({"$frame": 3}, ()), Opaque)
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    assert isinstance(decode_value({"$array": 0}, (buffer.getvalue(),)), Opaque)
    assert isinstance(decode_value({"$frame": 0}, (pickle.dumps(pd.DataFrame()),)), Opaque)
    key = {"$t": [{"$l": [1]}]}
    assert isinstance(decode_value({"$d": [[key, 1]]}, ()), Opaque)
    assert isinstance(decode_value({"$q": 1}, ()), Opaque)


@pytest.mark.parametrize("wire", [[1, 2], {"$l": "not a list"}, {"a": 1, "b": 2, "c": 3}])
def test_malformed_json_is_opaque(wire: object) -> None:
    assert isinstance(decode_value(wire, ()), Opaque)
