"""The active cache and metadata, carried into threads and processes.

`BoundWrapper.bind(fn)` freezes the caller's context around a callable so that
it runs the same anywhere: in a pool thread (whose context is empty), or after
pickling in another process. `wrap_executor(ex)` patches `ex.submit` so that
it does that for every task, and answers cache hits itself, so that a hit
costs a lookup instead of a round trip through the pool.

What another process cannot import by name (a function from `__main__` or a
notebook, a closure, a lambda) crosses by value, with cloudpickle, whatever
pickler the executor uses; a memoized one is made again there under its name.
"""

import concurrent.futures
import contextvars
import inspect
import itertools
import os
import pickle
import sys
import threading
import time
import weakref

import quiver
from quiver import _cache

__all__ = ["BoundWrapper", "WrappedExecutor", "wrap_executor"]

# Set once this process has unpickled a BoundWrapper made by another one: it
# is then a worker, whatever started it, and quiver.parallel's "auto" is serial
# inside it (no pools inside pools).
_crossed = False


def crossed():
    """True once this process has received bound work from another process."""
    return _crossed


# Set while a bound task runs, in whatever thread runs it: a task that a pool
# thread or dask's in-process worker runs is inside a worker as much as one
# in another process is.
_in_task = contextvars.ContextVar("quiver_in_task", default=False)


def in_task():
    """True while a bound task (one submitted through a wrapped executor) runs."""
    return _in_task.get()


class BoundWrapper:
    """A callable that runs `func` under the cache and metadata that were
    active when it was bound.

    Picklable whenever `func` is, or cloudpickle can pickle it: memoized and
    module-level functions go by reference, anything another process cannot
    import by name by value. An LMDB cache travels as its path and options and is
    reopened on the other side, so nested memoized calls in a worker process
    read and write the caller's cache; a memory cache cannot be shared, and
    the worker gets a private one, and the first memoized call that runs
    there gives a `quiver.QuiverWarning` saying so (once per process).
    """

    __slots__ = ("func", "cache", "meta", "__name__", "__qualname__")

    def __init__(self, func, cache, meta):
        if not callable(func):
            raise TypeError(f"BoundWrapper needs a callable, not {type(func).__name__}")
        self.func = func
        self.cache = cache
        self.meta = dict(meta)
        # Executors that label tasks by function name (dask's dashboard and
        # keys) then show the user's function, not "BoundWrapper".
        self.__name__ = getattr(func, "__name__", type(func).__name__)
        self.__qualname__ = getattr(func, "__qualname__", self.__name__)

    @classmethod
    def bind(cls, func):
        """Bind `func` to the active cache and metadata. Binding a bound
        callable again returns it unchanged: its own context would win anyway."""
        if isinstance(func, cls):
            return func
        return cls(func, quiver.current_cache(), quiver.current_meta())

    def __call__(self, *args, **kwargs):
        # The metadata bound is the metadata in force, as fleche has it: not
        # merged with whatever is active where the call happens to run.
        task = _in_task.set(True)
        try:
            with quiver.cache(self.cache), _cache._Setter(_cache._meta, self.meta):
                return self.func(*args, **kwargs)
        finally:
            _in_task.reset(task)

    def __reduce__(self):
        # The cache goes as its own pickle, unpickled only in another process:
        # a binding pickled and unpickled in one process (dask's in-process
        # workers do that) keeps the very cache it was bound to, memory
        # caches included. A memory cache goes as None, so that the warning
        # that nothing is shared comes from the process where that is true.
        memory = not getattr(self.cache, "_stack", False) and self.cache.path == ":memory:"
        cache_pickle = None
        if not memory:
            binding = _cache._binding.set(True)
            try:
                cache_pickle = pickle.dumps(self.cache)
            finally:
                _cache._binding.reset(binding)
        func = self.func if _importable(self.func) else _ByValue(self.func)
        return _rebuild, (func, _process, _token(self.cache), cache_pickle, self.meta)

    def __repr__(self):
        return f"<quiver.BoundWrapper {self.__qualname__} cache={self.cache!r} meta={self.meta!r}>"


# Caches and callables this process has bound and pickled, by a token that is
# never reused (ids are), held weakly so that a pickled binding does not keep
# a cache open.
_tokens = weakref.WeakKeyDictionary()
_by_token = weakref.WeakValueDictionary()
_next_token = itertools.count(1)
_tokens_lock = threading.Lock()


def _token(cache):
    with _tokens_lock:
        token = _tokens.get(cache)
        if token is None:
            token = _tokens[cache] = next(_next_token)
            _by_token[token] = cache
        return token


