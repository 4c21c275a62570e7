"""Differential tests of the cross-language contract (DESIGN section 3).

hypothesis builds Python values; each is described (a prefix form that
server_c.c documents) to a C server and a Lua server, which build their own
native value from the description and encode it themselves. For every value:
the canonical encoding, the value digest and a call digest must be the same
bytes in Python, C and Lua; each language decodes the others' bytes back to
a value equal to its own; and what it decoded encodes to the same bytes.

The values are what all three languages can hold: Python dict keys and set
elements are hashable (no lists, maps or tags), and Lua table keys cannot be
NaN or floats with an integer value (Lua turns t[1.0] into t[1]). Typed
arrays are little-endian or one byte: Python decodes any array to native
byte order.

Environment: QV_DIFF_EXAMPLES (values, default 10000), QV_DIFF_SEED (default
15), QV_DIFF_BATCH (values per hypothesis example, default 25).
"""
import math
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st

import quiver

EXAMPLES = int(os.environ.get("QV_DIFF_EXAMPLES", "10000"))
SEED = int(os.environ.get("QV_DIFF_SEED", "15"))
BATCH = int(os.environ.get("QV_DIFF_BATCH", "25"))

# ------------------------------------------------------------------ values


def _bits(h):
    return struct.unpack(">d", bytes.fromhex(h))[0]


INT_EDGES = [0, 1, -1, 23, 24, -24, -25, 255, 256, -256, -257, 65535, 65536, 2**32 - 1, 2**32, -2**32, -2**32 - 1,
             2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64 - 1, 2**64, -2**64, -2**64 - 1, 2**128, -2**128 - 1]
FLOAT_EDGES = [0.0, -0.0, 1.0, -1.5, 0.1, 5e-324, -5e-324, 2.2250738585072014e-308, 2.225073858507201e-308,
               65504.0, 65520.0, 6.103515625e-05, 5.960464477539063e-08, 1.401298464324817e-45,
               3.4028234663852886e+38, 3.402823669209385e+38, 1.7976931348623157e+308, 2.0**63, -2.0**63, 2.0**64,
               math.inf, -math.inf, math.nan,
               _bits("7ff8000000000001"), _bits("fff8000000000000"), _bits("7ff0000000000001")]

ints = st.one_of(st.sampled_from(INT_EDGES), st.integers(-2**64 - 2, 2**64 + 2), st.integers(-2**200, 2**200))
# Floats from bit patterns (st.floats is several times slower): every double,
# and those exact in binary32 and binary16, which encode shorter; NaNs of any
# payload and sign, subnormals and infinities come with them.
floats = st.one_of(
    st.sampled_from(FLOAT_EDGES),
    st.integers(0, 2**64 - 1).map(lambda b: struct.unpack(">d", b.to_bytes(8, "big"))[0]),
    st.integers(0, 2**32 - 1).map(lambda b: struct.unpack(">f", b.to_bytes(4, "big"))[0]),
    st.integers(0, 2**16 - 1).map(lambda b: struct.unpack(">e", b.to_bytes(2, "big"))[0]))
texts = st.one_of(st.text(max_size=10),
                  st.text(st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF), max_size=4))
binaries = st.binary(max_size=16)

# numpy dtype -> RFC 8746 typed-array tag (little-endian or one byte)
DTYPES = {"u1": 64, "i1": 72, "<u2": 69, "<u4": 70, "<u8": 71, "<i2": 77, "<i4": 78, "<i8": 79,
          "<f2": 84, "<f4": 85, "<f8": 86}


def _ndarray(dtype, shape, data):
    return np.frombuffer(bytearray(data), dtype=dtype).reshape(shape)


@st.composite
def ndarrays(draw):
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    shape = draw(st.lists(st.integers(0, 3), max_size=2))
    n = math.prod(shape) * np.dtype(dtype).itemsize
    return _ndarray(dtype, shape, draw(st.binary(min_size=n, max_size=n)))


