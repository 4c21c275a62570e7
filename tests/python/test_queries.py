"""Queries, filtered views, transfer, clear and len (issue 12): what a fleche
user relies on, in quiver's spelling (README, "Coming from fleche")."""
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import pytest

import quiver
from quiver import ANY, Cache, memo

from _redis import redis_server  # noqa: F401 (a fixture)


@memo(name="q.f")
def f(x, y=2, *, z=3):
    return [x, y, z]


@memo(name="q.g")
def g(a, b=0):
    return a * 10 + b


@memo(name="q.h", ignore=["verbose"])
def h(n, verbose=False):
    return n


@pytest.fixture
def mem():
    c = Cache.memory()
    with quiver.cache(c):
        yield c


def _fill():
    f(1)
    f(1, y=5, z=None)
    f(2)
    with quiver.meta(stage="a"):
        g(1)
    with quiver.meta(stage="b"):
        g(2, 7)


# -- the query object ---------------------------------------------------------

def test_query_object(mem):
    _fill()
    q = f.query()
    assert isinstance(q, quiver.Query)
    assert q.count() == 3 and len(list(q)) == 3  # iterable, and again: read anew at every pass
    assert f.query(1).count() == 2 and f.query(x=1).count() == 2
    assert f.query(2).only().result == [2, 2, 3]
    assert sorted(f.query(x=1).results()) == sorted([[1, 2, 3], [1, 5, None]])
    assert f.query(x=1).sorted("y").first().arguments["y"] == 2
    assert f.query().sorted(lambda r: r.arguments["y"], reverse=True).first().arguments["y"] == 5
    assert f.query(x=99).first() is None
    groups = f.query().groupby("x")
    assert set(groups) == {1, 2} and groups[1].count() == 2 and groups[2].count() == 1
    assert mem.query().count() == 5 and mem.query(name="q.g").count() == 2
    f(7)
    assert q.count() == 4 and q.take(2).count() == 2  # q reads the cache anew
    with pytest.raises(TypeError, match="at most 2 positional"):
        f.query(1, 2, 3)
    # the old spelling: Cache.query(name, metadata, **arguments), iterated
    assert [r.result for r in mem.query("q.g", {"stage": "b"})] == [27]


def test_only_says_why(mem):
    _fill()
    with pytest.raises(ValueError, match="matched 3 stored calls.*exactly one"):
        f.query().only()
    with pytest.raises(quiver.NotFoundError, match="matched no stored call"):
        f.query(x=42).only()
    with pytest.raises(KeyError):  # NotFoundError is a KeyError, as load's
        f.query(x=42).latest()


def test_latest_is_by_start_time(mem):
    for x in (3, 1, 2):
        f(x)
    assert f.query().latest().arguments["x"] == 2
    assert f.query().oldest().arguments["x"] == 3
    assert [r.arguments["x"] for r in f.query().sorted()] == [3, 1, 2]


def test_filters_on_result_metadata_and_predicates(mem):
    _fill()
    assert g.query(result=27).only().arguments == {"a": 2, "b": 7}
    assert g.query(metadata={"stage": "a"}).only().result == 10
    assert g.query(metadata={"stage": ANY}).count() == 2
    assert g.query(metadata={"other": ANY}).count() == 0  # ANY needs the key
    assert g.query(metadata={"stage": lambda s: s > "a"}).only().result == 27
    assert g.query(b=lambda b: b > 0).only().result == 27
    assert g.query(result=lambda r: r < 20).only().result == 10
    assert mem.query(where=lambda r: r.name == "q.g" and r.arguments["a"] == 2).only().result == 27
    assert mem.query(name=lambda n: n.startswith("q.")).count() == 5
    assert f.query(x=ANY, y=ANY, z=ANY).count() == 3
    # compared as the digest sees them: 1.0 and True are not 1
    assert f.query(x=1.0).count() == 0 and f.query(x=True).count() == 0


def test_none_is_a_value_not_a_wildcard(mem):
    _fill()
    assert f.query(z=None).only().arguments == {"x": 1, "y": 5, "z": None}
    assert f.query(z=ANY).count() == 3

    @memo(name="q.maybe")
    def maybe(x):
        return None if x else 0
    maybe(1)
    maybe(0)
    assert maybe.query(result=None).only().arguments == {"x": 1}


