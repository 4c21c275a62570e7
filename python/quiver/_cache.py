"""Caches, the active cache and metadata (contextvars), and call records."""
import atexit
import contextvars
import datetime
import os
import pwd
import sys
import stat as _stat
import warnings

from . import _quiver
from ._codec import QuiverWarning, _raw_tags, _untrusted, call_digest, encode
from ._query import _ABSENT, Query, matches

_DURABILITY = {"safe": _quiver.QV_DURABILITY_SAFE, "durable": _quiver.QV_DURABILITY_DURABLE,
               "fast": _quiver.QV_DURABILITY_FAST}

# The core's warnings are QuiverWarnings until the interpreter starts to exit
# (module.c, warnings_to_stderr): then its own stderr line.
atexit.register(_quiver.warnings_to_stderr)

_active = contextvars.ContextVar("quiver.cache")
_meta = contextvars.ContextVar("quiver.meta", default={})
# True while bound.py pickles a binding's cache: a memory cache in it (a
# stack's layer) then travels as a stand-in, which says that nothing is shared
# only when a memoized call computes into it (Memo._compute), not for every
# plain task.
_binding = contextvars.ContextVar("quiver.binding", default=False)


def _who(uid):
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _writable_by_others(path, st, uid):
    """Why someone other than uid or root could change path, or None."""
    if st.st_uid not in (uid, 0):
        # A hard link gives no one write access (that is the inode's owner
        # and mode), but says where a file owned by someone else came from.
        links = f", with {st.st_nlink} links" if not _stat.S_ISDIR(st.st_mode) and st.st_nlink > 1 else ""
        return f"{path} is owned by {_who(st.st_uid)}{links}"
    if st.st_mode & (_stat.S_IWGRP | _stat.S_IWOTH):
        return f"{path} is writable by others than its owner (mode {_stat.S_IMODE(st.st_mode):04o})"
    return None


def _distrust(path):
    """Why a pickle in the cache directory path (absolute, symbolic links
    resolved) could have been put there by someone other than this user or
    root: the directory, data.mdb, lock.mdb, or a directory above it up to
    the first sticky one (as OpenSSH checks authorized_keys); None when
    nobody else could. quiver.leases holds no values and does not count."""
    uid = os.geteuid()
    try:
        why = _writable_by_others(path, os.lstat(path), uid)
        if why:
            return why
        for name in ("data.mdb", "lock.mdb"):
            f = os.path.join(path, name)
            try:
                st = os.lstat(f)
            except FileNotFoundError:
                # No lock file (a read-only filesystem); and in a directory
                # only we may write, no one else can add one.
                continue
            if _stat.S_ISLNK(st.st_mode):
                # Its target's directories are not checked: refused instead.
                return f"{f} is a symbolic link"
            why = _writable_by_others(f, st, uid)
            if why:
                return why
        d = path
        while os.path.dirname(d) != d:
            d = os.path.dirname(d)
            st = os.stat(d)
            # The walk ends at a sticky directory such as /tmp: only an
            # entry's owner, or the directory's, may rename or remove what
            # is in it, so no one else can swap ours from there.
            if st.st_mode & _stat.S_ISVTX and st.st_uid in (uid, 0):
                return None
            why = _writable_by_others(d, st, uid)
            if why:
                return why
    except OSError as e:
        return f"{e.filename} cannot be checked ({e.strerror})"
    return None


def _is_url(path):
    """Whether path names a remote tier (redis://, unix://) rather than a directory:
    anything with "://" goes to the core as it is, which refuses other schemes."""
    return isinstance(path, str) and "://" in path


def _mangled_url(path):
    """Whether path is what pathlib makes of a URL: "redis:/host/0"."""
    head = path.split("/", 1)[0]
    return len(head) > 1 and head.endswith(":") and head[:-1].isalpha() and path.startswith(head + "/")


