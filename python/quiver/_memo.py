"""@memo: memoized functions."""
import concurrent.futures
import functools
import inspect
import os
import shutil
import tempfile
import threading
import time
import types
import warnings
import weakref

from . import _quiver
from ._cache import Cache, _ABSENT, _PARAMS, _active, _meta, _quiver_default, current_cache, current_meta, _Setter
from ._codec import QuiverWarning, Tag, UntrustedPickleError, _encode_hook, _tag_hook, encode


class _Signal:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<quiver {self.name}>"


_MISS = _Signal("miss")
_UNCACHED = _Signal("uncached")
_SLOW = _Signal("stack")
_NODEFAULT = _Signal("no default")

def _active_meta_bytes():
    m = current_meta()
    return encode(m) if m else None


_quiver.set_hooks(encode=_encode_hook, tag=_tag_hook, tag_type=Tag, default=_quiver_default, active=_active,
                  miss=_MISS, uncached=_UNCACHED, slow=_SLOW, nodefault=_NODEFAULT, warning=QuiverWarning,
                  handle_class=Cache, meta=_active_meta_bytes, untrusted=UntrustedPickleError)

# name -> Memo, so that Cache.query can filter positional arguments by name.
_registry = weakref.WeakValueDictionary()


def _positions(name):
    m = _registry.get(name)
    return None if m is None else m._positions