def test_arguments_named_like_filters(mem):
    @memo(name="q.clash")
    def clash(name, result=0):
        return name
    clash("a", 1)
    clash("b", 2)
    assert mem.query("q.clash", arguments={"name": "b"}).only().result == "b"
    assert mem.query("q.clash", arguments={"result": 1}).only().result == "a"


def test_ignored_arguments_cannot_be_filtered(mem):
    h(1, verbose=True)
    assert h.query(1).only().arguments == {"n": 1}
    with pytest.raises(TypeError, match="ignores verbose"):
        h.query(verbose=True)


def test_table(mem):
    _fill()
    df = g.query().table()
    assert list(df.columns[:5]) == ["name", "version", "start", "duration", "lang"]
    assert sorted(df["a"]) == [1, 2] and sorted(df["result"]) == [10, 27]
    assert sorted(df["stage"]) == ["a", "b"]
    assert df.index.name == "digest" and set(df.index) == {g.digest(1), g.digest(2, 7)}
    assert list(g.query(a=ANY).table(arguments=False, results=False).columns) == \
        ["name", "version", "start", "duration", "lang", "stage"]
    assert len(mem.table()) == 5  # Cache.table, as before
    assert g.query(a=99).table().empty


# -- parameter names kept in the record ---------------------------------------

def test_records_name_their_positional_arguments(tmpdir_path):
    """A process that never imported the memo filters its positional arguments
    by name: the record keeps them (FORMAT.md 6.6), the digest is unchanged."""
    path = os.path.join(tmpdir_path, "c")
    with quiver.cache(Cache.open(path)) as c:
        g(4, 2)
        d = g.digest(4, 2)
        assert d == quiver.call_digest("q.g", None, [4, 2], {})  # the digest as before
        rec = c.load(d)
        assert rec.params == ("a", "b") and rec.metadata == {}  # the reserved key is not user metadata
    child = textwrap.dedent(f"""
        import quiver
        c = quiver.Cache.open({path!r})
        r = c.query("q.g", b=2).only()
        print(r.arguments["a"], r.result, sorted(r.metadata))
    """)
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["4", "42", "[]"]


def test_query_values_match_as_stored(mem):
    """A tuple argument is matched by a tuple (its encoding), a list by a list."""
    @memo(name="q.seq")
    def seq(s):
        return len(s)
    seq((1, 2))
    seq([1, 2])
    assert seq.query((1, 2)).only().arguments["s"] == (1, 2)
    assert seq.query([1, 2]).only().result == 2
    assert seq.query().count() == 2


# -- caches: len, clear, evict ------------------------------------------------

def test_len_and_clear(mem, tmpdir_path):
    assert len(mem) == 0 and bool(mem)  # an empty cache is still true
    _fill()
    assert len(mem) == 5
    assert mem.clear() == 5 and len(mem) == 0 and f.query().count() == 0
    lm = Cache.open(os.path.join(tmpdir_path, "lm"))
    with quiver.cache(lm):
        _fill()
        assert len(lm) == 5
        s = Cache.stack(mem, lm)
        with quiver.cache(s):
            f(1)  # a hit from lm, copied into mem
        assert len(mem) == 1 and len(s) == 5
        assert s.clear() == 6 and len(s) == 0 and lm.stats()["values"] == 0


def test_memo_evict_and_clear(mem):
    _fill()
    assert f.evict(1) is True and f.evict(1) is False
    assert f.query().count() == 2 and not f.contains(1) and f.contains(2)
    assert f.clear() == 2 and f.query().count() == 0
    assert g.query().count() == 2  # other functions keep theirs
    assert g.query(a=1).evict() == 1 and g.query().count() == 1


# -- filtered views -----------------------------------------------------------

def test_filtered_view_reads_only_what_passes(mem):
    _fill()
    view = mem.filter(lambda r: r.arguments.get("x") == 1)
    assert isinstance(view, quiver.FilteredCache) and view.readonly
    assert len(view) == 2 and view.query().count() == 2
    assert view.contains(f.digest(1)) and not view.contains(f.digest(2)) and not (f.digest(2) in view)
    with pytest.raises(KeyError):
        view.load(f.digest(2))
    calls = []

    @memo(name="q.counted")
    def counted(x):
        calls.append(x)
        return x
    counted(1)
    with quiver.cache(mem.filter(lambda r: r.name == "q.f")):
        assert f(1) == [1, 2, 3] and f.load(1) == [1, 2, 3]  # a hit
        with pytest.warns(quiver.QuiverWarning, match="filtered view.*not stored"):
            assert counted(1) == 1  # stored, but filtered out: runs, unstored
        assert counted(1) == 1 and calls == [1, 1, 1]
        assert counted.query().count() == 0
    assert counted.query().count() == 1 and len(mem) == 6  # nothing new in mem


