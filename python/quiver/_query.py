"""Queries over stored calls: what Cache.query and f.query return, and the
filters they take (docs/DECISIONS.md, "Queries")."""
import builtins
import itertools

from . import _quiver
from ._codec import encode


class _Any:
    """quiver.ANY: a filter value that matches whatever is stored."""
    __slots__ = ()

    def __repr__(self):
        return "quiver.ANY"

    def __reduce__(self):
        return "ANY"


ANY = _Any()

# What a record lacks (an argument it was not called with, a metadata key it
# does not hold): no filter value but a predicate can match it.
_ABSENT = object()


def _is_predicate(v):
    # A class is callable too, but as a filter value it is data: a stored
    # argument may well be a class (decoded by name), never a predicate.
    return callable(v) and not isinstance(v, type)


def _same(got, want):
    """Whether a stored value equals a filter value the way the digest sees
    it: same canonical encoding, so 1, 1.0 and True differ and a tuple
    matches the list it was stored as."""
    if type(got) is type(want):
        try:
            if got == want:
                return True
        except Exception:  # an == that refuses to answer (numpy arrays): the encodings decide
            pass
    try:
        return encode(got) == encode(want)
    except _quiver.Error:
        return False


def match(got, want):
    """Whether a stored value (or _ABSENT) passes the filter value want:
    ANY matches anything stored, a predicate what it calls truthy, anything
    else, None included, what equals it."""
    if want is ANY:
        return got is not _ABSENT
    if _is_predicate(want):
        return got is not _ABSENT and bool(want(got))
    return got is not _ABSENT and _same(got, want)


def matches(record, name=None, arguments=None, metadata=None, result=_ABSENT, where=None):
    """Whether record passes every filter given (each left out matches all)."""
    if name is not None and not match(record.name, name):
        return False
    if arguments:
        args = record.arguments
        if not all(match(args.get(k, _ABSENT), v) for k, v in arguments.items()):
            return False
    if metadata:
        meta = record.metadata
        if not all(match(meta.get(k, _ABSENT), v) for k, v in metadata.items()):
            return False
    if result is not _ABSENT and not match(record.result, result):
        return False
    return where is None or bool(where(record))


def _key(key):
    """A key over records: a callable as it is, a string the argument of that
    name (a record without it sorts and groups under None)."""
    if key is None or callable(key):
        return key
    return lambda r: r.arguments.get(key)


class Query:
    """The records a query matched, read anew from the cache at every pass:
    iterate it (for r in q), or ask count(), only(), first(), latest(),
    results(), sorted(key), groupby(key), filter(predicate), table(), and
    act on them with evict() and transfer(target)."""
    __slots__ = ("_records", "_cache")

    def __init__(self, records, cache=None):
        self._records = records  # () -> an iterable of Records
        self._cache = cache

    def __iter__(self):
        return iter(self._records())

    def __repr__(self):
        return f"<quiver.Query of {self._cache!r}>" if self._cache is not None else "<quiver.Query>"

    def _derive(self, records):
        return Query(records, self._cache)

    def count(self):
        """How many records match."""
        return builtins.sum(1 for _ in self)

    def only(self):
        """The one record that matches: LookupError (quiver.NotFoundError,
        a KeyError) when none does, ValueError when several do."""
        it = iter(self)
        first = next(it, _ABSENT)
        if first is _ABSENT:
            raise _quiver.NotFoundError("the query matched no stored call; only() needs exactly one")
        second = next(it, _ABSENT)
        if second is not _ABSENT:
            n = 2 + builtins.sum(1 for _ in it)
            raise ValueError(f"the query matched {n} stored calls ({first!r}, {second!r}, ...); only() needs "
                             f"exactly one: filter further, or take first() or latest()")
        return first

    def first(self):
        """The first record that matches (in the cache's order; sorted() first
        to choose), or None when none does."""
        return next(iter(self), None)

    def latest(self):
        """The record whose call started last (quiver.NotFoundError when none
        matches)."""
        r = builtins.max(self, key=lambda r: r.start_ns, default=None)
        if r is None:
            raise _quiver.NotFoundError("the query matched no stored call, so it has no latest")
        return r

    def oldest(self):
        """The record whose call started first (quiver.NotFoundError when none
        matches)."""
        r = builtins.min(self, key=lambda r: r.start_ns, default=None)
        if r is None:
            raise _quiver.NotFoundError("the query matched no stored call, so it has no oldest")
        return r

    def results(self):
        """The stored results, one per record."""
        return (r.result for r in self)

    def filter(self, predicate):
        """The records for which predicate(record) is true."""
        return self._derive(lambda: (r for r in self if predicate(r)))

    def sorted(self, key=None, reverse=False):
        """The records sorted by key: a callable on the record, or the name of
        an argument (None: by start time)."""
        k = _key(key) or (lambda r: r.start_ns)
        return self._derive(lambda: builtins.sorted(self, key=k, reverse=reverse))

    def take(self, n):
        """The first n records."""
        return self._derive(lambda: itertools.islice(self, n))

    def groupby(self, key):
        """{value: Query} of the records grouped by key: the name of an argument
        (records without it go under None), or a callable on the record."""
        k = _key(key)
        groups = {}
        for r in self:
            groups.setdefault(k(r), []).append(r)
        return {g: self._derive(lambda rs=rs: rs) for g, rs in groups.items()}

    def table(self, arguments=True, results=True):
        """A pandas DataFrame, one row per record, indexed by digest: columns
        name, version, start (UTC), duration (seconds), lang, then the
        arguments by name (arguments=True; or a list of names; False for
        none; a name that clashes with a column gets the prefix "a_"), the
        result (results=True), and each metadata key."""
        import pandas
        fixed = ["name", "version", "start", "duration", "lang"]
        rows, index = [], []
        wanted = None if arguments is True else [arguments] if isinstance(arguments, str) else \
            list(arguments or ())
        for r in self:
            row = dict(name=r.name, version=r.version, start=r.start, duration=r.duration, lang=r.lang)
            args = r.arguments
            for a in (args if wanted is None else wanted):
                row[f"a_{a}" if a in fixed or a == "result" else a] = args.get(a)
            if results:
                row["result"] = r.result
            for k, v in r.metadata.items():
                row.setdefault(k, v)
            rows.append(row)
            index.append(r.digest)
        df = pandas.DataFrame(rows, index=pandas.Index(index, name="digest"))
        return df.reindex(columns=fixed + [c for c in df.columns if c not in fixed])

    def evict(self):
        """Remove every matching call from its cache; returns how many."""
        if self._cache is None:
            raise TypeError("this query does not know its cache")
        return self._cache.evict(*[r.digest for r in self])

    def transfer(self, target, pop=False, overwrite=False):
        """Copy every matching call into target (Cache.transfer); returns how many."""
        if self._cache is None:
            raise TypeError("this query does not know its cache")
        return self._cache._transfer([r.digest for r in self], target, pop, overwrite)
