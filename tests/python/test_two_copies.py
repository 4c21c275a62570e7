"""One copy of quiver per process, whatever mix of languages loads it.

The Python module links libquiver.so, so a process that also loads the C
library directly (ctypes here, a Rust or Go extension in real life) has one
registry of open LMDB environments: LMDB forbids two environments on one path
in one process, and closing one of two would drop the other's locks."""
import ctypes
import os
import subprocess

import pytest

import quiver
from quiver import _quiver

BUILD = os.environ.get("QUIVER_BUILD")


def _mapped_libquiver():
    with open("/proc/self/maps") as f:
        return {line.split()[-1] for line in f if "libquiver.so" in line.rsplit("/", 1)[-1]}


@pytest.fixture
def libquiver():
    (path,) = _mapped_libquiver() or {None}
    assert path is not None, "importing quiver did not load libquiver.so: the extension carries its own copy"
    lib = ctypes.CDLL(path)
    lib.qv_cache_open.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_void_p]
    lib.qv_cache_close.argtypes = [ctypes.c_void_p]
    lib.qv_cache_contains.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.qv_cache_store.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                   ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
    lib.qv_cache_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p),
                                 ctypes.POINTER(ctypes.c_size_t)]
    lib.qv_free.argtypes = [ctypes.c_void_p]
    lib.qv_errmsg.restype = ctypes.c_char_p
    return lib


def _open(lib, path):
    h = ctypes.c_void_p()
    assert lib.qv_cache_open(ctypes.byref(h), path.encode(), None) == 0, lib.qv_errmsg()
    return h


def _get(lib, h, hexdigest):
    data, n = ctypes.c_void_p(), ctypes.c_size_t()
    st = lib.qv_cache_get(h, bytes.fromhex(hexdigest), ctypes.byref(data), ctypes.byref(n))
    if st == -1:
        return None
    assert st == 0, lib.qv_errmsg()
    try:
        return quiver.decode(ctypes.string_at(data, n.value))
    finally:
        lib.qv_free(data)


def test_one_library_mapped_after_import_and_ctypes(libquiver):
    assert len(_mapped_libquiver()) == 1
    # ctypes loaded the very file the extension depends on: still one mapping.
    assert libquiver.qv_version() and len(_mapped_libquiver()) == 1


def test_python_and_c_share_one_environment(libquiver, tmpdir_path):
    path = os.path.join(tmpdir_path, "shared")
    calls = []

    @quiver.memo(name="two_copies.square")
    def square(x):
        calls.append(x)
        return x * x

    py = quiver.Cache.open(path)
    c = _open(libquiver, path)
    try:
        # Python stores; C reads it.
        with quiver.cache(py):
            assert square(3) == 9
        assert libquiver.qv_cache_contains(c, bytes.fromhex(square.digest(3))) == 0
        assert _get(libquiver, c, square.digest(3)) == 9
        # C stores; Python hits without running the body.
        call = _quiver.call_encoding("two_copies.square", None, [4], {})
        result = quiver.encode(16)
        assert libquiver.qv_cache_store(c, None, call, len(call), result, len(result), None) == 0, \
            libquiver.qv_errmsg()
        with quiver.cache(py):
            assert square(4) == 16
        assert calls == [3]
        # Closing the C handle leaves the Python one working, reads and writes.
        libquiver.qv_cache_close(c)
        c = None
        with quiver.cache(py):
            assert square(4) == 16 and square(5) == 25
        assert calls == [3, 5]
        # And the other way round.
        c = _open(libquiver, path)
        py.close()
        assert _get(libquiver, c, square.digest(5)) == 25
        call = _quiver.call_encoding("two_copies.square", None, [6], {})
        result = quiver.encode(36)
        assert libquiver.qv_cache_store(c, None, call, len(call), result, len(result), None) == 0
        assert _get(libquiver, c, square.digest(6)) == 36
    finally:
        if c is not None:
            libquiver.qv_cache_close(c)
        py.close()


@pytest.mark.skipif(not BUILD, reason="needs the build tree (QUIVER_BUILD) to find the Lua module")
def test_lua_module_links_the_shared_library():
    module = os.path.join(BUILD, "lua", "quiver_core.so")
    if not os.path.exists(module):
        pytest.skip("the Lua module is not built (QUIVER_LUA=OFF)")
    out = subprocess.run(["readelf", "-d", module], capture_output=True, text=True, check=True).stdout
    needed = [line.split("[")[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]
    assert any(n.startswith("libquiver.so") for n in needed), needed


def test_a_c_function_pointer_memoizes_into_the_python_context(libquiver, tmpdir_path):
    # DESIGN section 12: one notion of the active cache. libc's labs, made a
    # memoized function pointer through the C ABI and called through ctypes,
    # lands in the cache Python has active (contextvars), with its metadata.
    libquiver.qv_fn_new_c.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.c_void_p, ctypes.c_char_p]
    libquiver.qv_fn_pointer.argtypes = [ctypes.c_void_p]
    libquiver.qv_fn_pointer.restype = ctypes.c_void_p
    libquiver.qv_fn_free.argtypes = [ctypes.c_void_p]
    labs = ctypes.cast(ctypes.CDLL(None).labs, ctypes.c_void_p)
    fn = ctypes.c_void_p()
    assert libquiver.qv_fn_new_c(ctypes.byref(fn), b"two_copies.labs", None, labs, b"i64(i64)") == 0
    memo_labs = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(libquiver.qv_fn_pointer(fn))
    try:
        mine = quiver.Cache.open(os.path.join(tmpdir_path, "mine"))
        other = quiver.Cache.memory()
        key = quiver.call_digest("two_copies.labs", None, [-5], {})
        with quiver.cache(mine), quiver.meta(who="ctypes"):
            assert memo_labs(-5) == 5
        assert mine.contains(key) and not other.contains(key)
        assert mine.load(key).metadata == {"who": "ctypes"}
        with quiver.cache(other):
            assert memo_labs(-5) == 5
        assert other.contains(key)
        # each call asks again: a new key lands in the cache active now
        with quiver.cache(mine):
            assert memo_labs(-7) == 7
        assert mine.contains(quiver.call_digest("two_copies.labs", None, [-7], {}))
        mine.close()
        other.close()
    finally:
        libquiver.qv_fn_free(fn)