def test_filtered_view_refuses_writes(mem):
    _fill()
    view = mem.filter(lambda r: True)
    for op in (lambda: view.evict(f.digest(1)), view.clear, lambda: mem.transfer(view),
               lambda: view.transfer(Cache.memory(), pop=True)):
        with pytest.raises(quiver.ReadOnlyError):
            op()
    with quiver.cache(view), pytest.raises(quiver.ReadOnlyError):
        f.evict(1)
    assert len(mem) == 5


def test_filtered_view_in_a_stack_and_pickled(mem, tmpdir_path):
    lm = Cache.open(os.path.join(tmpdir_path, "lm"))
    with quiver.cache(lm):
        _fill()
    s = Cache.stack(mem, lm.filter(_is_g))
    with quiver.cache(s):
        assert g(1) == 10  # a hit through the view, copied into mem
        assert mem.contains(g.digest(1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f(2)  # filtered out of the view: runs, stored in mem
        assert mem.contains(f.digest(2))
    v = pickle.loads(pickle.dumps(lm.filter(_is_g)))
    assert isinstance(v, quiver.FilteredCache) and len(v) == 2


def _is_g(r):
    return r.name == "q.g"


# -- transfer -----------------------------------------------------------------

def test_transfer_memory_lmdb_redis(mem, tmpdir_path, redis_server):
    _fill()
    lm = Cache.open(os.path.join(tmpdir_path, "lm"))
    assert mem.transfer(lm) == 5 and len(lm) == 5 and len(mem) == 5
    rec, copy = mem.load(g.digest(2, 7)), lm.load(g.digest(2, 7))
    assert (copy.result, copy.metadata, copy.params, copy.start_ns, copy.duration_ns) == \
        (rec.result, rec.metadata, rec.params, rec.start_ns, rec.duration_ns)
    remote = Cache.open(redis_server.url)
    assert lm.transfer(remote, pop=True) == 5 and len(lm) == 0 and len(remote) == 5
    with quiver.cache(remote):
        assert g.query(b=7).only().metadata == {"stage": "b"}
        calls = []

        @memo(name="q.g")
        def g2(a, b=0):
            calls.append(a)
        assert g2(2, 7) == 27 and calls == []  # a hit in the remote tier
    assert remote.clear() == 5 and len(remote) == 0


def test_transfer_skips_or_overwrites(mem):
    _fill()
    other = Cache.memory()
    with quiver.cache(other):
        g.__wrapped__  # noqa: B018
        other_g = memo(name="q.g")(lambda a, b=0: -1)
        other_g(1)
    assert other.load(g.digest(1)).result == -1
    assert mem.transfer(other) == 4 and other.load(g.digest(1)).result == -1
    assert mem.transfer(other) == 0
    assert mem.transfer(other, overwrite=True) == 5 and other.load(g.digest(1)).result == 10
    # a query transfers what it matched
    third = Cache.memory()
    assert f.query(x=1).transfer(third) == 2 and len(third) == 2
    assert g.query().transfer(third, pop=True) == 2 and g.query().count() == 0 and len(third) == 4


class _Opaque:
    """Pickled as an argument (no native encoding)."""

    def __init__(self, v):
        self.v = v


def test_transfer_keeps_keys_a_record_does_not_show(mem, tmpdir_path):
    """A path keyed by its content and a pickled argument: the copy is a hit."""
    import pathlib
    p = pathlib.Path(tmpdir_path, "data.txt")
    p.write_text("hello")
    runs = []

    @memo(name="q.size")
    def size(path):
        runs.append(path)
        return len(path.read_bytes())

    @memo(name="q.opaque")
    def opaque(o):
        runs.append(o)
        return o.v
    assert size(p) == 5 and opaque(_Opaque(3)) == 3
    other = Cache.memory()
    assert mem.transfer(other) == 2
    with quiver.cache(other):
        assert size(p) == 5 and opaque(_Opaque(3)) == 3
        assert size.query(p).only().result == 5
    assert len(runs) == 2  # both hits in the copy
