"""The active cache and metadata, carried into threads and processes.

`BoundWrapper.bind(fn)` freezes the caller's context around a callable so that
it runs the same anywhere: in a pool thread (whose context is empty), or after
pickling in another process. `wrap_executor(ex)` does that for every task
handed to an executor, and answers cache hits itself, so that a hit costs a
lookup instead of a round trip through the pool.
"""

import concurrent.futures
import inspect
import itertools
import os
import pickle
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


class BoundWrapper:
    """A callable that runs `func` under the cache and metadata that were
    active when it was bound.

    Picklable whenever `func` is (memoized functions and module-level functions
    are, by reference). An LMDB cache travels as its path and options and is
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
        with quiver.cache(self.cache), quiver.meta(**self.meta):
            return self.func(*args, **kwargs)

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
        return _rebuild, (self.func, _process, _token(self.cache), cache_pickle, self.meta)

    def __repr__(self):
        return f"<quiver.BoundWrapper {self.__qualname__} cache={self.cache!r} meta={self.meta!r}>"


# Caches this process has bound and pickled, by a token that is never reused
# (ids are), held weakly so that a pickled binding does not keep a cache open.
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


def _new_process():
    global _process, _tokens_lock
    _process = os.urandom(16)
    _tokens_lock = threading.Lock()  # another thread may have held it at the fork


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
            cache = pickle.loads(cache_pickle)
    return BoundWrapper(func, cache, meta)


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


class WrappedExecutor(concurrent.futures.Executor):
    """An executor whose cache hits never reach the executor it wraps.

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
        self._submit = executor.submit
        self._submit_keywords = _submit_keywords(executor.submit)
        self._closed = False

    @property
    def executor(self):
        """The wrapped executor."""
        return self._executor

    def submit(self, fn, /, *args, **kwargs):
        for_submit = {}
        if kwargs and self._submit_keywords:
            for name in self._submit_keywords.intersection(kwargs):
                for_submit[name] = kwargs.pop(name)
        hit, value = _probe(fn, args, kwargs)
        if hit:
            future = concurrent.futures.Future()
            future.set_result(value)
            return future
        return self._submit(BoundWrapper.bind(fn), *args, **kwargs, **for_submit)

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
    """Wrap `executor` (anything with `submit`) so that cache hits return
    completed futures without reaching it and misses run bound to the caller's
    cache and metadata. Wrapping a wrapped executor returns it unchanged."""
    if isinstance(executor, WrappedExecutor):
        return executor
    return WrappedExecutor(executor)
