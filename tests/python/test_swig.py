"""The one-to-one C API that SWIG generates, through python.swg's typemaps."""
import os

import pytest

import quiver
from quiver import _quiver as q


def test_status_codes_become_exceptions(tmpdir_path):
    c = q.qv_cache_open(os.path.join(tmpdir_path, "c"), None)
    with pytest.raises(KeyError) as e:
        q.qv_cache_get(c, "00" * 16)
    assert isinstance(e.value, quiver.NotFoundError) and e.value.status == q.QV_NOTFOUND
    with pytest.raises(quiver.DecodeError, match="non-shortest") as e:
        q.qv_value_decode(bytes.fromhex("1817"))
    assert e.value.status == q.QV_EDECODE and q.qv_status_name(e.value.status) == "QV_EDECODE"
    c.close()


def test_handles_digests_buffers_and_values(tmpdir_path):
    opts = q.qv_cache_options()
    opts.version = q.QV_CACHE_OPTIONS_VERSION
    opts.durability = q.QV_DURABILITY_FAST
    c = q.qv_cache_open(os.path.join(tmpdir_path, "d"), opts)
    assert isinstance(c, quiver.Cache) and os.path.isabs(c.path)
    assert q.qv_cache_contains(c, bytes(16)) is False
    assert q.qv_cache_stat(c, q.QV_STAT_ENTRIES) == 0 and q.qv_stat_name(q.QV_STAT_HITS) == "hits"
    assert q.qv_digest_bytes(memoryview(b"\x01")) == "51025a4491835505e12ef9d2eb86ceeb"
    assert q.qv_digest_parse("AB" * 16) == "ab" * 16
    assert q.qv_value_decode(bytearray.fromhex("820102")) == [1, 2]
    assert q.qv_value_encode((1, 2)) == bytes.fromhex("da51560001820102")
    assert q.qv_call_digest("shared.add", None, [1, 2], {}) == "d2aec93101298c8daf75589ce9ce1f83"
    assert q.qv_value_compare(1, 2) < 0
    c.close()
    with pytest.raises(quiver.ClosedError):
        q.qv_cache_path(c)


def test_bound_call_entries_share_memo_entries(tmpdir_path):
    c = quiver.Cache.open(os.path.join(tmpdir_path, "e"))

    @quiver.memo(name="shared.add")
    def add(x, y=2):
        return x + y
    # a call stored from its bound encoding is the memo's entry, and back
    assert add.digest(1) == quiver.call_digest("shared.add", None, [1, 2], {})
    q.cache_store_raw(c, q.call_encoding("shared.add", None, [1, 2], {}), quiver.encode(3), 0, 5, None)
    with quiver.cache(c):
        assert add._probe(1) == (True, 3)
        add(5)
    assert c.load(quiver.call_digest("shared.add", None, (5, 2), {})).result == 7
    c.close()