def _lua_key(f):
    """A float Lua can keep as a table key: NaN cannot be one, and a float
    with an integer value becomes an integer key (t[1.0] is t[1]). Others
    are moved off the integers rather than filtered (filtering is slow)."""
    if math.isnan(f):
        return math.inf
    if f.is_integer() and -2**63 <= f < 2**63:
        return f + 0.5 if abs(f) < 2**52 else math.copysign(2.0**64, f)
    return f


# Dict keys and set elements: hashable in Python, and a key in Lua.
scalar_keys = st.one_of(st.none(), st.booleans(), ints, floats.map(_lua_key), texts, binaries)
keys = st.one_of(
    scalar_keys,
    st.lists(st.one_of(scalar_keys, st.frozensets(scalar_keys, max_size=2)), max_size=3).map(tuple),
    st.frozensets(st.one_of(scalar_keys, st.lists(scalar_keys, max_size=2).map(tuple)), max_size=3))

# Tags with no meaning to any binding (see DESIGN section 3 and _codec.py for
# the ones that have: 0-4, 30, 37, 40, 258, 1004, 0x515600xx), the RFC 8746
# typed-array tags (64..87) on their own included, up to 2^64 - 1.
tag_numbers = st.one_of(st.integers(5, 29), st.integers(41, 257), st.sampled_from([31, 38, 39, 259, 1003, 1005]),
                        st.integers(1006, 0x5155FFFF), st.integers(0x51560100, 2**64 - 1),
                        st.sampled_from([2**63 - 1, 2**63, 2**64 - 1]))

values = st.recursive(
    st.one_of(st.none(), st.booleans(), ints, floats, texts, binaries, ndarrays()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(keys, inner, max_size=3),
        st.sets(keys, max_size=3),
        st.frozensets(keys, max_size=3),
        st.builds(quiver.Tag, tag_numbers, inner)),
    max_leaves=10)

# C takes names and versions as NUL-terminated strings.
names = st.text(st.characters(codec="utf-8", min_codepoint=1), min_size=1, max_size=6)
# Python's memo(version="code") derives the version from the function's code
# (documented): not a version the other languages can be given.
versions = st.one_of(st.none(), st.text(st.characters(codec="utf-8", min_codepoint=1), max_size=4).map(
    lambda s: s + "!" if s == "code" else s))

# ------------------------------------------------------------ descriptions


def describe(v, out):
    """Append the description of v (server_c.c's prefix form) to out."""
    t = type(v)
    if v is None:
        out.append("N")
    elif t is bool:
        out.append("T" if v else "F")
    elif t is int:
        out.append(f"i{v};")
    elif t is float:
        out.append("d" + struct.pack(">d", v).hex())
    elif t is str:
        out.append("s" + v.encode().hex() + ";")
    elif t is bytes:
        out.append("b" + v.hex() + ";")
    elif t in (list, tuple):
        out.append(f"{'l' if t is list else 'U'}{len(v)};")
        for x in v:
            describe(x, out)
    elif t in (set, frozenset):
        out.append(f"S{len(v)};")
        for x in v:
            describe(x, out)
    elif t is dict:
        out.append(f"m{len(v)};")
        for k, x in v.items():
            describe(k, out)
            describe(x, out)
    elif t is quiver.Tag:
        out.append(f"g{v.tag};")
        describe(v.value, out)
    elif t is np.ndarray:
        out.append(f"A{DTYPES[v.dtype.str if v.dtype.itemsize > 1 else v.dtype.str[1:]]};{v.ndim};")
        out.extend(f"{d};" for d in v.shape)
        out.append(v.tobytes().hex() + ";")
    else:
        raise TypeError(f"no description for {t}")
    return out