# In a local cache directory: the URLs of the unsigned remote tiers it was
# stacked over. The stack copies remote hits into it, pickles included, and
# those copies are whatever the remote held: its files (and a signature the
# local tier puts on what it stores) say nothing of where they came from.
_COPIES_MARK = "quiver.remote-copies"


def _copied_from(path):
    """Why the cache directory path holds entries copied from an unsigned
    remote tier, or None."""
    try:
        with open(os.path.join(path, _COPIES_MARK)) as f:
            urls = sorted(set(f.read().split()))
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{e.filename} cannot be read ({e.strerror})"
    return f"{path} holds copies of entries from {', '.join(urls)}, whose entries are not signed"


def _names(path, url):
    """Whether the mark in the cache directory path names url already (a
    stack remade in every worker of a pool appends nothing)."""
    try:
        with open(os.path.join(path, _COPIES_MARK)) as f:
            return url in f.read().split()
    except OSError:
        return False


def _mark_copies(local, remote):
    """Before local is stacked over an untrusted remote: say so in local's
    directory for every later opener, and distrust it from now on here."""
    why = f"{local.path} holds copies of entries from {remote.path}, whose entries are not signed"
    if local.path != ":memory:" and not local.readonly and not _names(local.path, remote.path):
        # (only its existence counts: truncating it trusts nothing again)
        fd = os.open(os.path.join(local.path, _COPIES_MARK), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.write(remote.path + "\n")
    if local._trusted:
        local._distrust = why
        local._trusted = False
        _untrusted.add(local)


def _decide_trust(c, trust_pickle):
    """Decide once, at open, whether c's pickles may be loaded: when told to,
    when its entries are signed with the cache's secret (a forged one is a
    miss before it is decoded, whatever its files or server), else for an
    LMDB cache nobody else could have written (issue 17). A remote tier is
    shared over the network: unsigned, it is never trusted by default; nor
    is a local cache that a stack filled from one (_COPIES_MARK)."""
    if trust_pickle:
        c._distrust = None
    elif _is_url(c.path):
        c._distrust = None if _quiver.cache_signed(c) else \
            f"{c.path} is a remote tier others can write, and its entries are not signed"
    elif c.path == ":memory:":
        c._distrust = None
    else:
        c._distrust = _copied_from(c.path) or (None if _quiver.cache_signed(c) else _distrust(c.path))
    c._trusted = c._distrust is None
    if not c._trusted:
        _untrusted.add(c)


def _restack(local, remote, asynchronous, queue_limit):
    return Cache.stack(local, remote, asynchronous=asynchronous, queue_limit=queue_limit)


# The metadata key under which a Python memo's records name their positional
# arguments (FORMAT.md 6.6); Record.metadata leaves it out.
_PARAMS = "quiver.params"


class Record:
    """One stored call: what was called, with what, what it returned, and when."""
    __slots__ = ("digest", "name", "version", "args", "kwargs", "result", "metadata", "start_ns", "duration_ns",
                 "lang", "params", "hits", "last_hit_ns")

    def __init__(self, digest, d):
        self.digest = digest
        self.name = d["name"]
        self.version = d["version"]
        self.args = tuple(d["args"])
        self.kwargs = d["kwargs"]
        self.result = d["result"]
        meta = d.get("meta") or {}
        params = meta.get(_PARAMS)
        self.params = tuple(params) if isinstance(params, list) and all(isinstance(p, str) for p in params) \
            else None
        self.metadata = {k: v for k, v in meta.items() if k != _PARAMS} if _PARAMS in meta else meta
        self.start_ns = d["start_ns"]
        self.duration_ns = d["duration_ns"]
        self.lang = d["lang"]
        # hits so far (written in batches: see docs/FORMAT.md, the hits table); 0 from a remote tier
        self.hits = d.get("hits", 0)
        self.last_hit_ns = d.get("last_hit_ns", 0)

    @property
    def last_hit(self):
        """When the call was last hit (a timezone-aware datetime, UTC); None if never."""
        return datetime.datetime.fromtimestamp(self.last_hit_ns / 1e9, datetime.timezone.utc) \
            if self.last_hit_ns else None

    @property
    def start(self):
        """When the call started (a timezone-aware datetime, UTC)."""
        return datetime.datetime.fromtimestamp(self.start_ns / 1e9, datetime.timezone.utc)

    @property
    def duration(self):
        """How long the call ran, in seconds."""
        return self.duration_ns / 1e9

    @property
    def arguments(self):
        """{parameter name: value} of the call: positional arguments under the
        names the record keeps (a record stored before it kept them: those of
        a memo of that name made in this process), keyword arguments under
        their own; a positional argument whose name is unknown (an extra one
        of *args) under its position, an int."""
        names = self.params
        if names is None:
            from ._memo import _positions
            names = tuple(_positions(self.name) or ())
        d = {names[i] if i < len(names) else i: v for i, v in enumerate(self.args)}
        d.update(self.kwargs)
        return d

    def __repr__(self):
        return f"Record({self.name!r}, args={self.args!r}, kwargs={self.kwargs!r}, result={self.result!r})"


class Cache(_quiver.CacheHandle):
    """A cache of call results: an LMDB directory shared by every process and
    language (Cache.open), a process-private memory cache (Cache.memory), or
    a stack of caches (Cache.stack). Safe to share between threads."""

    # True on a memory cache made in a worker for its parent's (_stand_in()):
    # a miss into it warns that nothing is shared.
    _stand_in = False


    @classmethod
    def open(cls, path, durability="safe", max_bytes=0, readonly=False, trust_pickle=False, map_size=0,
             timeout=None, secret=None, allow_network_fs=False):
        """Open (creating it unless readonly) the LMDB cache in directory path,
        or the remote tier a URL names: redis://[user:password@]host[:port][/db]
        or unix:///path/to/redis.sock (options after "?": db, prefix, timeout_ms).

        durability: "safe" (default), "durable" (fsync every commit) or "fast";
        max_bytes: evict least recently used calls above this size (0: no limit);
        readonly: refuse every write; trust_pickle: load pickled values even
        when someone other than this user or root could have written them
        (README, "Pickles and trust"); decided now, at open. timeout: seconds
        that bound connecting to a remote tier and each round trip (None: the
        URL's timeout_ms, else 1 s). secret (bytes or str): sign every record
        and value with HMAC-SHA256 under it, and read entries whose signature
        fails as misses (None: QUIVER_SECRET, else unsigned); a signed cache
        is trusted with pickles. allow_network_fs: open an LMDB cache on NFS,
        SMB, Lustre, GPFS, CephFS and the like, which is refused otherwise
        (their locks do not hold between machines: share through a remote
        tier instead); for a directory one machine alone uses. A directory
        this user cannot write opens read-only, with one QuiverWarning."""
        if isinstance(durability, str):
            if durability not in _DURABILITY:
                raise ValueError(f"durability must be one of {sorted(_DURABILITY)}, not {durability!r}")
            durability = _DURABILITY[durability]
        flags = (_quiver.QV_CACHE_READONLY if readonly else 0) | (
            _quiver.QV_CACHE_ALLOW_NETWORK_FS if allow_network_fs else 0)
        if timeout is None:
            timeout_ms = 0
        else:
            if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
                raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
            timeout_ms = max(1, min(int(round(timeout * 1000)), 2**32 - 1))
        if isinstance(secret, str):
            secret = secret.encode()
        elif secret is not None:
            if not isinstance(secret, (bytes, bytearray, memoryview)):
                raise TypeError(f"secret must be bytes or str, not {type(secret).__name__}")
            secret = bytes(secret)
        if secret is not None and not secret:
            raise ValueError("secret must not be empty")
        where = path if _is_url(path) else os.fspath(path)
        if not isinstance(path, (str, bytes)) and isinstance(where, str) and _mangled_url(where):
            raise ValueError(f"{where!r} is a URL that a path object folded (\"//\" became \"/\"): give the URL "
                             "as a string, never as a pathlib.Path")
        c = _quiver.cache_open(where, durability, flags, max_bytes, map_size, timeout_ms, secret)
        # what a copy in another process reopens: the URL as given, password
        # included, since path shows it without one
        c._options = dict(durability=durability, max_bytes=max_bytes, readonly=readonly, trust_pickle=trust_pickle,
                          map_size=map_size, timeout=timeout, secret=secret, allow_network_fs=allow_network_fs)
        c._where = where if _is_url(where) else None
        _decide_trust(c, trust_pickle)
        return c

    @classmethod
    def memory(cls):
        """A new empty cache in this process's memory."""
        c = _quiver.qv_cache_open_memory()
        c._options = None
        return c

    @classmethod
    def stack(cls, *caches, asynchronous=False, queue_limit=1024):
        """Read through every cache in order, write to the first, and copy hits
        from later caches into the first (a fast local cache over a shared one).

        Cache.stack(local, remote) over a remote tier (Cache.open("redis://..."))
        is the core's stack: a call computes once across every machine sharing
        the remote, and when the remote is down the stack goes on from local
        with one QuiverWarning. asynchronous: write the remote from a queue of
        up to queue_limit stores, flushed at close (those dropped when it is
        full are counted in stats()["dropped"]). Its pickles are trusted when
        both caches are signed with a secret, or both are trusted.

        The remote may also be given as its URL: when it cannot be reached now,
        the local cache is returned alone, with one QuiverWarning (a bare
        Cache.open(url) raises instead)."""
        if len(caches) == 2 and _is_url(caches[1]) and isinstance(caches[0], Cache):
            try:
                caches = (caches[0], Cache.open(caches[1]))
            except _quiver.IOError as e:
                warnings.warn(f"the remote tier cannot be reached, so this process works from its local cache "
                              f"alone: {e}", QuiverWarning, stacklevel=2)
                return caches[0]
        if len(caches) < 2 or not all(isinstance(c, Cache) for c in caches):
            raise TypeError("Cache.stack takes two or more caches")
        if not isinstance(queue_limit, int) or isinstance(queue_limit, bool) or not 0 < queue_limit < 2**32:
            raise ValueError(f"queue_limit must be a positive integer, not {queue_limit!r}")
        remote = len(caches) == 2 and not caches[1]._stack and _is_url(caches[1].path)
        if asynchronous and not remote:
            raise ValueError("asynchronous stacks write a remote tier: Cache.stack(local, Cache.open(url), "
                             "asynchronous=True)")
        if remote:
            local, far = caches
            if local._stack:
                raise TypeError("the local cache of a stack over a remote tier is one cache, not a stack")
            if not far._trusted:
                _mark_copies(local, far)
            flags = _quiver.QV_STACK_ASYNC if asynchronous else 0
            s = _quiver.cache_stack(local, far, flags, queue_limit)
            s._tiers = (local, far)
            s._options = None
            s._stack_options = (bool(asynchronous), queue_limit)
            if _quiver.cache_signed(s) or (local._trusted and far._trusted):
                s._distrust = None
            else:
                s._distrust = "; ".join(c._distrust for c in caches if not c._trusted)
            s._trusted = s._distrust is None
            if not s._trusted:
                _untrusted.add(s)
            return s
        s = _quiver.stack_handle()
        s._layers = caches
        s._options = None
        return s

    @classmethod
    def _reopen(cls, path, options):
        return cls.open(path, **options)

    def __reduce__(self):
        if self._stack:
            return (Cache.stack, tuple(self._layers))
        tiers = getattr(self, "_tiers", None)
        if tiers:
            return (_restack, tiers + self._stack_options)
        if self.closed:
            raise _quiver.ClosedError("a closed cache cannot be pickled")
        if self.path == ":memory:":
            if _binding.get():
                return (_stand_in, ())
            warnings.warn("a memory cache is private to its process: the copy is a new, empty memory cache and "
                          "nothing is shared with it; set QUIVER_CACHE or use Cache.open(...) for a cache every "
                          "process shares", QuiverWarning, stacklevel=2)
            return (Cache.memory, ())
        options = getattr(self, "_options", None) or {}
        return (Cache._reopen, (getattr(self, "_where", None) or self.path, options))

    def __repr__(self):
        """<quiver.Cache KIND [PATH], N entries, B bytes>: KIND lmdb, memory,
        redis (a remote tier, its URL without password) or stack (then its
        caches, in order); a closed cache says closed."""
        if self._stack:
            return f"<quiver.Cache stack of {', '.join(map(repr, self._layers))}>"
        tiers = getattr(self, "_tiers", None)
        if tiers:
            mode = ", asynchronous" if self._stack_options[0] else ""
            state = " closed" if self.closed else ""
            return f"<quiver.Cache stack of {tiers[0]!r}, {tiers[1]!r}{mode}{state}>"
        path = getattr(self, "_closed_path", None) if self.closed else self.path
        where = "memory" if path == ":memory:" else f"redis {path!r}" if _is_url(path) else f"lmdb {path!r}"
        if self.closed:
            return f"<quiver.Cache {where} closed>"
        try:
            s = self.stats()
        except _quiver.Error as e:  # closed by another thread meanwhile, or unreadable
            return f"<quiver.Cache {where} ({e})>"
        return f"<quiver.Cache {where}, {s['entries']} entries, {s['bytes']} bytes>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._stack:
            return
        if not self.closed:
            self._closed_path = self.path  # for repr: the handle forgets it
        super().close()

    @property
    def readonly(self):
        """Whether stores are refused: readonly=True, or a directory this
        process cannot write, opened read-only with a warning."""
        if self._stack or self.closed:
            return bool((getattr(self, "_options", None) or {}).get("readonly"))
        return _quiver.cache_readonly(self)

    # -- lookups by call digest -------------------------------------------

    def contains(self, digest):
        """Whether a call with this digest (32 hex characters) is stored."""
        if self._stack:
            return any(c.contains(digest) for c in self._layers)
        return _quiver.qv_cache_contains(self, digest)

    def __contains__(self, digest):
        return self.contains(digest)

    def load(self, digest):
        """The Record of a stored call; KeyError when there is none."""
        if self._stack:
            for c in self._layers:
                try:
                    return c.load(digest)
                except KeyError:
                    pass
            raise _quiver.NotFoundError(f"no call with digest {digest} in the cache stack")
        try:
            return Record(digest, _quiver.cache_load(self, digest))
        except _quiver.NotFoundError:
            raise _quiver.NotFoundError(f"no call with digest {digest} in {self.path}") from None

    def query(self, name=None, metadata=None, *, result=_ABSENT, where=None, arguments=None, **kwargs):
        """A Query (iterable, with count(), only(), first(), latest(), results(),
        sorted(), groupby(), table(), evict(), transfer()) of the stored calls
        that pass every filter given:

        name: the function's name; metadata: {key: value}; result: the
        stored result; keyword arguments (or arguments={...}, for a parameter
        called name, metadata, result, where or arguments): argument values
        by parameter name. A filter value is compared as the digest sees it
        (1, 1.0 and True differ), None included: None matches None.
        quiver.ANY matches any stored value, a callable (not a class) is a
        predicate on the stored value, and where= a predicate on the Record.
        The records are read anew at every pass over the query."""
        args = dict(arguments or {})
        args.update(kwargs)
        filters = dict(name=name, arguments=args, metadata=metadata, result=result, where=where)
        return Query(lambda: self._records(filters), self)

    def _records(self, filters):
        if self._stack:
            seen = set()
            for c in self._layers:
                for r in c._records(filters):
                    if r.digest not in seen:
                        seen.add(r.digest)
                        yield r
            return
        name = filters["name"]
        for d in _quiver.cache_query(self, name if isinstance(name, str) else None):
            try:
                r = self.load(d)
            except KeyError:  # evicted since the query ran
                continue
            if matches(r, **filters):
                yield r

    def _digests(self):
        """The digests of every stored call."""
        if self._stack:
            return list(dict.fromkeys(d for c in self._layers for d in c._digests()))
        return _quiver.cache_query(self, None)

    def table(self, name=None, metadata=None, **arguments):
        """The query's records as a pandas DataFrame, one row per call (Query.table)."""
        return self.query(name, metadata, **arguments).table()

    def evict(self, *digests, name=None):
        """Remove calls by digest, or every call of one function name; returns
        how many were removed."""
        if self._stack:
            return sum(c.evict(*digests, name=name) for c in self._layers)
        keys = list(digests)
        if name is not None:
            keys += _quiver.cache_query(self, name)
        n = 0
        for k in keys:
            try:
                _quiver.qv_cache_evict(self, k)
                n += 1
            except _quiver.NotFoundError:
                pass
        return n

    def clear(self):
        """Remove every stored call (and the values only they used); returns
        how many calls were removed. A stack clears each of its caches."""
        if self._stack:
            return sum(c.clear() for c in self._layers)
        tiers = getattr(self, "_tiers", None)
        if tiers:
            return max(t.clear() for t in tiers)
        n = self.evict(*_quiver.cache_query(self, None))
        if not _is_url(self.path):  # a remote tier keeps no values apart to collect
            self.gc()
        return n

    def __len__(self):
        """How many calls are stored (in a stack: distinct calls over its caches)."""
        if self._stack or getattr(self, "_tiers", None) or _is_url(self.path):
            return len(self._digests())
        return self.stats()["entries"]

    def __bool__(self):
        return True  # a cache is a cache, empty or not

    def filter(self, predicate):
        """A read-only view of this cache that holds only the calls whose Record
        passes predicate(record): hits, load, contains and query see those
        alone; a memoized call that misses in it runs and returns its result
        unstored (with one QuiverWarning), and evict, clear and transfer into
        it raise quiver.ReadOnlyError. Use it with quiver.cache(view)."""
        if not callable(predicate):
            raise TypeError(f"Cache.filter takes a predicate on a Record, not {type(predicate).__name__}")
        return FilteredCache._make(self, predicate)

    def transfer(self, target, pop=False, overwrite=False):
        """Copy every stored call into the cache target (memory, LMDB, a remote
        tier, a stack: into its first cache), record, result and metadata as
        they are. A call target holds already is left alone unless
        overwrite; pop removes each call copied from this cache. Returns how
        many were copied."""
        return self._transfer(self._digests(), target, pop, overwrite)

    def _holder(self, digest):
        """The cache (not a stack) that holds digest, or None."""
        if not self._stack:
            return self if self.contains(digest) else None
        for c in self._layers:
            h = c._holder(digest)
            if h is not None:
                return h
        return None

    def _transfer(self, digests, target, pop, overwrite):
        if not isinstance(target, Cache):
            raise TypeError(f"transfer needs a quiver.Cache to copy into, not {type(target).__name__}")
        if pop and isinstance(self, FilteredCache):
            raise _quiver.ReadOnlyError("a filtered view is read-only: transfer(pop=True) cannot remove from it")
        sink = target
        while sink._stack:
            sink = sink._layers[0]
        if target.readonly or sink.readonly:
            raise _quiver.ReadOnlyError(f"transfer: {target!r} is read-only")
        n = 0
        for d in digests:
            if not overwrite and target.contains(d):
                continue
            holder = self._holder(d)
            raw = None if holder is None else _quiver.cache_get_raw(holder, d)
            if raw is None:  # evicted meanwhile
                continue
            token = _raw_tags.set(True)
            try:
                rec = _quiver.cache_load(holder, d)
            finally:
                _raw_tags.reset(token)
            # The record keeps the call's parts, not its bytes (FORMAT.md 6.3):
            # rebuilt, they must give back its digest, or the copy would sit
            # under a key no call ever looks up.
            if call_digest(rec["name"], rec["version"], rec["args"], rec["kwargs"]) != d:
                warnings.warn(f"transfer: {rec['name']} call {d} was not copied: its record does not rebuild "
                              f"the call it is stored under", QuiverWarning, stacklevel=3)
                continue
            call = _quiver.call_encoding(rec["name"], rec["version"], rec["args"], rec["kwargs"])
            meta = rec.get("meta")
            _quiver.cache_store_raw(sink, call, raw, rec["start_ns"], rec["duration_ns"],
                                    encode(meta) if meta else None)
            n += 1
            if pop:
                self.evict(d)
        return n

    def gc(self):
        """Remove values no call refers to; returns how many were freed."""
        if self._stack:
            return sum(c.gc() for c in self._layers)
        if getattr(self, "_tiers", None):
            return self._tiers[0].gc()  # a remote tier keeps no reference counts to collect
        return _quiver.qv_cache_gc(self)

    def verify(self, repair=False):
        """Check every record and value; returns how many were bad (removed with repair).
        A stack checks each of its caches and returns the total; a stack over a
        remote tier checks its local cache (the remote's entries are checked as
        they are read)."""
        if self._stack:
            return sum(c.verify(repair) for c in self._layers)
        if getattr(self, "_tiers", None):
            return self._tiers[0].verify(repair)  # a remote entry is checked as it is read
        return _quiver.qv_cache_verify(self, int(repair))

    def sync(self):
        """Write buffered state to disk (for durability "fast"); a stack syncs each of its caches."""
        if self._stack:
            for c in self._layers:
                c.sync()
            return
        _quiver.qv_cache_sync(self)

    def stats(self):
        """Counters: hits, misses, entries, values, bytes, max_bytes, stores, ..."""
        if self._stack:
            return [c.stats() for c in self._layers]
        return _quiver.cache_stats(self)

    def function_stats(self):
        """What every process did, by function name: {name: {"hits", "misses",
        "stores", "evictions", "corrupt", "saved_ns"}}, kept in the cache
        (``quiver stats`` shows them). A handle writes its counts in batches;
        sync() writes them now. A stack gives its local cache's; a remote tier
        keeps none."""
        if self._stack:
            return self._layers[0].function_stats()
        return _quiver.function_stats(self)


class _Refusing(Cache):
    """The cache a filtered view hands a memoized call to store into: an empty
    read-only memory cache, so the call runs and its result is returned
    unstored, with the read-only warning naming the view."""

    @property
    def path(self):
        return self._view_of


class FilteredCache(Cache):
    """Cache.filter(predicate): a read-only view of a cache that holds only the
    calls whose Record passes the predicate."""

    @classmethod
    def _make(cls, source, predicate):
        sink = Cache.open(":memory:", readonly=True)
        sink.__class__ = _Refusing
        sink._view_of = "a filtered view (Cache.filter)"
        v = cls()
        # A stack to the core, so that a memoized call comes to Python
        # (Memo._stack_probe asks _probe_call) and stores into its first cache.
        v._stack = True
        v._trusted = source._trusted
        v._layers = (sink, source)
        v._source = source
        v._predicate = predicate
        v._options = None
        return v

    def __reduce__(self):
        return (_filtered, (self._source, self._predicate))

    def __repr__(self):
        return f"<quiver.Cache view of {self._source!r} filtered by " \
               f"{getattr(self._predicate, '__qualname__', repr(self._predicate))}>"

    def close(self):
        pass  # the view owns nothing: its cache is closed by its owner

    @property
    def readonly(self):
        return True

    def _passes(self, record):
        return bool(self._predicate(record))

    def contains(self, digest):
        try:
            self.load(digest)
        except KeyError:
            return False
        return True

    def load(self, digest):
        r = self._source.load(digest)
        if not self._passes(r):
            raise _quiver.NotFoundError(f"the call with digest {digest} is filtered out of this view")
        return r

    def _probe_call(self, memo, args, kwargs):
        """(True, result) when memo's call is stored and passes the filter, else (False, None)."""
        try:
            call = memo._call(args, kwargs)
        except _quiver.EncodeError:
            return False, None
        if call is None:
            return False, None
        try:
            return True, self.load(call[0]).result
        except KeyError:
            return False, None

    def _records(self, filters):
        return (r for r in self._source._records(filters) if self._passes(r))

    def _digests(self):
        return [r.digest for r in self._records(dict(name=None))]

    def _holder(self, digest):
        return self._source._holder(digest) if self.contains(digest) else None

    def __len__(self):
        return len(self._digests())

    def _refuse(self, *args, **kwargs):
        raise _quiver.ReadOnlyError("a filtered view of a cache is read-only: evict or clear the cache itself")

    evict = clear = gc = _refuse

    def verify(self, repair=False):
        if repair:
            self._refuse()
        return self._source.verify()

    def sync(self):
        pass

    def stats(self):
        return self._source.stats()


def _filtered(source, predicate):
    return source.filter(predicate)


# A handle writes its counts (totals, hits, a limitless cache's size) once
# per period and on close, and the core writes those of every open cache at
# exit(). A multiprocessing worker ends in os._exit instead, so one of its
# finalizers asks the core for the same (docs/DECISIONS.md).
_finalizer_pid = None
_after_fork_set = False


def _flush_in_workers():
    """A multiprocessing worker runs its finalizers as it ends, but a fork
    worker's are cleared as it starts: they are made again after each fork
    multiprocessing makes. Nothing is imported in a process that never
    imported multiprocessing."""
    global _finalizer_pid, _after_fork_set
    util = sys.modules.get("multiprocessing.util")
    if util is None or _finalizer_pid == os.getpid():
        return
    _finalizer_pid = os.getpid()
    util.Finalize(None, _quiver.qv_cache_flush_all, exitpriority=10)
    if not _after_fork_set:
        _after_fork_set = True
        util.register_after_fork(_flush_in_workers, _refinalize)


def _refinalize(_):
    global _finalizer_pid
    _finalizer_pid = None
    _flush_in_workers()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_flush_in_workers)
