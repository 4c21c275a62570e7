"""@memo: memoized functions."""
import concurrent.futures
import contextvars
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

class _Rerun(set):
    """The digests of the calls rerun so far inside one Memo.rerun (in this
    thread or task): each memoized call made in it runs again once and
    stores its new result, then hits, as in Lua, so a recursive memo reruns
    in linear time. The C hit path reads it."""
    __hash__ = object.__hash__  # one rerun is one key of the in-flight tasks

    def __bool__(self):
        return True


_rerunning = contextvars.ContextVar("quiver_rerunning", default=False)
_quiver.MemoBase._set_context_vars(_rerunning, _meta)


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
                 dedup=True, wait_timeout=None, paths="content"):
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
        if version == "code":
            version = _code_version(fn)
        elif version is not None:
            version = str(version)
        if paths not in ("content", "name"):
            raise ValueError(f"paths must be \"content\" (a pathlib.Path argument is keyed by the bytes of its "
                             f"file, or its directory's tree) or \"name\" (by its text alone), not {paths!r}")
        super().__init__(fn, name, version, tuple(pos), tuple(pos_defaults), nposonly, tuple(kwo),
                         tuple(kwo_defaults), var_pos, var_kw, ignore, require, paths == "content")
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
        # meta: a dict stored with every call, or a callable that makes one
        # per call from its arguments (run on a miss, before the function).
        self._meta_fn = meta if callable(meta) else None
        self._static_meta = {} if self._meta_fn else dict(meta or {})
        self._ignore = frozenset(ignore)
        kept = [n for n in pos if n not in ignore]
        self._positions = {n: i for i, n in enumerate(kept)}
        # Every record names its positional arguments (FORMAT.md 6.6), so that
        # a query filters them by name where this module was never imported.
        if kept:
            self._static_meta[_PARAMS] = kept
        # A miss that asks nothing of Python per call runs through the
        # runtime straight from the C hit path, with what _compute would pass.
        if not isolate and self._meta_fn is None:
            self._miss_in_c(encode(self._static_meta) if self._static_meta else None, self._flags, self._wait_ns,
                            concurrent.futures.Future)
        _registry[name] = self
        # What another process needs to make this memo again when it cannot
        # import it by name (quiver.bound._reduce_memo).
        self._options = dict(name=name, version=version, ignore=ignore, require=require, isolate=isolate,
                             meta=meta, dedup=dedup, wait_timeout=wait_timeout, paths=paths)

    # Pickled by reference, as functions are, when another process can import
    # it by name; else (from __main__, a notebook, a closure) by value.
    def __reduce__(self):
        from .bound import _reduce_memo
        return _reduce_memo(self)

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
            self._warn_uncached(signal, args, kwargs, 3)
        return self._run(args, kwargs)

    def _warn_uncached(self, err, args, kwargs, stacklevel):
        named = self._unencodable(args, kwargs)
        warnings.warn(f"{named}; running uncached ({err})" if named else
                      f"{self.name}: running uncached, an argument cannot be encoded: {err}; pass "
                      f"ignore=[...] for it or register an encoder (quiver.register)",
                      QuiverWarning, stacklevel=stacklevel)

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

    def _meta_bytes(self, args, kwargs):
        """The metadata stored with this call: the memo's meta= (a dict, or
        what its callable makes of the call's arguments), overridden key by
        key by the active quiver.meta(...)."""
        m = current_meta()
        if self._static_meta or self._meta_fn is not None:
            mine = dict(self._static_meta)
            if self._meta_fn is not None:
                mine.update(self._call_meta(args, kwargs))
            m = {**mine, **m}
        return encode(m) if m else None

    def _call_meta(self, args, kwargs):
        """meta=(arguments) for this call: arguments maps every parameter name
        to its value, defaults applied (fleche's call.arguments)."""
        try:
            bound = self.__signature__.bind(*args, **kwargs)
        except TypeError:
            return {}  # the call does not bind: the function raises, nothing is stored
        bound.apply_defaults()
        extra = self._meta_fn(dict(bound.arguments))
        if extra is None:
            return {}
        if not isinstance(extra, dict):
            raise TypeError(f"{self.name}: meta= returned a {type(extra).__name__}; it must return a dict "
                            f"(or None) of metadata for the call")
        return extra

    def _compute(self, cache, args, kwargs, store_in=None, rerun=False, stacklevel=5):
        """A miss through the call runtime (DESIGN section 12): run once across
        threads and processes, store, and return the result; a result that
        cannot be kept is returned all the same, with a warning at the
        caller's line (stacklevel: its frame, counted from _warn_unstored)."""
        target = store_in if store_in is not None else cache
        while target._stack:  # a stack writes to its first cache
            target = target._layers[0]
        start, t0 = time.time_ns(), time.perf_counter_ns()
        flags = self._flags | (_CALL_RERUN if rerun or _rerunning.get() else 0)
        done = self._run_call(target, args, kwargs, self._run, self._meta_bytes(args, kwargs), flags, self._wait_ns,
                              concurrent.futures.Future)
        if done is None:  # the call does not bind: let the function say why
            return self._run(args, kwargs)
        outcome, result, why = done
        if getattr(target, "_stand_in", False):
            _warn_stand_in(self.name)
        return self._ran(target, args, kwargs, outcome, result, why, start, t0, stacklevel)

    def _ran(self, target, args, kwargs, outcome, result, why, start, t0, stacklevel):
        """What a miss the runtime ran gives: its result, with a warning when
        it was not stored; a future's result is stored when it completes.
        stacklevel: the caller's frame, counted from _warn_unstored."""
        if isinstance(result, concurrent.futures.Future) and outcome < 0:
            return self._store_when_done(target, args, kwargs, result, start, t0)
        if outcome < 0:
            _warn_unstored(self.name, target, outcome, why, stacklevel)
        return result

    def _store_when_done(self, cache, args, kwargs, future, start, t0):
        """A future that completes with future, once its result is stored.

        The caller never sees the function's own future: that one wakes its
        waiters before it runs callbacks, so a call made the moment it
        resolved would miss the store and run again."""
        meta = self._meta_bytes(args, kwargs)
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
        return self._compute(stack, args, kwargs, store_in=stack._layers[0], stacklevel=6)

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
        _quiver.cache_store_raw(first_leaf, encoding, raw, start, duration, self._meta_bytes(args, kwargs))

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
        """Run the call even when stored, and store the new result over the
        old; every memoized call made inside it (in this thread or task) runs
        again once and stores its new result (fleche reruns a call each time
        it is made; here the second time hits what the first stored)."""
        _quiver.MemoBase._rerun_seen()
        token = _rerunning.set(_Rerun())
        try:
            cache = current_cache()
            return self._compute(cache, args, kwargs, store_in=cache._layers[0] if cache._stack else None,
                                 rerun=True)
        finally:
            _rerunning.reset(token)

    def bind(self, *args, **kwargs):
        """A picklable callable that carries the active cache and metadata into
        threads and processes (quiver.BoundWrapper); with arguments, a partial."""
        from .bound import BoundWrapper
        b = BoundWrapper.bind(self)
        return functools.partial(b, *args, **kwargs) if args or kwargs else b


