"""The shared vectors (../shared/vectors), from Python objects and back."""
import json
import math
import os

import numpy as np
import pytest

import quiver

VECTORS = os.environ.get("QV_VECTORS") or os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "vectors")


def _rows(name):
    with open(os.path.join(VECTORS, name), encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def _typed(v):
    """The host object for a typed value of values.json / calls.json."""
    (kind, x), = v.items()
    if kind == "null":
        return None
    if kind == "bool":
        return x
    if kind == "int":
        return int(x)
    if kind == "float":
        return float(x)
    if kind == "text":
        return x
    if kind == "bytes":
        return bytes.fromhex(x)
    if kind == "list":
        return [_typed(i) for i in x]
    if kind == "map":
        return {_typed(k): _typed(val) for k, val in x}
    tag, content = x
    if tag == 258:
        return set(_typed(i) for i in content["list"])
    if tag == 0x51560001:
        return tuple(_typed(i) for i in content["list"])
    if tag == 40:
        shape, typed = content["list"]
        inner_tag, data = typed["tag"]
        dtype = {78: "<i4", 86: "<f8"}[inner_tag]
        return np.frombuffer(bytes.fromhex(data["bytes"]), dtype=dtype).reshape([int(s["int"]) for s in shape["list"]])
    return quiver.Tag(tag, _typed(content))


VALUES = json.load(open(os.path.join(VECTORS, "values.json"), encoding="utf-8"))
TSV = _rows("values.tsv")


@pytest.mark.parametrize("v", VALUES, ids=[v["name"] for v in VALUES])
def test_host_objects_encode_to_the_vector_bytes(v):
    obj = _typed(v["value"])
    assert quiver.encode(obj).hex() == v["cbor"]
    assert quiver.digest(obj) == v["digest"]


@pytest.mark.parametrize("row", TSV, ids=[r[2] for r in TSV])
def test_decode_then_encode_is_identity(row):
    enc, dig, name = row
    data = bytes.fromhex(enc)
    obj = quiver.decode(data)
    if name == "pickle":
        # A pickle decodes to what was pickled (42), which encodes natively.
        assert obj == 42 and quiver.encode(obj) == b"\x18\x2a"
        return
    if isinstance(obj, float) and math.isnan(obj):
        assert enc == "f97e00"
    assert quiver.encode(obj) == data
    assert quiver.digest(obj) == dig


def test_numpy_matrix_decodes_to_an_ndarray():
    row = next(r for r in TSV if r[2] == "2x2 int32 matrix")
    a = quiver.decode(bytes.fromhex(row[0]))
    assert isinstance(a, np.ndarray) and a.dtype == np.int32 and a.tolist() == [[1, 2], [3, 4]]


def test_numpy_layouts_encode_as_little_endian_c_order():
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    want = quiver.encode(a)
    assert quiver.encode(np.asfortranarray(a)) == want
    assert quiver.encode(a.astype(">i4")) == want
    assert quiver.encode(a.T.copy().T) == want
    back = quiver.decode(want)
    assert back.dtype == np.int32 and (back == a).all()
    # other dtypes are pickled, and still round-trip
    b = np.array([True, False])
    assert quiver.decode(quiver.encode(b)).tolist() == [True, False]


INVALID = _rows("invalid.tsv")


@pytest.mark.parametrize("row", INVALID, ids=[r[1] for r in INVALID])
def test_invalid_inputs_raise_quiver_errors(row):
    with pytest.raises(quiver.Error) as e:
        quiver.decode(bytes.fromhex(row[0]))
    assert str(e.value)


CALLS = json.load(open(os.path.join(VECTORS, "calls.json"), encoding="utf-8"))


@pytest.mark.parametrize("c", CALLS, ids=[f"{c['name']}-{i}" for i, c in enumerate(CALLS)])
def test_call_digests(c):
    args = [_typed(a) for a in c["args"]]
    kwargs = {_typed(k): _typed(v) for k, v in c["kwargs"]}
    assert quiver.call_digest(c["name"], c["version"], args, kwargs) == c["digest"]


def test_calls_tsv_matches_memoized_functions():
    for name, version, args_hex, kwargs_hex, digest in _rows("calls.tsv"):
        version = None if version == "\\N" else version
        args, kwargs = quiver.decode(bytes.fromhex(args_hex)), quiver.decode(bytes.fromhex(kwargs_hex))

        def body(*a, **k):
            return None
        m = quiver.memo(name=name, version=version)(body)
        assert m.digest(*args, **kwargs) == digest