_flush_in_workers()


def _stand_in():
    """A new memory cache standing in for another process's memory cache."""
    c = Cache.memory()
    c._stand_in = True
    return c


def _default():
    c = _quiver.cache_default()
    c._options = {}
    if c.path != ":memory:":
        _decide_trust(c, False)
    return c


class _Setter:
    """Sets a context variable now; as a context manager, restores it on exit."""
    __slots__ = ("_var", "_token", "value")

    def __init__(self, var, value):
        self._var = var
        self.value = value
        self._token = var.set(value)

    def __enter__(self):
        return self.value

    def __exit__(self, *exc):
        self._var.reset(self._token)


def cache(c):
    """Make c the active cache of this thread or task (contextvars). Used as
    `with cache(c):` it lasts for the block; called alone it stays."""
    if not isinstance(c, Cache):
        raise TypeError(f"cache() takes a quiver.Cache, not {type(c).__name__}")
    return _Setter(_active, c)


def meta(**kv):
    """Record kv (merged over the current metadata) with every call stored
    while it is active; `with meta(project="p1"):` or sticky like cache()."""
    merged = dict(_meta.get())
    merged.update(kv)
    encode(merged)  # refuse unencodable metadata here, not at the first store
    return _Setter(_meta, merged)


def current_cache():
    """The active Cache: the one set by cache(), else the default: the C
    library's, shared by every language in this process and every process on
    the machine (QUIVER_CACHE when set, else $XDG_CACHE_HOME/quiver, that is
    ~/.cache/quiver; QUIVER_CACHE=:memory: for a memory cache private to this
    process)."""
    c = _active.get(None)
    if c is None:
        c = _quiver_default()
    return c


_default_cache = None


def _quiver_default():
    global _default_cache
    if _default_cache is None:
        _default_cache = _default()
    return _default_cache


def current_meta():
    """The active metadata dict."""
    return _meta.get()