class AsyncMemo(Memo):
    """A memoized coroutine function (@memo on an async def). Calling it gives
    a coroutine: awaited, a hit returns the stored result, and a miss awaits
    the function and stores what it returns.

    Concurrent awaiters of one call (one key, one cache) in one event loop
    share one run: the first starts it as a task, the others await the same
    task (shielded: cancelling one awaiter does not cancel the run the others
    wait for). No lease is waited for across threads or processes, since
    that would block the event loop: another loop or process missing the
    same call at the same time runs it too, and the later store replaces the
    earlier, as with dedup=False."""

    def __init__(self, fn, isolate=False, **options):
        if isolate:
            raise ValueError(f"{getattr(fn, '__qualname__', fn)}: isolate=True changes the process's working "
                             f"directory, which every coroutine of the event loop shares: it cannot isolate an "
                             f"async def; give the coroutine its own directory instead")
        super().__init__(fn, **options)
        self._inflight = {}  # (loop, cache, digest, rerun) ids -> the task that runs it

    def __call__(self, *args, **kwargs):
        return self._acall(args, kwargs, _rerunning.get())

    def rerun(self, *args, **kwargs):
        """A coroutine: run the call even when stored, and store the new result
        over the old; memoized calls awaited inside it run again too."""
        return self._acall(args, kwargs, _Rerun())

    async def _acall(self, args, kwargs, rerun):
        cache = current_cache()
        try:
            again = bool(rerun)  # inside a rerun, each call runs again once
            if again:
                digest = bytes.fromhex(self.digest(*args, **kwargs))
                again = digest not in rerun
                rerun.add(digest)
            if not again:
                r = self._get(cache, args, kwargs)
                if r is _SLOW:
                    hit, r = self._stack_probe(cache, args, kwargs)
                    if hit:
                        return r
                elif r is _UNCACHED:
                    return await self.__wrapped__(*args, **kwargs)
                elif r is not _MISS:
                    return r
            call = self._call(args, kwargs)
        except _quiver.EncodeError as err:
            self._warn_uncached(err, args, kwargs, 3)
            return await self.__wrapped__(*args, **kwargs)
        if call is None:  # the call does not bind: let the function say why
            return await self.__wrapped__(*args, **kwargs)
        target = cache
        while target._stack:  # a stack writes to its first cache
            target = target._layers[0]
        import asyncio
        loop = asyncio.get_running_loop()
        key = (id(loop), id(target), call[0], rerun)  # the task holds both while the key is in use
        task = self._inflight.get(key)
        if task is None:
            # The task runs in a copy of this context: the active cache and
            # metadata, and the rerun, carry over to the calls awaited in it.
            _quiver.MemoBase._rerun_seen()
            token = _rerunning.set(rerun)
            try:
                task = loop.create_task(self._arun(target, args, kwargs))
            finally:
                _rerunning.reset(token)
            self._inflight[key] = task

            def forget(t):
                self._inflight.pop(key, None)
                if not t.cancelled():
                    t.exception()  # every awaiter may have gone: not "never retrieved"
            task.add_done_callback(forget)
        return await asyncio.shield(task)

    async def _arun(self, target, args, kwargs):
        meta = self._meta_bytes(args, kwargs)
        start, t0 = time.time_ns(), time.perf_counter_ns()
        result = await self.__wrapped__(*args, **kwargs)
        try:
            self._store(target, args, kwargs, result, start, time.perf_counter_ns() - t0, meta)
        except (_quiver.EncodeError, _quiver.ReadOnlyError, _quiver.FullError, _quiver.StoreError,
                _quiver.IOError) as err:
            _warn_unstored(self.name, target, getattr(err, "status", _quiver.QV_ESTORE), str(err), 4)
        except _quiver.ClosedError:
            pass  # the cache was closed while the coroutine ran
        if getattr(target, "_stand_in", False):
            _warn_stand_in(self.name)
        return result