def same(a, b):
    """Equality by content: types exact (1, 1.0 and True differ), -0.0 is not
    0.0, any NaN equals any NaN (the encoding keeps no payload)."""
    if isinstance(a, (set, frozenset)):
        return isinstance(b, (set, frozenset)) and len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or struct.pack(">d", a) == struct.pack(">d", b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return len(a) == len(b) and all(any(same(k, j) and same(x, b[j]) for j in b) for k, x in a.items())
    if type(a) is quiver.Tag:
        return a.tag == b.tag and same(a.value, b.value)
    if type(a) is np.ndarray:
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return a == b


# ----------------------------------------------------------------- servers


class Server:
    """A long-lived encode server: a batch of lines in, one answer each out."""

    def __init__(self, lang, argv):
        self.lang = lang
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     encoding="ascii", bufsize=1 << 20)

    def ask(self, lines):
        self.proc.stdin.write("\n".join(lines) + "\n\n")
        self.proc.stdin.flush()
        answers = [self.proc.stdout.readline() for _ in lines]
        if any(not a.endswith("\n") for a in answers):
            raise RuntimeError(f"the {self.lang} server stopped (exit {self.proc.poll()})")
        return [a.rstrip("\n") for a in answers]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def servers():
    c = os.environ.get("QV_DIFF_SERVER_C")
    lua = os.environ.get("QV_LUA")
    if not c or not lua:
        pytest.skip("QV_DIFF_SERVER_C and QV_LUA name the C server and the Lua interpreter (ctest sets them)")
    here = os.path.dirname(os.path.abspath(__file__))
    started = [Server("c", [c]), Server("lua", [lua, os.path.join(here, "server.lua")])]
    yield started
    for s in started:
        s.close()


_memos = {}


def _memo(name, version):
    """A memo of name/version: its digest(v) is the key of the call f(v), the
    path a program's calls take (binding the signature, keying arguments)."""
    m = _memos.get((name, version))
    if m is None:
        m = _memos[(name, version)] = quiver.memo(lambda x: x, name=name, version=version)
    return m


class Tally:
    values = 0
    started = time.monotonic()


def check_batch(servers, batch):
    lines, mine = [], []
    for name, version, v in batch:
        enc = quiver.encode(v)
        try:
            cd = quiver.call_digest(name, version, [v], {"kw": v})
        except quiver.EncodeError:
            cd = "refused"  # the call nests deeper than the limit
        try:
            md = _memo(name, version).digest(v)
        except Exception:  # a message naming the argument, whatever its class: the others say "refused"
            md = "refused"
        mine.append((enc.hex(), quiver.digest(v), cd, md))
        # Each hex field starts with "x", so that an empty one is still a field.
        lines.append(" ".join(("x" + name.encode().hex(), "-" if version is None else "x" + version.encode().hex(),
                               "".join(describe(v, [])), "x" + enc.hex())))
    answers = {s.lang: s.ask(lines) for s in servers}
    for i, (name, version, v) in enumerate(batch):
        enc, vd, cd, md = mine[i]

        def where():  # only on a failure: repr of every value costs
            return f"value {v!r} (name {name!r}, version {version!r})\n  description {lines[i].split()[2]}\n" \
                f"  python {enc} {vd} {cd} {md}\n" + "".join(f"  {lang} {a[i]}\n" for lang, a in answers.items())
        for lang, a in answers.items():
            got = a[i].split(" ")
            assert got[0] != "ERR", f"{lang} refused a value Python encodes: {where()}"
            assert got[:4] == [enc, vd, cd, md], f"{lang} encodes or digests differently: {where()}"
            assert got[4] == "eq", f"{lang} decodes Python's bytes to another value ({got[4]}): {where()}"
            assert got[5] == enc, f"{lang} re-encodes what it decoded differently: {where()}"
        # Python decodes the others' bytes (the same as its own, or the
        # assertions above failed).
        for theirs in {a[i].split(" ")[0] for a in answers.values()}:
            back = quiver.decode(bytes.fromhex(theirs))
            assert same(v, back), f"Python decodes to another value {back!r}: {where()}"
            assert quiver.encode(back).hex() == enc, f"Python re-encodes what it decoded differently: {where()}"
    Tally.values += len(batch)


# One name and version per batch: drawing them per value doubles the time.
batches = st.builds(lambda name, version, vs: [(name, version, v) for v in vs],
                    names, versions, st.lists(values, min_size=BATCH, max_size=BATCH))