# Which process a pickle came from: random rather than the pid, which another
# host or container may share; new in a forked child, whose caches are copies.
_process = os.urandom(16)


# Caches received from other processes, by (origin, token), the latest few
# kept open: a pool worker reopening the caller's LMDB cache for every task
# (the environment closed again when the task's binding goes) pays ~0.4 ms a
# task; kept, a task costs what the pool costs.
_received = {}
_RECEIVED_KEPT = 8


def _new_process():
    global _process, _tokens_lock
    _process = os.urandom(16)
    _tokens_lock = threading.Lock()  # another thread may have held it at the fork
    _received.clear()  # copies of the parent's: the child opens its own


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_process)


def _rebuild(func, origin, token, cache_pickle, meta):
    global _crossed
    cache = _by_token.get(token) if origin == _process else None
    if cache is None:
        if origin != _process:
            _crossed = True
        if cache_pickle is None:
            # Nothing is said yet: a plain task never uses the cache, and a
            # memoized call that runs here warns then (Memo._compute).
            cache = _cache._stand_in()
        else:
            key = (origin, token)
            with _tokens_lock:
                cache = _received.pop(key, None)
            if cache is None or getattr(cache, "closed", False):
                cache = pickle.loads(cache_pickle)
            with _tokens_lock:
                _received[key] = cache  # the most recent last
                while len(_received) > _RECEIVED_KEPT:
                    del _received[next(iter(_received))]
    return BoundWrapper(func, cache, meta)


# -- by value: what another process cannot import by name ---------------------