def _code_version(fn):
    """version="code": "code:" and the digest of fn's bytecode, constants,
    names and the code objects nested in it (its lambdas, inner functions and
    comprehensions), as joblib notices edits. A comment or a moved line is
    the same version; an edit to the body is another. Stable across
    processes and PYTHONHASHSEED (a frozenset constant is sorted). The code
    of functions it calls is not part of it, nor is the Python version's
    bytecode format: a new interpreter is a new version."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        raise TypeError(f"memo(version=\"code\") needs a Python function (one with __code__), not "
                        f"{type(fn).__name__}: give a version string instead")
    return "code:" + _quiver.digest(_code_items(code))


def _code_items(code):
    return ["code", code.co_code, [_code_const(c) for c in code.co_consts], list(code.co_names),
            list(code.co_varnames), list(code.co_freevars), list(code.co_cellvars), code.co_argcount,
            code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags, getattr(code, "co_exceptiontable", b"")]


def _code_const(c):
    if isinstance(c, types.CodeType):
        return _code_items(c)
    if isinstance(c, tuple):
        return ["tuple", [_code_const(x) for x in c]]
    if isinstance(c, frozenset):  # iterated in hash order: sorted, by the digest of each element
        return ["frozenset", sorted(_quiver.digest(_code_const(x)) for x in c)]
    if c is Ellipsis:
        return ["ellipsis"]
    if isinstance(c, (float, complex)):
        return ["number", repr(c)]  # so that 0.0 and -0.0, 1 and 1.0 stay apart
    return c


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


def _warn_unstored(name, cache, outcome, why, stacklevel):
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
    elif outcome == _quiver.QV_EFULL and "disk is full" in why:
        why = f"{why}; free space on that disk: stores resume on their own"
    elif outcome == _quiver.QV_EFULL:
        why = f"{why}; give the cache more room (max_bytes=, map_size= at Cache.open) or free some (evict, gc)"
    else:  # the storage or the system failed: the message says how
        why = f"{why}; the call runs again next time (check the cache with cache.verify())"
    warnings.warn(f"{name}: the result was returned but not stored: {why}", QuiverWarning, stacklevel=stacklevel)


def _show(args, kwargs):
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def memo(fn=None, *, name=None, version=None, ignore=(), require=None, isolate=False, meta=None, dedup=True,
         wait_timeout=None, paths="content"):
    """Memoize fn into the active cache: @memo, or @memo(name=, version=,
    ignore=, require=, isolate=, meta=).

    name: what calls are stored under (default module.qualname: give one to
    share entries with other languages; required, else TypeError, for
    lambdas and functions defined inside functions); version: a new one reruns everything
    ("code": derived from the function's bytecode, so an edit to its body is a
    new version and a comment is not);
    ignore: parameters left out of the call's identity; require: parameters
    that must be passed explicitly for the call to be cached; isolate: run
    each call in a fresh temporary working directory; meta: metadata stored
    with every call, a dict or a callable that makes one from the call's
    arguments ({parameter name: value}, defaults applied); the active
    quiver.meta(...) wins on a key both give; dedup: when several threads or processes miss the same
    call at once, one runs it and the others wait for its result (False: each
    runs it); wait_timeout: the longest such wait in seconds (None: 10
    minutes), after which the waiter runs the call itself; paths: "content"
    (a pathlib.Path argument is keyed by the bytes of its file, or by its
    directory's tree, so editing the file is a miss) or "name" (by its text).

    An async def gives an AsyncMemo: the awaited result is stored, and
    concurrent awaiters of one call in one event loop share one run."""
    def wrap(f):
        cls = AsyncMemo if inspect.iscoroutinefunction(f) else Memo
        return cls(f, name=name, version=version, ignore=ignore, require=require, isolate=isolate, meta=meta,
                   dedup=dedup, wait_timeout=wait_timeout, paths=paths)
    return wrap if fn is None else wrap(fn)
