"""fleche's executor idioms: wrap_executor patches submit in place, a
BoundWrapper keeps the metadata it was bound under, functions that another
process cannot import by name cross by value, and an executorlib pool nobody
shut down does not hold the interpreter at exit."""

import concurrent.futures
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

import quiver
from quiver import BoundWrapper, wrap_executor

import _workers

HERE = os.path.dirname(os.path.abspath(__file__))


class CountingPool(concurrent.futures.ThreadPoolExecutor):
    """A real thread pool that counts what reaches its own submit."""

    def __init__(self):
        super().__init__(max_workers=2)
        self.submitted = []

    def submit(self, fn, /, *args, **kwargs):
        self.submitted.append(fn)
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def lmdb(tmp_path):
    c = quiver.Cache.open(str(tmp_path / "cache"))
    yield c
    c.close()


@pytest.fixture
def worker_path(monkeypatch):
    # Workers started as new interpreters (spawn, loky, executorlib) find
    # _workers here.
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", HERE + (os.pathsep + path if path else ""))


def check_in_place(pool, lmdb, x, **submit_keywords):
    """wrap_executor(pool) without its return value: hits skip the pool,
    misses run there and are stored; wrapping again changes nothing."""
    assert wrap_executor(pool) is pool
    patched = pool.submit
    assert wrap_executor(pool) is pool and pool.submit is patched
    with quiver.cache(lmdb):
        assert pool.submit(_workers.scaled, x, factor=3, **submit_keywords).result(timeout=120) == 3 * x
        assert _workers.scaled.load(x, factor=3) == 3 * x
        hit = pool.submit(_workers.scaled, x, factor=3, **submit_keywords)
        assert isinstance(hit, concurrent.futures.Future) and hit.done() and hit.result() == 3 * x


def test_a_thread_pool_is_patched_in_place(lmdb):
    with CountingPool() as pool:
        check_in_place(pool, lmdb, 2)
        # One call reached the pool's own submit, bound; the hit did not.
        assert len(pool.submitted) == 1 and isinstance(pool.submitted[0], BoundWrapper)
        # Not wrapped twice: the original submit is under the patched one.
        assert pool.submit._quiver_submit.__func__ is CountingPool.submit


def test_the_standard_map_goes_through_the_patched_submit(lmdb):
    with CountingPool() as pool:
        wrap_executor(pool)
        with quiver.cache(lmdb):
            _workers.square(2)
            assert list(pool.map(_workers.square, [1, 2, 3])) == [1, 4, 9]
        assert len(pool.submitted) == 2


def test_a_spawn_process_pool_is_patched_in_place(lmdb, worker_path):
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        check_in_place(pool, lmdb, 4)


def test_a_loky_pool_is_patched_in_place(lmdb, worker_path):
    loky = pytest.importorskip("loky")
    pool = loky.ProcessPoolExecutor(1)
    try:
        check_in_place(pool, lmdb, 5)
    finally:
        pool.shutdown()


def test_a_dask_client_is_patched_in_place_and_keeps_its_keywords(lmdb):
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        check_in_place(client, lmdb, 6, key="scaled-6", pure=False)
        with quiver.cache(lmdb):
            assert client.submit(_workers.square, 9, key="square-9").key == "square-9"


def test_an_executorlib_executor_is_patched_in_place(lmdb, worker_path):
    executorlib = pytest.importorskip("executorlib", reason="executorlib is not installed")
    with executorlib.SingleNodeExecutor(max_workers=1) as pool:
        check_in_place(pool, lmdb, 7, resource_dict={"cores": 1})


def test_a_binding_keeps_its_own_metadata_where_it_runs(lmdb):
    # fleche's BoundWrapper sets the metadata it captured; what is active
    # where it runs is not merged in.
    with quiver.meta(project="bound"):
        bound = BoundWrapper.bind(_workers.active_meta)
    with quiver.meta(project="caller", step=2):
        assert bound() == {"project": "bound"}
    with quiver.cache(lmdb), quiver.meta(project="bound"):
        square = BoundWrapper.bind(_workers.square)
    with quiver.meta(project="caller", step=2):
        assert square(12) == 144
    with quiver.cache(lmdb):
        assert _workers.square.record(12).metadata == {"project": "bound"}


