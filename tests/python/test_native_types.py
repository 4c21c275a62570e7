"""Dataclasses, enums, named tuples, paths, dates and times, UUIDs, decimals,
fractions and complex numbers: native encodings with one digest in every
process (docs/FORMAT.md 3.3), checked against the project's own vectors."""
import dataclasses
import datetime
import decimal
import fractions
import json
import os
import pathlib
import subprocess
import sys
import uuid

import pytest
import xxhash

import quiver
import _native_values as nv

HERE = os.path.dirname(os.path.abspath(__file__))
D, F, tz = decimal.Decimal, fractions.Fraction, datetime.timezone

# The objects tests/vectors/values.tsv was written from, by name. Each
# encoding there was also checked by hand against FORMAT.md 3.3.
VECTOR_OBJECTS = {
    "uuid 12345678-1234-5678-1234-567812345678": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "decimal 1.10": D("1.10"),
    "decimal -5E+3": D("-5E+3"),
    "decimal 0.000": D("0.000"),
    "decimal 2^64 - 1 times 10^-2": D("184467440737095516.15"),
    "decimal -(2^64 + 1) times 10^-1": D("-1844674407370955161.7"),
    "decimal -0": D("-0"),
    "decimal NaN": D("NaN"),
    "decimal -Infinity": D("-Infinity"),
    "fraction -1/3": F(-1, 3),
    "fraction 5": F(5),
    "fraction 2^64/3": F(2**64, 3),
    "complex 1+2j": 1 + 2j,
    "complex -0-nanj": complex(-0.0, float("nan")),
    "date 2024-02-29": datetime.date(2024, 2, 29),
    "date 0001-01-01": datetime.date(1, 1, 1),
    "datetime 2024-02-29T13:14:15+00:00": datetime.datetime(2024, 2, 29, 13, 14, 15, tzinfo=tz.utc),
    "datetime 2024-02-29T13:14:15.000001-05:30":
        datetime.datetime(2024, 2, 29, 13, 14, 15, 1, tzinfo=tz(-datetime.timedelta(hours=5, minutes=30))),
    "naive datetime 2024-02-29T13:14:15": datetime.datetime(2024, 2, 29, 13, 14, 15),
    "naive datetime 2024-02-29T13:14:15.123456": datetime.datetime(2024, 2, 29, 13, 14, 15, 123456),
    "time 13:14:15": datetime.time(13, 14, 15),
    "time 00:00:00.000500": datetime.time(0, 0, 0, 500),
    "timedelta -1 day +5 s": datetime.timedelta(days=-1, seconds=5),
    "timedelta 1 us": datetime.timedelta(microseconds=1),
    "enum _native_values:Color.GREEN": nv.Color.GREEN,
    "int flag _native_values:Perm R|W": nv.Perm.R | nv.Perm.W,
    "dataclass _native_values:Point(1.5)": nv.Point(1.5),
    "dataclass _native_values:Tagged with a frozenset": nv.Tagged("t", frozenset({"b", "a"})),
    "named tuple _native_values:Pair(1, 'x')": nv.Pair(1, "x"),
    "path pathlib:PurePosixPath data/in.csv": pathlib.PurePosixPath("data/in.csv"),
    "path pathlib:PosixPath /tmp": pathlib.PosixPath("/tmp"),
    "list of a date and a naive datetime": [datetime.date(2024, 2, 29), datetime.datetime(2024, 2, 29)],
}

# A few encodings written out from the rules of FORMAT.md 3.3, not by the encoder.
BY_HAND = {
    "uuid 12345678-1234-5678-1234-567812345678": "d825" "50" "12345678123456781234567812345678",
    "decimal 1.10": "c4" "82" "21" "186e",                      # [-2, 110]
    "decimal -(2^64 + 1) times 10^-1": "c4" "82" "20" "c3" "49" "010000000000000000",
    "fraction -1/3": "d81e" "82" "20" "03",
    "complex -0-nanj": "da5156000c" "82" "f98000" "f97e00",
    "date 2024-02-29": "d903ec" "6a" + b"2024-02-29".hex(),
    "datetime 2024-02-29T13:14:15+00:00": "c0" "7819" + b"2024-02-29T13:14:15+00:00".hex(),
    "naive datetime 2024-02-29T13:14:15": "da51560009" "73" + b"2024-02-29T13:14:15".hex(),
    "timedelta -1 day +5 s": "da5156000b" "83" "20" "05" "00",
    "dataclass _native_values:Point(1.5)":
        "da51560005" "82" "74" + b"_native_values:Point".hex() + "a2" "6178" "f93e00" "6179" "f90000",
    "enum _native_values:Color.GREEN": "da51560006" "82" "74" + b"_native_values:Color".hex() + "65" + b"green".hex(),
}


