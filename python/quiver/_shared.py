"""SafeCounter and SafeDict: tallies and results that workers share (vayu's
ParallelRunner idiom, DESIGN section 11).

    counts = SafeCounter.make(ProcessPoolExecutor)
    with ProcessPoolExecutor() as pool:
        pool.map(work, items, [counts] * len(items))   # work calls counts.increment("done")
    counts.get("done")

make(executor_cls) picks the kind the executor needs:
  - threads (ThreadPoolExecutor, "threads", "serial", None): a lock-guarded
    object in this process's memory;
  - anything else (ProcessPoolExecutor, loky, "processes", "auto", ...): an
    object over the shared store of a cache (the active cache unless given),
    an LMDB environment beside it that every process and language opening
    the cache by path sees (qv_counter_* and qv_dict_* in C, quiver.counter
    and quiver.dict in Lua). It pickles as its cache and name, and each
    change is one LMDB write transaction, so increments from any number of
    processes are atomic. Not a multiprocessing Manager: no server process,
    a few microseconds per increment.

Keys of the store kind are any encodable value, keyed by their canonical
encoding (quiver.encode), so 1 and 1.0 are two keys, and Lua's "a" is
Python's "a"; values of a SafeDict are any encodable value, read back as a
copy. The thread kind keeps Python's own keys and objects. A store object
made without a name is this run's: a fresh name, cleared when the object
that made it is collected (or at exit); a named one stays in the cache until
cleared, for another run or language to read.
"""
import concurrent.futures
import os
import threading
import uuid
import weakref

from . import _quiver
from ._cache import Cache, current_cache
from ._codec import encode

__all__ = ["SafeCounter", "SafeDict"]

_THREAD_NAMES = ("threads", "thread", "serial", "sync", "synchronous")
_MISSING = object()


def _for_threads(executor_cls):
    """Whether executor_cls (a class, an instance, a name or None) runs its
    tasks in this process: then memory shared by threads is enough."""
    if executor_cls is None or executor_cls is False:
        return True
    if isinstance(executor_cls, str):
        return executor_cls.lower() in _THREAD_NAMES
    inner = getattr(executor_cls, "_executor", None)  # a WrappedExecutor
    if inner is not None and not isinstance(executor_cls, type):
        executor_cls = inner
    cls = executor_cls if isinstance(executor_cls, type) else type(executor_cls)
    return issubclass(cls, concurrent.futures.ThreadPoolExecutor) or cls.__name__ == "SerialExecutor"


def _store_cache(cache):
    c = current_cache() if cache is None else cache
    if not isinstance(c, Cache):
        raise TypeError(f"cache must be a quiver.Cache, not {type(c).__name__}")
    if getattr(c, "_stack", None) or getattr(c, "_tiers", None) or "://" in c.path:
        raise ValueError(f"shared counters and dicts live beside an LMDB or memory cache, not on a remote tier or "
                         f"stack ({c!r}): give cache=quiver.Cache.open(<local path>)")
    return c


def _clear_quietly(kind, cache, name, pid):
    if os.getpid() != pid:  # a forked child's inherited copy: the counter is still its parent's
        return
    try:
        if not cache.closed:
            getattr(_quiver, f"qv_{kind}_clear")(cache, name)
    except Exception:  # a cache gone read-only or closed: nothing left to tidy
        pass


class _StoreBacked:
    _kind = None

    def __init__(self, cache=None, name=None):
        self._cache = _store_cache(cache)
        self._own = name is None
        self._name = f"quiver.safe/{uuid.uuid4().hex}" if name is None else name
        if not isinstance(self._name, str) or not 0 < len(self._name.encode()) <= 255:
            raise ValueError(f"name must be a str of 1 to 255 bytes, not {self._name!r}")
        if self._own:
            self._finalizer = weakref.finalize(self, _clear_quietly, self._kind, self._cache, self._name,
                                               os.getpid())

    @property
    def name(self):
        return self._name

    @property
    def cache(self):
        return self._cache

    def clear(self):
        """Remove every key; returns how many there were."""
        return getattr(_quiver, f"qv_{self._kind}_clear")(self._cache, self._name)

    def _trusted(self):
        # The shared store is never signed: a cache trusted for its signature
        # alone does not vouch for what others put here.
        c = self._cache
        if not getattr(c, "_trusted", True):
            return False
        options = getattr(c, "_options", None) or {}
        return bool(options.get("trust_pickle")) or not _quiver.cache_signed(c)

    def __reduce__(self):
        if self._cache.path == ":memory:":
            # the copy would count in the worker's own memory cache, silently apart
            raise TypeError(f"{self!r} is on a memory cache, which no other process sees: make it on a cache "
                            "opened by path (cache=quiver.Cache.open(...), or set QUIVER_CACHE)")
        # a copy in a worker is no owner: only the maker's collection clears
        return (_reopen, (type(self), self._cache, self._name))

    def __repr__(self):
        return f"{type(self).__name__}(name={self._name!r}, cache={self._cache.path!r})"