def make_closures(offset):
    """A local plain function and a local memoized one: neither can be
    imported by name."""
    def shifted(x):
        return _workers.square(x) + offset

    @quiver.memo(name=f"test_fleche_executors.cube_plus_{offset}")
    def cube(x):
        return x ** 3 + offset

    return shifted, cube


def test_local_functions_in_a_binding_cross_to_a_spawn_pool(lmdb, worker_path):
    shifted, cube = make_closures(100)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool, quiver.cache(lmdb):
        assert pool.submit(BoundWrapper.bind(shifted), 23).result(timeout=120) == 629
        assert _workers.square.load(23) == 529  # the nested call stored into the bound cache
        assert pool.submit(BoundWrapper.bind(cube), 2).result(timeout=120) == 108
        assert cube.load(2) == 108
        assert ("square", 23) not in _workers.ran


def test_by_value_comes_back_as_itself_in_the_same_process(lmdb):
    shifted, cube = make_closures(7)
    with quiver.cache(lmdb):
        for fn in (shifted, cube):
            copy = pickle.loads(pickle.dumps(BoundWrapper.bind(fn)))
            assert copy.func is fn
        assert pickle.loads(pickle.dumps(cube)) is cube
        # Importable functions still go by name.
        assert b"cloudpickle" not in pickle.dumps(BoundWrapper.bind(_workers.square))


SCRIPT = '''
import concurrent.futures, multiprocessing, os, sys
import quiver
from quiver import wrap_executor

@quiver.memo
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

@quiver.memo
def where(x):
    return (x, os.getpid())

def plain(x):
    return where(x)[1]

if __name__ == "__main__":
    cache = quiver.Cache.open(sys.argv[1])
    quiver.cache(cache)
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    wrap_executor(pool)
    assert pool.submit(fib, 12).result(timeout=120) == 144
    assert fib.load(12) == 144 and fib.load(5) == 5
    x, pid = pool.submit(where, 1).result(timeout=120)
    assert pid != os.getpid() and where.load(1) == (1, pid)
    assert pool.submit(where, 1).done()
    assert pool.submit(plain, 2).result(timeout=120) == pid and where.load(2) == (2, pid)
    pool.shutdown()
    if sys.argv[2] == "executorlib":
        import executorlib
        with executorlib.SingleNodeExecutor(max_workers=1) as ex:
            wrap_executor(ex)
            x, other = ex.submit(where, 3).result(timeout=120)
            assert other != os.getpid() and where.load(3) == (3, other)
    print("ok")
'''


def run_script(tmp_path, how, extra=""):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cache = str(tmp_path / "cache")
    if how == "file":
        argv = [sys.executable, str(script), cache, extra]
    else:  # python -c, as a notebook's cells: __main__ has no file, no worker can import it
        argv = [sys.executable, "-c", SCRIPT, cache, extra]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_main_module_functions_cross_to_a_spawn_pool(tmp_path):
    run_script(tmp_path, "file")


def test_main_functions_without_a_file_cross_to_spawn_and_executorlib(tmp_path):
    pytest.importorskip("executorlib", reason="executorlib is not installed")
    run_script(tmp_path, "command", "executorlib")


def test_an_executorlib_pool_left_open_does_not_hold_the_exit(tmp_path):
    pytest.importorskip("executorlib", reason="executorlib is not installed")
    script = tmp_path / "left_open.py"
    script.write_text(textwrap.dedent('''
        import quiver.parallel
        ex = quiver.parallel.get_executor("executorlib")
        print(ex.submit(abs, -3).result(timeout=120))
    '''))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "3", done.stderr