def _vectors():
    with open(os.path.join(HERE, "..", "vectors", "values.tsv"), encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


VECTORS = _vectors()


def test_every_vector_has_its_object():
    assert {name for _, _, name in VECTORS} == set(VECTOR_OBJECTS)


@pytest.mark.parametrize("hexdata,digest,name", VECTORS, ids=[v[2] for v in VECTORS])
def test_vectors(hexdata, digest, name):
    obj = VECTOR_OBJECTS[name]
    assert quiver.encode(obj).hex() == hexdata
    assert quiver.digest(obj) == digest == xxhash.xxh3_128_hexdigest(bytes.fromhex(hexdata))
    if name in BY_HAND:
        assert BY_HAND[name] == hexdata
    back = quiver.decode(bytes.fromhex(hexdata))
    assert type(back) is type(obj)
    assert back == obj or obj != obj  # NaN inside
    assert quiver.encode(back).hex() == hexdata


def test_naive_and_aware_datetimes_never_collide():
    naive = datetime.datetime(2024, 1, 1, 12)
    utc = naive.replace(tzinfo=tz.utc)
    plus1 = datetime.datetime(2024, 1, 1, 13, tzinfo=tz(datetime.timedelta(hours=1)))
    assert utc == plus1  # one instant; kept apart all the same, as their local times differ
    assert len({quiver.digest(x) for x in (naive, utc, plus1, naive.date(), naive.time())}) == 5


def test_zones_and_folds_are_pickled_not_flattened():
    import zoneinfo
    paris = datetime.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    fixed = paris.replace(tzinfo=tz(paris.utcoffset()))
    assert paris == fixed
    assert quiver.encode(paris)[:5].hex() == "da51560002"
    assert quiver.digest(paris) != quiver.digest(fixed)
    assert quiver.decode(quiver.encode(paris)).tzinfo == zoneinfo.ZoneInfo("Europe/Paris")
    folded = datetime.datetime(2024, 10, 27, 2, 30, fold=1)
    assert quiver.encode(folded)[:5].hex() == "da51560002" and quiver.decode(quiver.encode(folded)).fold == 1
    named = datetime.datetime(2024, 1, 1, tzinfo=tz(datetime.timedelta(hours=1), "CET"))
    assert quiver.decode(quiver.encode(named)).tzname() == "CET"


def test_what_does_not_rebuild_exactly_stays_a_tag():
    cases = {
        "c074" + b"2024-02-29T13:14:15Z".hex(): 0,                  # RFC 3339 says Z; Python writes +00:00
        "d81e820204": 30,                                          # 2/4 is not in lowest terms
        "d825" "43" "010203": 37,                                  # not 16 bytes
        "da51560005" "82" "70" + b"no_such_module:X".hex() + "a0": 0x51560005,
        "da51560006" "82" "74" + b"_native_values:Color".hex() + "07": 0x51560006,  # no member 7
        "da51560005" "82" "74" + b"_native_values:Point".hex() + "a1" "6178" "01": 0x51560005,  # a field missing
    }
    for hexdata, tag in cases.items():
        back = quiver.decode(bytes.fromhex(hexdata))
        assert isinstance(back, quiver.Tag) and back.tag == tag, hexdata
        assert quiver.encode(back).hex() == hexdata


def test_an_untrusted_cache_does_not_import_modules_to_decode(tmpdir_path):
    enc = "da51560007" "82" "6d" + b"_never_here:P".hex() + "80"
    mod = os.path.join(tmpdir_path, "_never_here.py")
    with open(mod, "w") as f:
        f.write("import collections\nP = collections.namedtuple('P', '')\n")
    sys.path.insert(0, tmpdir_path)
    try:
        path = os.path.join(tmpdir_path, "shared")
        with quiver.Cache.open(path) as c, quiver.cache(c):
            quiver.memo(name="t.odd")(lambda: quiver.Tag(0x51560007, ["_never_here:P", []]))()
        os.chmod(path, 0o777)
        try:
            with quiver.Cache.open(path) as c, quiver.cache(c):
                got = quiver.memo(name="t.odd")(lambda: None)()
            assert isinstance(got, quiver.Tag) and "_never_here" not in sys.modules
            assert quiver.encode(got).hex() == enc
        finally:
            os.chmod(path, 0o700)
        with quiver.Cache.open(path) as c, quiver.cache(c):
            got = quiver.memo(name="t.odd")(lambda: None)()
        assert type(got).__name__ == "P" and "_never_here" in sys.modules
    finally:
        sys.path.remove(tmpdir_path)
        sys.modules.pop("_never_here", None)


_DIGESTS = ("import json, quiver, _native_values as nv; "
            "print(json.dumps({k: [quiver.digest(v), quiver.encode(v)[:5].hex()] for k, v in nv.values().items()}))")


def test_one_digest_under_every_hash_seed():
    runs = []
    for seed in ("0", "1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", _DIGESTS], env=env, capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout))
    for name in runs[0]:
        assert len({r[name][0] for r in runs}) == 1, f"{name}: {[r[name][0] for r in runs]}"
    # the last is pickled (a plain class), so the pickle fallback is what was checked
    assert runs[0]["pickled object with a set and a dict"][1] == "da51560002"
    assert runs[0]["frozen dataclass with a frozenset"][1] == "da51560005"


def test_pickled_values_still_load_as_they_were():
    bag = nv.Bag(nv.WORDS)
    back = quiver.decode(quiver.encode(bag))
    assert back == bag
    # dicts inside a pickle come back in a canonical order, as maps do
    assert list(back.index) == sorted(bag.index)


def test_dataclass_fields_and_memo_hits_across_types(tmpdir_path):
    @dataclasses.dataclass
    class Local:
        a: int
    with quiver.Cache.open(os.path.join(tmpdir_path, "c")) as c, quiver.cache(c):
        runs = []
        f = quiver.memo(name="t.area")(lambda p: runs.append(p) or p.x * 2)
        assert f(nv.Point(2.0)) == 4.0 and f(nv.Point(2.0)) == 4.0 and f(nv.Point(2.0, 1.0)) == 4.0
        assert len(runs) == 2
        rec = next(iter(c.query(name="t.area")))
        assert type(rec.args[0]) is nv.Point
    # a class defined in a function cannot be found again: its value comes back as the tag
    back = quiver.decode(quiver.encode(Local(1)))
    assert isinstance(back, quiver.Tag) and back.value[1] == {"a": 1}