def _reopen(cls, cache, name):
    obj = cls.__new__(cls)
    obj._cache = cache
    obj._own = False
    obj._name = name
    return obj


class _ThreadBacked:
    def __init__(self):
        self._lock = threading.Lock()
        self._d = {}

    def __reduce__(self):
        raise TypeError(f"a {type(self).__bases__[-1].__name__} made for threads lives in this process's memory; "
                        "make it with .make(ProcessPoolExecutor) (or any process executor) to share it with "
                        "other processes")

    def clear(self):
        """Remove every key; returns how many there were."""
        with self._lock:
            n = len(self._d)
            self._d.clear()
        return n


class SafeCounter:
    """Integer counts by key that workers share: .increment(key, n=1) returns
    the new count, .get(key) the count (0 for a key never incremented)."""

    @staticmethod
    def make(executor_cls=None, *, cache=None, name=None):
        """A counter for workers of executor_cls: in memory for threads, on
        the shared store of cache (default: the active cache) for processes.
        name: a counter that outlives this object, for other runs and
        languages to open (quiver.counter(cache, name) in Lua)."""
        if _for_threads(executor_cls) and cache is None and name is None:
            return _ThreadCounter()
        return _StoreCounter(cache, name)

    def __getitem__(self, key):
        return self.get(key)


class _ThreadCounter(_ThreadBacked, SafeCounter):
    def increment(self, key, n=1):
        with self._lock:
            v = self._d[key] = self._d.get(key, 0) + n
        return v

    def get(self, key):
        with self._lock:
            return self._d.get(key, 0)

    def items(self):
        with self._lock:
            return list(self._d.items())

    def __repr__(self):
        return f"SafeCounter({self.items()!r})"


class _StoreCounter(_StoreBacked, SafeCounter):
    _kind = "counter"

    def increment(self, key, n=1):
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        return _quiver.qv_counter_add(self._cache, self._name, encode(key), n)

    def get(self, key):
        return _quiver.qv_counter_get(self._cache, self._name, encode(key))

    def items(self):
        """Every key with its count, a snapshot, in the order of the keys'
        encodings."""
        trusted = self._trusted()
        return [(_quiver.decode(k, trusted), n) for k, n in _quiver.qv_counter_items(self._cache, self._name)]


class SafeDict:
    """A dict that workers share: .set(key, value), .get(key, default=None),
    .delete(key) (KeyError when absent), and d[key], d[key] = v, del d[key],
    key in d."""

    @staticmethod
    def make(executor_cls=None, *, cache=None, name=None):
        """A dict for workers of executor_cls: in memory for threads, on the
        shared store of cache (default: the active cache) for processes.
        name: a dict that outlives this object, for other runs and languages
        to open (quiver.dict(cache, name) in Lua)."""
        if _for_threads(executor_cls) and cache is None and name is None:
            return _ThreadDict()
        return _StoreDict(cache, name)

    def __getitem__(self, key):
        v = self.get(key, _MISSING)
        if v is _MISSING:
            raise KeyError(key)
        return v

    def __setitem__(self, key, value):
        self.set(key, value)

    def __delitem__(self, key):
        self.delete(key)

    def __contains__(self, key):
        return self.get(key, _MISSING) is not _MISSING


class _ThreadDict(_ThreadBacked, SafeDict):
    def set(self, key, value):
        with self._lock:
            self._d[key] = value

    def get(self, key, default=None):
        with self._lock:
            return self._d.get(key, default)

    def delete(self, key):
        with self._lock:
            del self._d[key]

    def items(self):
        with self._lock:
            return list(self._d.items())

    def __repr__(self):
        return f"SafeDict({dict(self.items())!r})"


class _StoreDict(_StoreBacked, SafeDict):
    _kind = "dict"

    def set(self, key, value):
        _quiver.qv_dict_set(self._cache, self._name, encode(key), encode(value))

    def get(self, key, default=None):
        try:
            data = _quiver.qv_dict_get(self._cache, self._name, encode(key))
        except _quiver.NotFoundError:
            return default
        return _quiver.decode(data, self._trusted())

    def delete(self, key):
        try:
            _quiver.qv_dict_del(self._cache, self._name, encode(key))
        except _quiver.NotFoundError:
            raise KeyError(key) from None

    def items(self):
        """Every key with its value, a snapshot, in the order of the keys'
        encodings."""
        trusted = self._trusted()
        return [(_quiver.decode(k, trusted), _quiver.decode(v, trusted))
                for k, v in _quiver.qv_dict_items(self._cache, self._name)]