# Disagreements these tests found, kept as permanent examples:
REGRESSIONS = [
    # C encoded a set built with qv_value_new_tag(QV_TAG_SET, list) in the
    # list's order (a1d9010282f620f6, which the decoder then refuses); Python
    # and Lua sort the elements: a1d901028220f6f6. Fixed in capi/src/value.c.
    {frozenset({None, -1}): None},
    {3, "a", 1, b"", -1},
    # Lua decoded a tag at or beyond 2^63 to a negative tag number, then
    # refused to encode it. Fixed in bindings/lua/codec.c.
    quiver.Tag(2**64 - 1, 0),
    quiver.Tag(2**63, [quiver.Tag(2**63 - 1, None)]),
]


def _edges():
    """The boundary values and the regressions, every one in every run."""
    vals = INT_EDGES + FLOAT_EDGES + ["", "\U0001F600\U0010FFFF", "\0", b"", b"\xff", [], (), {}, set(),
                                      quiver.Tag(64, b"\x01"), _ndarray("<f2", [2], b"\x00\x7c\x00\xfc"),
                                      {(): 1, frozenset(): 2, b"a": 3, "a": 4, None: 5, False: 6}] + REGRESSIONS
    return [("differential.f", None if i % 2 else "1", v) for i, v in enumerate(vals)]


def _nested(depth):
    """Lists, maps, tags, sets and tuples nested `depth` levels deep around 1
    (a set or a tuple is two levels: a tag around a list)."""
    out = []
    for wrap, levels in ((lambda x: [x], 1), (lambda x: {"k": x}, 1), (lambda x: quiver.Tag(99, x), 1),
                         (lambda x: (x,), 2), (lambda x: frozenset([x]), 2)):
        v = 1 if depth % levels == 0 else quiver.Tag(99, 1)
        for _ in range(depth // levels):
            v = wrap(v)
        out.append(v)
    return out


def test_nesting_limit(servers):
    """Around QV_MAX_DEPTH every language encodes the same values and refuses
    the same ones, and refuses the same calls (two levels deeper)."""
    limit = 512
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20 * limit))  # for same() and repr
    fine = [v for d in (limit - 2, limit - 1, limit) for v in _nested(d)]
    check_batch(servers, [("differential.deep", "1", v) for v in fine])
    for v in _nested(limit + 1):
        with pytest.raises(quiver.EncodeError):
            quiver.encode(v)
        line = " ".join(("x61", "-", "".join(describe(v, [])), "x"))
        for s in servers:
            assert s.ask([line])[0].startswith("ERR "), f"{s.lang} encodes a value nested {limit + 1} deep"


@pytest.mark.xfail(strict=True, reason="Python decodes a typed array to native byte order and encodes every "
                   "array little-endian, so a big-endian one that C or Lua wrote re-encodes differently in Python; "
                   "changing it changes the digests of big-endian numpy arguments (docs/DECISIONS.md)")
def test_big_endian_typed_array_round_trips_in_python(servers):
    be = bytes.fromhex("d828828102d8414400010002")  # tag 40 [[2], tag 65 (uint16 big-endian) 0001 0002]
    line = " ".join(("x61", "-", "A65;1;2;00010002;", "x" + be.hex()))
    for s in servers:
        assert s.ask([line])[0].split(" ")[::5] == [be.hex(), be.hex()], s.lang
    assert quiver.encode(quiver.decode(be)) == be  # Python gives d828828102d8454401000200


# The seed is printed so that a failure reproduces: QV_DIFF_SEED=<seed>.
print(f"differential: seed {SEED}, {EXAMPLES} values in batches of {BATCH}", file=sys.stderr)


@seed(SEED)
@settings(max_examples=max(1, EXAMPLES // BATCH), deadline=None, database=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                 HealthCheck.filter_too_much])
@example(batch=_edges())
@given(batch=batches)
def test_encodings_digests_and_decodings_agree(servers, batch):
    check_batch(servers, batch)


def test_report(servers):
    """Runs after the property: how many values all three languages agreed on."""
    took = time.monotonic() - Tally.started
    print(f"differential: {Tally.values} values agreed in C, Python and Lua in {took:.1f} s (seed {SEED})")
    assert Tally.values >= EXAMPLES