class Memo(_quiver.MemoBase):
    """A memoized function (made by @memo). Calling it looks the bound call up
    in the active cache; a hit returns the stored result without running the
    function, a miss runs it and stores the result.

    A function that returns a concurrent.futures.Future gives its caller
    another Future, which completes with the same outcome once the result is
    stored (a call made as soon as it is done is a hit).

    Without name=, a lambda or a function defined inside another function
    (its __qualname__ holds <lambda> or <locals>) raises TypeError: such
    functions share their qualified name with others, and so would share
    entries."""

    def __init__(self, fn, name=None, version=None, ignore=(), require=None, isolate=False, meta=None,
                 dedup=True, wait_timeout=None):
        if not callable(fn):
            raise TypeError(f"memo needs a callable, not {type(fn).__name__}")
        sig = inspect.signature(fn)
        pos, pos_defaults, kwo, kwo_defaults = [], [], [], []
        nposonly, var_pos, var_kw = 0, False, False
        P = inspect.Parameter
        for p in sig.parameters.values():
            default = _NODEFAULT if p.default is P.empty else p.default
            if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD):
                pos.append(p.name)
                pos_defaults.append(default)
                if p.kind is P.POSITIONAL_ONLY:
                    nposonly += 1
            elif p.kind is P.KEYWORD_ONLY:
                kwo.append(p.name)
                kwo_defaults.append(default)
            elif p.kind is P.VAR_POSITIONAL:
                var_pos = True
            else:
                var_kw = True
        ignore = tuple([ignore] if isinstance(ignore, str) else ignore)
        require = None if require is None else tuple([require] if isinstance(require, str) else require)
        for n in ignore + (require or ()):
            if n not in sig.parameters:
                raise ValueError(f"{fn.__qualname__} has no parameter {n!r}")
        if name is None:
            qualname = getattr(fn, "__qualname__", None)
            # Every lambda, and every closure a factory makes, has one qualname:
            # the default name would hand one function's results to another.
            if not isinstance(qualname, str) or "<lambda>" in qualname or "<locals>" in qualname:
                what = f"{fn.__module__}.{qualname}" if isinstance(qualname, str) else f"{fn!r} (no __qualname__)"
                raise TypeError(f"memo: {what} is not a unique name (every lambda, and every function defined "
                                f"inside another function, shares it with others, so their results would mix): "
                                f"pass name=, e.g. memo(name=\"mymodule.my_function\"); for a closure, put what "
                                f"it captures in the name, e.g. name=f\"mymodule.add_{{n}}\"")
            name = f"{fn.__module__}.{qualname}"
        if version is not None:
            version = str(version)
        super().__init__(fn, name, version, tuple(pos), tuple(pos_defaults), nposonly, tuple(kwo),
                         tuple(kwo_defaults), var_pos, var_kw, ignore, require)
        self.__module__ = fn.__module__
        self.__name__ = getattr(fn, "__name__", name)
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__doc__ = fn.__doc__
        self.__signature__ = sig
        self._isolate = isolate
        self._flags = _CALL_MISSED | (0 if dedup else _CALL_NO_DEDUP)
        if wait_timeout is not None and wait_timeout < 0:
            raise ValueError("wait_timeout must be >= 0 seconds (or None for the default, 10 minutes)")
        # 0 for the C default; a wait of 0 s is "never wait", which C spells -1
        self._wait_ns = 0 if wait_timeout is None else max(int(wait_timeout * 1e9), 0) or -1
        self._static_meta = dict(meta or {})
        self._ignore = frozenset(ignore)
        kept = [n for n in pos if n not in ignore]
        self._positions = {n: i for i, n in enumerate(kept)}
        # Every record names its positional arguments (FORMAT.md 6.5), so that
        # a query filters them by name where this module was never imported.
        if kept:
            self._static_meta[_PARAMS] = kept
        _registry[name] = self

    # pickled by reference, as functions are: ProcessPoolExecutor finds it by name.
    def __reduce__(self):
        return self.__qualname__

    def __repr__(self):
        version = "" if self.version is None else f" version {self.version!r}"
        try:
            cache = repr(current_cache())
        except _quiver.Error as e:  # the default cannot be opened: say why, here too
            cache = f"<unavailable: {e}>"
        return f"<quiver.memo {self.name!r}{version} cache={cache}>"

    def __get__(self, obj, cls=None):
        return self if obj is None else types.MethodType(self, obj)

    # -- the slow half of a call (the hit path is in C) ---------------------

    def _miss(self, signal, cache, args, kwargs):
        if signal is _MISS:
            return self._compute(cache, args, kwargs)
        if signal is _SLOW:
            return self._stack_call(cache, args, kwargs)
        if isinstance(signal, _quiver.EncodeError):
            named = self._unencodable(args, kwargs)
            warnings.warn(f"{named}; running uncached ({signal})" if named else
                          f"{self.name}: running uncached, an argument cannot be encoded: {signal}; pass "
                          f"ignore=[...] for it or register an encoder (quiver.register)",
                          QuiverWarning, stacklevel=2)
        return self._run(args, kwargs)

    def _unencodable(self, args, kwargs):
        """The argument that cannot be encoded, named as f(x=<socket>), with
        what to do; None when none is found alone. Found again here, off the
        hit path, so that the encoder in C keeps no account of where it is."""
        try:
            bound = self.__signature__.bind(*args, **kwargs)
        except TypeError:
            return None
        P = inspect.Parameter
        for pname, value in bound.arguments.items():
            kind = self.__signature__.parameters[pname].kind
            if kind is P.VAR_POSITIONAL:
                items = [(f"{pname}[{i}]", v, False) for i, v in enumerate(value)]
            elif kind is P.VAR_KEYWORD:
                items = [(k, v, False) for k, v in value.items()]
            elif pname in self._ignore:
                continue
            else:
                items = [(pname, value, True)]
            for label, v, named in items:
                try:
                    encode(v)
                except _quiver.EncodeError:
                    leaf = _culprit(v)
                    t = type(leaf).__name__
                    shown = t if leaf is v else f"{type(v).__name__} holding a {t}"
                    plural = t + ("es" if t.endswith(("s", "x", "ch", "sh")) else "s")
                    advice = f"pass ignore=[\"{label}\"] or register an encoder" if named else "register an encoder"
                    return f"{self.name}({label}=<{shown}>): {plural} cannot be cached; {advice} (quiver.register)"
        return None

    def _run(self, args, kwargs):
        if not self._isolate:
            return self.__wrapped__(*args, **kwargs)
        if threading.current_thread() is not threading.main_thread():
            raise _quiver.MisuseError(f"{self.name} has isolate=True, which changes the process's working "
                                      "directory: call it from the main thread of a process, not from a thread")
        here = os.getcwd()
        tmp = tempfile.mkdtemp(prefix="quiver-isolate-")
        try:
            os.chdir(tmp)
            return self.__wrapped__(*args, **kwargs)
        finally:
            os.chdir(here)
            shutil.rmtree(tmp, ignore_errors=True)

    def _meta_bytes(self):
        m = current_meta()
        if self._static_meta:
            m = {**self._static_meta, **m}
        return encode(m) if m else None

    def _compute(self, cache, args, kwargs, store_in=None, rerun=False):
        """A miss through the call runtime (DESIGN section 12): run once across
        threads and processes, store, and return the result; a result that
        cannot be kept is returned all the same, with a warning."""
        target = store_in if store_in is not None else cache
        while target._stack:  # a stack writes to its first cache
            target = target._layers[0]
        start, t0 = time.time_ns(), time.perf_counter_ns()
        flags = self._flags | (_CALL_RERUN if rerun else 0)
        done = self._run_call(target, args, kwargs, self._run, self._meta_bytes(), flags, self._wait_ns,
                              concurrent.futures.Future)
        if done is None:  # the call does not bind: let the function say why
            return self._run(args, kwargs)
        outcome, result, why = done
        if getattr(target, "_stand_in", False):
            _warn_stand_in(self.name)
        if isinstance(result, concurrent.futures.Future) and outcome < 0:
            return self._store_when_done(target, args, kwargs, result, start, t0)
        if outcome < 0:
            _warn_unstored(self.name, target, outcome, why)
        return result

    def _store_when_done(self, cache, args, kwargs, future, start, t0):
        """A future that completes with future, once its result is stored.

        The caller never sees the function's own future: that one wakes its
        waiters before it runs callbacks, so a call made the moment it
        resolved would miss the store and run again."""
        meta = self._meta_bytes()
        told = concurrent.futures.Future()
        told.add_done_callback(lambda t: t.cancelled() and future.cancel())

        def done(f):
            if f.cancelled():
                told.cancel()
                return
            e = f.exception()
            if e is None:
                result = f.result()
                try:
                    self._store(cache, args, kwargs, result, start, time.perf_counter_ns() - t0, meta)
                except _quiver.EncodeError as err:
                    warnings.warn(f"{self.name}: the future's result was not stored: {err}; return a value "
                                  f"quiver can encode, or register an encoder for its type", QuiverWarning)
                except _quiver.ClosedError:
                    pass  # the cache went away before the future completed
            try:
                if e is None:
                    told.set_result(result)
                else:
                    told.set_exception(e)
            except concurrent.futures.InvalidStateError:
                pass  # the caller cancelled its future
        future.add_done_callback(done)
        return told

    def _stack_call(self, stack, args, kwargs):
        hit, value = self._stack_probe(stack, args, kwargs)
        if hit:
            return value
        return self._compute(stack, args, kwargs, store_in=stack._layers[0])

    def _stack_probe(self, stack, args, kwargs):
        if hasattr(stack, "_probe_call"):  # a filtered view (Cache.filter) decides what it holds
            return stack._probe_call(self, args, kwargs)
        layers = stack._layers
        for i, layer in enumerate(layers):
            r = self._get(layer, args, kwargs)
            if r is _SLOW:
                hit, r = self._stack_probe(layer, args, kwargs)
                if not hit:
                    continue
            elif r is _MISS or r is _UNCACHED:
                if r is _UNCACHED:
                    return False, None
                continue
            if i:
                self._promote(layers[0], layer, args, kwargs)
            return True, r
        return False, None

    def _promote(self, first, layer, args, kwargs):
        call = self._call(args, kwargs)
        if call is None:
            return
        digest, encoding = call
        first_leaf = first
        while first_leaf._stack:
            first_leaf = first_leaf._layers[0]
        while layer._stack:
            layer = next(c for c in layer._layers if not c._stack and c.contains(digest))
        raw = _quiver.cache_get_raw(layer, digest)
        if raw is None:
            return
        try:
            rec = layer.load(digest)
            start, duration = rec.start_ns, rec.duration_ns
        except KeyError:
            start, duration = 0, 0
        _quiver.cache_store_raw(first_leaf, encoding, raw, start, duration, self._meta_bytes())

    # -- the public methods --------------------------------------------------

    def _probe(self, *args, **kwargs):
        """(True, value) when the call is stored in the active cache, else
        (False, None); never runs the function nor stores anything."""
        cache = current_cache()
        try:
            r = self._get(cache, args, kwargs)
        except _quiver.EncodeError:
            return False, None
        if r is _SLOW:
            return self._stack_probe(cache, args, kwargs)
        if r is _MISS or r is _UNCACHED:
            return False, None
        return True, r

    def digest(self, *args, **kwargs):
        """The call digest of this call (32 hex characters)."""
        try:
            call = self._call(args, kwargs)
        except _quiver.EncodeError as err:
            named = self._unencodable(args, kwargs)
            if named is None:
                raise
            raise _quiver.EncodeError(f"{named} ({err})") from err
        if call is None:
            inspect.signature(self.__wrapped__).bind(*args, **kwargs)  # raises the TypeError
            raise TypeError(f"{self.name}: a required argument was not passed, so the call is not memoized")
        return call[0]

    def contains(self, *args, **kwargs):
        """Whether this call is stored in the active cache."""
        return current_cache().contains(self.digest(*args, **kwargs))

    def load(self, *args, **kwargs):
        """The stored result of this call; KeyError when it is not stored."""
        hit, value = self._probe(*args, **kwargs)
        if not hit:
            raise _quiver.NotFoundError(f"{self.name}{_show(args, kwargs)} is not in the cache")
        return value

    def record(self, *args, **kwargs):
        """The stored Record of this call; KeyError when it is not stored."""
        return current_cache().load(self.digest(*args, **kwargs))

    def query(self, *args, metadata=None, result=_ABSENT, where=None, **kwargs):
        """A quiver.Query of this function's stored calls in the active cache,
        filtered by argument values (positional ones bound to the parameters
        in order, keyword ones by name), metadata, result and where=, as
        Cache.query does (quiver.ANY, predicates, None matches None)."""
        return current_cache().query(self.name, metadata, result=result, where=where,
                                     arguments=self._query_arguments(args, kwargs))

    def _query_arguments(self, args, kwargs):
        P = inspect.Parameter
        names = [p.name for p in self.__signature__.parameters.values()
                 if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
        if len(args) > len(names):
            raise TypeError(f"{self.name}.query takes at most {len(names)} positional arguments "
                            f"({len(args)} given)")
        arguments = dict(zip(names, args))
        for k, v in kwargs.items():
            if k in arguments:
                raise TypeError(f"{self.name}.query got multiple values for argument {k!r}")
            arguments[k] = v
        ignored = sorted(self._ignore.intersection(arguments))
        if ignored:
            raise TypeError(f"{self.name} ignores {', '.join(ignored)}: it is not stored, so no query can filter "
                            f"on it")
        return arguments

    def evict(self, *args, **kwargs):
        """Remove this call from the active cache (each cache of a stack);
        returns whether it was stored."""
        return bool(current_cache().evict(self.digest(*args, **kwargs)))

    def clear(self):
        """Remove every stored call of this function from the active cache
        (each cache of a stack); returns how many were removed."""
        return current_cache().evict(name=self.name)

    def rerun(self, *args, **kwargs):
        """Run the call even when stored, and store the new result over the old."""
        cache = current_cache()
        return self._compute(cache, args, kwargs, store_in=cache._layers[0] if cache._stack else None, rerun=True)

    def bind(self, *args, **kwargs):
        """A picklable callable that carries the active cache and metadata into
        threads and processes (quiver.BoundWrapper); with arguments, a partial."""
        from .bound import BoundWrapper
        b = BoundWrapper.bind(self)
        return functools.partial(b, *args, **kwargs) if args or kwargs else b


_CALL_NO_DEDUP, _CALL_MISSED, _CALL_RERUN = 0x1, 0x2, 0x4  # quiver.h's QV_CALL_*
_READONLY = -8  # QV_EREADONLY

def _culprit(value, depth=0):
    """What in value (which cannot be encoded) cannot: the value itself, or
    the first such item in the lists, tuples, sets and dicts it holds."""
    if depth < 32 and isinstance(value, (list, tuple, set, frozenset, dict)):
        items = [x for kv in value.items() for x in kv] if isinstance(value, dict) else value
        for item in items:
            try:
                encode(item)
            except _quiver.EncodeError:
                return _culprit(item, depth + 1)
    return value


# The process that last warned that it computes into a stand-in for another
# process's memory cache: once per process, a forked child included.
_warned_stand_in = None


def _warn_stand_in(name):
    global _warned_stand_in
    if _warned_stand_in == os.getpid():
        return
    _warned_stand_in = os.getpid()
    warnings.warn(f"{name} ran in a worker process under a memory cache, which is private to the process that "
                  f"made it: this process stores into its own empty one and nothing is shared (this warning is "
                  f"given once per process); set QUIVER_CACHE or use Cache.open(...) for a cache every process "
                  f"shares", QuiverWarning, stacklevel=4)


_warned_readonly = weakref.WeakSet()


def _warn_unstored(name, cache, outcome, why):
    # A read-only cache is said once per cache; anything else (a full disk,
    # an unencodable result) every time, since it can change.
    if outcome == _READONLY:
        if cache in _warned_readonly:
            return
        _warned_readonly.add(cache)
        why = (f"the cache {cache.path} is read-only: results are computed but not stored "
               f"(this warning is given once per cache); open it without readonly=True, or make another "
               f"cache active with quiver.cache(...)")
    elif outcome == _quiver.QV_EENCODE:
        why = f"{why}; return a value quiver can encode, or register an encoder for its type"
    elif outcome == _quiver.QV_EFULL:
        why = f"{why}; give the cache more room (max_bytes=, map_size= at Cache.open) or free some (evict, gc)"
    else:  # the storage or the system failed: the message says how
        why = f"{why}; the call runs again next time (check the cache with cache.verify())"
    warnings.warn(f"{name}: the result was returned but not stored: {why}", QuiverWarning, stacklevel=4)


def _show(args, kwargs):
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def memo(fn=None, *, name=None, version=None, ignore=(), require=None, isolate=False, meta=None, dedup=True,
         wait_timeout=None):
    """Memoize fn into the active cache: @memo, or @memo(name=, version=,
    ignore=, require=, isolate=, meta=).

    name: what calls are stored under (default module.qualname: give one to
    share entries with other languages; required, else TypeError, for
    lambdas and functions defined inside functions); version: a new one reruns everything;
    ignore: parameters left out of the call's identity; require: parameters
    that must be passed explicitly for the call to be cached; isolate: run
    each call in a fresh temporary working directory; meta: metadata stored
    with every call; dedup: when several threads or processes miss the same
    call at once, one runs it and the others wait for its result (False: each
    runs it); wait_timeout: the longest such wait in seconds (None: 10
    minutes), after which the waiter runs the call itself."""
    def wrap(f):
        return Memo(f, name=name, version=version, ignore=ignore, require=require, isolate=isolate, meta=meta,
                    dedup=dedup, wait_timeout=wait_timeout)
    return wrap if fn is None else wrap(fn)