def _importable(obj):
    """Whether another process finds obj by its module and qualified name:
    not for anything from __main__ (an executorlib worker, a notebook kernel's
    pool or `python -c` have no such module), a local function or lambda, or
    an object that is not what its name names (a partial, a bound method)."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or module in ("__main__", "__mp_main__"):
        return False
    found = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found is obj


# Set while cloudpickle pickles something by value in this thread: a memoized
# function met inside is then written out inline (see _reduce_memo).
_by_value = threading.local()


def _dumps_by_value(obj):
    try:
        import cloudpickle
    except ImportError:
        raise ImportError(f"{getattr(obj, '__qualname__', obj)!r} cannot be imported by name in another process, "
                          "and pickling it by value needs cloudpickle (pip install cloudpickle)") from None
    outer = getattr(_by_value, "on", False)
    _by_value.on = True
    try:
        return cloudpickle.dumps(obj)
    finally:
        _by_value.on = outer


def _same_process_token(obj):
    try:
        return _token(obj)
    except TypeError:  # neither hashable nor weakly referable: always by value
        return None


def _loads_by_value(data, origin, token):
    # Unpickled in the process that pickled it (dask's in-process workers):
    # the object itself, not a copy with copied globals.
    if origin == _process and token is not None:
        obj = _by_token.get(token)
        if obj is not None:
            return obj
    return pickle.loads(data)


class _ByValue:
    """Pickles obj with cloudpickle, whatever pickler handles the rest."""
    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __reduce__(self):
        return _loads_by_value, (_dumps_by_value(self.obj), _process, _same_process_token(self.obj))


def _reduce_memo(memo):
    """Memo.__reduce__: by name when another process can import it, else by
    value: its function (cloudpickle) and its memo() options, from which the
    other process makes the same memo (same name, so the same entries)."""
    if _importable(memo):
        return memo.__qualname__
    if not getattr(_by_value, "on", False):
        return _loads_by_value, (_dumps_by_value(memo), _process, _same_process_token(memo))
    # Inside cloudpickle: an empty memo first, filled from its state after,
    # so that a recursive function's globals, which name the memo, find it.
    return _memo_shell, (type(memo),), (memo.__wrapped__, memo._options), None, None, _memo_fill


def _memo_shell(cls):
    return cls.__new__(cls)


def _memo_fill(memo, state):
    fn, options = state
    type(memo).__init__(memo, fn, **options)


# -- the hit short-circuit -------------------------------------------------------

def _submit_keywords(submit):
    """The keyword-only parameters of an executor's own submit (dask's
    resources=, key=, pure=; executorlib's resource_dict=): those are meant for
    the executor, and every other keyword for the task."""
    try:
        parameters = inspect.signature(submit).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return frozenset()
    return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _probe(fn, args, kwargs):
    """(hit, value) for a memoized fn, bound or not; (False, None) otherwise."""
    if isinstance(fn, BoundWrapper):
        probe = getattr(fn.func, "_probe", None)
        if probe is None:
            return False, None
        with quiver.cache(fn.cache):  # metadata is no part of a call's identity
            return probe(*args, **kwargs)
    probe = getattr(fn, "_probe", None)
    if probe is None:
        return False, None
    return probe(*args, **kwargs)


def _intercepting(submit):
    """A submit that answers hits of memoized functions itself, with a
    completed future, and hands everything else to `submit` bound to the
    caller's cache and metadata; keywords that `submit` declares keyword-only
    (dask's key=, pure=, resources=; executorlib's resource_dict=) go to it."""
    own = _submit_keywords(submit)

    def hit_or_submit(fn, /, *args, **kwargs):
        for_submit = {}
        if kwargs and own:
            for name in own.intersection(kwargs):
                for_submit[name] = kwargs.pop(name)
        hit, value = _probe(fn, args, kwargs)
        if hit:
            future = concurrent.futures.Future()
            future.set_result(value)
            return future
        return submit(BoundWrapper.bind(fn), *args, **kwargs, **for_submit)

    hit_or_submit.__name__ = getattr(submit, "__name__", "submit")
    hit_or_submit.__doc__ = getattr(submit, "__doc__", None)
    hit_or_submit.__wrapped__ = submit  # inspect.signature shows the executor's own
    hit_or_submit._quiver_submit = submit
    return hit_or_submit


def _unpatched(submit):
    return getattr(submit, "_quiver_submit", submit)


class WrappedExecutor(concurrent.futures.Executor):
    """An executor whose cache hits never reach the executor it wraps: the
    proxy `quiver.parallel.get_executor` returns for the pools it owns (it
    tracks their shutdown), and `wrap_executor`'s answer for an executor whose
    submit cannot be replaced.

    `submit(fn, *args, **kwargs)` of a memoized fn whose call is in the active
    cache returns an already completed `concurrent.futures.Future` without
    calling the wrapped `submit`; everything else is submitted bound to the
    caller's cache and metadata. Anything else (attributes, methods of dask's
    Client) passes through to the wrapped executor.
    """

    def __init__(self, executor):
        if not callable(getattr(executor, "submit", None)):
            raise TypeError(f"wrap_executor needs an object with a submit method, not {type(executor).__name__}")
        self._executor = executor
        self._submit = _intercepting(_unpatched(executor.submit))
        self._closed = False

    @property
    def executor(self):
        """The wrapped executor."""
        return self._executor

    def submit(self, fn, /, *args, **kwargs):
        return self._submit(fn, *args, **kwargs)

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Like `Executor.map`, with every call submitted on its own (so hits
        skip the executor): chunksize is accepted and ignored."""
        deadline = None if timeout is None else time.monotonic() + timeout
        futures = [self.submit(fn, *args) for args in zip(*iterables)]

        def results():
            try:
                futures.reverse()
                while futures:
                    future = futures.pop()
                    if deadline is None:
                        yield future.result()
                    else:
                        yield future.result(max(0.0, deadline - time.monotonic()))
            finally:
                for future in futures:
                    future.cancel()

        return results()

    def shutdown(self, *args, **kwargs):
        """Shut the wrapped executor down, with its own arguments."""
        self._closed = True
        return self._executor.shutdown(*args, **kwargs)

    def __enter__(self):
        enter = getattr(self._executor, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, *exc):
        exit_ = getattr(self._executor, "__exit__", None)
        if exit_ is None:
            self.shutdown()
            return False
        self._closed = True
        return exit_(*exc)

    def __getattr__(self, name):
        if name == "_executor":  # not set yet: during unpickling or a failed __init__
            raise AttributeError(name)
        return getattr(self._executor, name)

    def __repr__(self):
        return f"<quiver.WrappedExecutor of {self._executor!r}>"


def wrap_executor(executor):
    """Make `executor` (anything with `submit`) answer cache hits itself and
    run misses bound to the caller's cache and metadata, as fleche's does: its
    `submit` is replaced on the instance, and the executor itself is returned,
    so `wrap_executor(pool); pool.submit(f, 1)` works without the return
    value. A hit gives an already completed future without reaching the
    executor. Wrapping again changes nothing and returns the same object.

    The executor's own `map` goes through `submit` where it is built on it (the
    standard library's); dask's `Client.map` and other methods are untouched.
    An executor whose `submit` cannot be replaced (no instance attributes) is
    returned in a `WrappedExecutor` proxy instead."""
    if isinstance(executor, WrappedExecutor):
        return executor
    submit = getattr(executor, "submit", None)
    if not callable(submit):
        raise TypeError(f"wrap_executor needs an object with a submit method, not {type(executor).__name__}")
    if getattr(submit, "_quiver_submit", None) is not None:
        return executor
    try:
        executor.submit = _intercepting(submit)
    except (AttributeError, TypeError):
        return WrappedExecutor(executor)
    return executor
