"""The value mapping of DESIGN section 3 for what C does not encode natively.

Everything here runs only for objects the C encoder does not know (the slow
path): plain ints, floats, text, bytes, lists, tuples, dicts and sets never
reach it. The tags are documented in docs/FORMAT.md section 3.3."""
import contextvars
import dataclasses
import datetime
import enum
import importlib
import io
import os
import pickle
import sys
import weakref
from collections import namedtuple

from . import _quiver

PICKLE_TAG = 0x51560002
REGISTERED_TAG = 0x51560004  # [type name, encoder(obj)]: a type the user registered
NDARRAY_TAG = 40
# Tags registered with IANA whose meaning fits a Python type exactly.
DATETIME_TAG = 0        # RFC 8949 3.4.1: RFC 3339 text, with its UTC offset
DECIMAL_TAG = 4         # RFC 8949 3.4.4: [exponent, mantissa]
RATIONAL_TAG = 30       # [numerator, denominator > 0]
UUID_TAG = 37           # 16 bytes
DATE_TAG = 1004         # RFC 8943: full-date text
# The project's own, for what no registered tag says exactly.
DATACLASS_TAG = 0x51560005   # ["module:qualname", {field: value}]
ENUM_TAG = 0x51560006        # ["module:qualname", member value]
NAMEDTUPLE_TAG = 0x51560007  # ["module:qualname", [items]]
PATH_TAG = 0x51560008        # ["module:qualname", text]
LOCAL_DATETIME_TAG = 0x51560009  # naive datetime: ISO 8601 text without offset
TIME_TAG = 0x5156000A        # naive time of day: ISO 8601 text
TIMEDELTA_TAG = 0x5156000B   # [days, seconds, microseconds], normalized as Python does
COMPLEX_TAG = 0x5156000C     # [real, imaginary], two floats
DECIMAL_TEXT_TAG = 0x5156000D  # a Decimal tag 4 cannot hold (NaN, infinities, -0): its text
PATH_CONTENT_TAG = 0x5156000E  # ["module:qualname", text, digest of what it holds]: memo keys only



class QuiverWarning(UserWarning):
    """Something quiver did instead of what was asked: a call run uncached, a
    corrupt entry read as a miss, a memory cache that cannot be shared."""


class UntrustedPickleError(_quiver.Error):
    """A pickle read from a cache that someone else could have written: not
    loaded, since unpickling runs code. A memoized call reads it as a miss
    with a QuiverWarning that says which file, owner or mode; Cache.load and
    decode raise it."""


class Tag(namedtuple("Tag", "tag value")):
    """A CBOR tag quiver gives no Python meaning to; it encodes back as itself."""
    __slots__ = ()


# Open caches whose pickles are refused, each with _distrust saying why: the
# decoder is not told which cache it reads, so a refusal names them all.
_untrusted = weakref.WeakSet()

_by_type = {}   # type -> (name, encoder)
_by_name = {}   # name -> decoder


def register(type_, encoder, decoder):
    """Encode instances of type_ as encoder(obj) (any encodable value) and
    decode them with decoder(value), instead of pickling them. Both sides of a
    shared cache must register the same pair; other languages see the tag
    0x51560004 with [type name, value]."""
    name = f"{type_.__module__}.{type_.__qualname__}"
    _by_type[type_] = (name, encoder)
    _by_name[name] = decoder


def _ndarray(obj):
    np = sys.modules.get("numpy")
    if np is None or not isinstance(obj, np.ndarray):
        return None
    _quiver.set_ndarray_type(np.ndarray)
    if obj.dtype.kind in "iuf" and obj.dtype.itemsize in (1, 2, 4, 8):
        if type(obj) is not np.ndarray:
            obj = obj.view(np.ndarray)
        # Little-endian C order, whatever the array's own layout.
        return np.ascontiguousarray(obj, dtype=obj.dtype.newbyteorder("<"))
    return None


def _type_name(t):
    return f"{t.__module__}:{t.__qualname__}"


def _encode_datetime(obj):
    if obj.fold:
        return None  # fold changes nothing in UTC but is part of the value: pickle keeps it
    tz = obj.tzinfo
    if tz is None:
        return Tag(LOCAL_DATETIME_TAG, obj.isoformat())
    # Only a fixed offset, in whole minutes and without a name of its own, is
    # exactly what RFC 3339 says; a zone (zoneinfo) changes its offset with
    # the date, so it is pickled (by its key) instead.
    if type(tz) is datetime.timezone:
        off = tz.utcoffset(None)
        if not off % datetime.timedelta(minutes=1) and tz == datetime.timezone(off) \
                and tz.tzname(None) == datetime.timezone(off).tzname(None):
            return Tag(DATETIME_TAG, obj.isoformat())
    return None


def _encode_time(obj):
    if obj.tzinfo is None and not obj.fold:
        return Tag(TIME_TAG, obj.isoformat())
    return None


def _encode_decimal(obj):
    if obj.is_finite() and not (obj.is_zero() and obj.is_signed()):
        sign, digits, exp = obj.as_tuple()
        mantissa = int("".join(map(str, digits)))
        return Tag(DECIMAL_TAG, [exp, -mantissa if sign else mantissa])
    return Tag(DECIMAL_TEXT_TAG, str(obj))


# By exact type: subclasses (pandas.Timestamp is a datetime) may hold more.
_EXACT = {
    complex: lambda c: Tag(COMPLEX_TAG, [c.real, c.imag]),
    datetime.datetime: _encode_datetime,
    datetime.date: lambda d: Tag(DATE_TAG, d.isoformat()),
    datetime.time: _encode_time,
    datetime.timedelta: lambda d: Tag(TIMEDELTA_TAG, [d.days, d.seconds, d.microseconds]),
}
# Types of modules quiver does not import: nothing can be one before its module is loaded.
_LATER = {"uuid": ("UUID", lambda u: Tag(UUID_TAG, u.bytes)),
          "decimal": ("Decimal", _encode_decimal),
          "fractions": ("Fraction", lambda f: Tag(RATIONAL_TAG, [f.numerator, f.denominator]))}


def _exact(t):
    f = _EXACT.get(t)
    if f is None and _LATER:
        for mod in [m for m in _LATER if m in sys.modules]:
            attr, fn = _LATER.pop(mod)
            _EXACT[getattr(sys.modules[mod], attr)] = fn
        f = _EXACT.get(t)
    return f


def _encode_object(obj):
    """The tagged form of a dataclass, enum, named tuple or path, else None."""
    t = type(obj)
    if isinstance(obj, enum.Enum):
        return Tag(ENUM_TAG, [_type_name(t), obj._value_])
    fields = getattr(t, "__dataclass_fields__", None)
    if fields is not None:
        return Tag(DATACLASS_TAG, [_type_name(t), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}])
    if isinstance(obj, tuple) and hasattr(t, "_fields") and hasattr(t, "_make"):
        return Tag(NAMEDTUPLE_TAG, [_type_name(t), list(obj)])
    pathlib = sys.modules.get("pathlib")
    if pathlib is not None and isinstance(obj, pathlib.PurePath):
        return Tag(PATH_TAG, [_type_name(t), str(obj)])
    return None


def _path_content(path):
    """The 16-byte digest of what path holds: a file's bytes (XXH3-128, hashed
    in C without the GIL), a directory's tree (every entry's name relative to
    it, sorted, with its file's digest, or a symbolic link's target), or None
    when nothing is there (an output the call is yet to write) or it is a
    device, FIFO or socket (whose bytes may never end): keyed by its name."""
    try:
        if path.is_dir():
            return _quiver.digest(["quiver/tree/v1", _tree(os.fspath(path))], True)
        return bytes.fromhex(_quiver.qv_digest_file(os.fspath(path)))
    except (_quiver.NotFoundError, _quiver.InvalidArgumentError):
        return None
    except (OSError, _quiver.Error) as e:
        raise _quiver.EncodeError(f"cannot key the path {str(path)!r} by its content: {e}; pass paths=\"name\" "
                                  f"to memo to key paths by their name") from e


def _tree(top):
    entries = []

    def fail(e):
        raise e
    for here, dirs, files in os.walk(top, onerror=fail):
        rel = os.path.relpath(here, top)
        for name in dirs + files:
            full = os.path.join(here, name)
            shown = (name if rel == "." else os.path.join(rel, name)).replace(os.sep, "/")
            if name in files:  # a link to a file is keyed by the file it names
                try:
                    entries.append([shown, "file", bytes.fromhex(_quiver.qv_digest_file(full))])
                except _quiver.NotFoundError:
                    entries.append([shown, "link", os.readlink(full)])  # a dangling link
                except _quiver.InvalidArgumentError:
                    entries.append([shown, "other", None])  # a device, FIFO or socket
            elif os.path.islink(full):  # os.walk does not follow it
                entries.append([shown, "link", os.readlink(full)])
            else:
                entries.append([shown, "dir", None])
    # os.walk's order is the file system's: sorted by name, as bytes (what a
    # name is on disk), so every machine lists a tree alike.
    entries.sort(key=lambda e: os.fsencode(e[0]))
    return entries


class _CanonicalPickler(pickle._Pickler):
    """A pickler whose bytes do not depend on PYTHONHASHSEED: sets and dicts
    are written sorted (elements, or keys, of one type among str, bytes and
    int by value; others by their own canonical pickles), not in hash or
    insertion order (which a set of strings decides).

    The pure-Python pickler, because the C one writes sets and dicts without
    asking any hook; it runs only for what has no native encoding."""
    dispatch = dict(pickle._Pickler.dispatch)

    def _sorted(self, items, key=lambda x: x):
        items = list(items)
        kind = type(key(items[0])) if items else None
        if kind in (str, bytes, int) and all(type(key(x)) is kind for x in items):
            return sorted(items, key=key)  # the usual case, without a pickle per key
        return sorted(items, key=lambda x: _canonical_pickle(key(x)))

    def save_set(self, obj):
        self.save_reduce(type(obj), (self._sorted(obj),), obj=obj)

    def save_dict(self, obj):
        self.write(pickle.EMPTY_DICT)
        self.memoize(obj)
        self._batch_setitems(iter(self._sorted(obj.items(), key=lambda kv: kv[0])))

    dispatch[set] = save_set
    dispatch[frozenset] = save_set
    dispatch[dict] = save_dict


def _canonical_pickle(obj):
    f = io.BytesIO()
    _CanonicalPickler(f, protocol=5).dump(obj)
    return f.getvalue()


def _encode_hook(obj, keyed=True):
    """What to encode in place of obj, which has no native encoding. keyed:
    its bytes must be the same in every process (an argument, or anything a
    digest is asked of); a stored result need not be, and pickles faster.
    keyed == 2: the arguments of a memo that keys paths by their content."""
    entry = _by_type.get(type(obj))
    if entry is not None:
        name, encoder = entry
        return Tag(REGISTERED_TAG, [name, encoder(obj)])
    if keyed == 2:
        pathlib = sys.modules.get("pathlib")
        if pathlib is not None and isinstance(obj, pathlib.Path):
            return Tag(PATH_CONTENT_TAG, [_type_name(type(obj)), str(obj), _path_content(obj)])
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    arr = _ndarray(obj)
    if arr is not None:
        return arr
    f = _exact(type(obj))
    try:
        tagged = f(obj) if f is not None else _encode_object(obj)
    except AttributeError:
        tagged = None  # a dataclass field never set (init=False): pickle says what there is
    if tagged is not None:
        return tagged
    try:
        return Tag(PICKLE_TAG, _canonical_pickle(obj) if keyed else pickle.dumps(obj, protocol=5))
    except Exception as e:
        raise _quiver.EncodeError(f"cannot encode or pickle an object of type {type(obj).__qualname__}: {e}") from e


def _class(name, trusted):
    """The class named "module:qualname", or None. Modules are imported only
    for a trusted cache: importing runs the module's code."""
    module, _, qualname = name.partition(":")
    m = sys.modules.get(module)
    if m is None and trusted:
        try:
            m = importlib.import_module(module)
        except Exception:
            return None
    obj = m
    for part in qualname.split(".") if m is not None else ():
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) else None


def _decode_object(tag, value, trusted):
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
        return None
    cls = _class(value[0], trusted)
    if cls is None or _type_name(cls) != value[0]:
        return None
    content = value[1]
    if tag == ENUM_TAG and issubclass(cls, enum.Enum):
        return cls(content)
    if tag == DATACLASS_TAG and dataclasses.is_dataclass(cls) and isinstance(content, dict):
        if {f.name for f in dataclasses.fields(cls)} != set(content):
            return None  # the class changed since: its fields are not these
        # As pickle does: the stored state, without running __init__ or __post_init__.
        obj = cls.__new__(cls)
        for k, v in content.items():
            object.__setattr__(obj, k, v)
        return obj
    if tag == NAMEDTUPLE_TAG and issubclass(cls, tuple) and hasattr(cls, "_make") and isinstance(content, list):
        return cls._make(content)
    if tag == PATH_TAG and isinstance(content, str):
        pathlib = sys.modules.get("pathlib")
        if pathlib is not None and issubclass(cls, pathlib.PurePath):
            p = cls(content)
            return p if str(p) == content else None
    return None


def _decode_iso(parse, value, aware):
    if isinstance(value, str):
        x = parse(value)
        if x.isoformat() == value and (getattr(x, "tzinfo", None) is not None) == aware:
            return x
    return None


def _decode_decimal(value):
    import decimal
    if isinstance(value, list) and len(value) == 2 and all(type(x) is int for x in value):
        exp, mantissa = value
        return decimal.Decimal((int(mantissa < 0), tuple(map(int, str(abs(mantissa)))), exp))
    return None


def _decode_decimal_text(value):
    import decimal
    if isinstance(value, str):
        d = decimal.Decimal(value)
        if str(d) == value and _encode_decimal(d).tag == DECIMAL_TEXT_TAG:
            return d
    return None


def _decode_fraction(value):
    if isinstance(value, list) and len(value) == 2 and all(type(x) is int for x in value) and value[1] > 0:
        import fractions
        f = fractions.Fraction(*value)
        # Not in lowest terms: kept as the tag, so that it encodes back to these bytes.
        return f if [f.numerator, f.denominator] == value else None
    return None


def _decode_uuid(value):
    if isinstance(value, bytes) and len(value) == 16:
        import uuid
        return uuid.UUID(bytes=value)
    return None


def _decode_timedelta(value):
    if isinstance(value, list) and len(value) == 3 and all(type(x) is int for x in value):
        d = datetime.timedelta(*value)
        return d if [d.days, d.seconds, d.microseconds] == value else None
    return None


def _decode_complex(value):
    if isinstance(value, list) and len(value) == 2 and all(type(x) is float for x in value):
        return complex(*value)
    return None


_DECODERS = {
    DATETIME_TAG: lambda v: _decode_iso(datetime.datetime.fromisoformat, v, True),
    LOCAL_DATETIME_TAG: lambda v: _decode_iso(datetime.datetime.fromisoformat, v, False),
    DATE_TAG: lambda v: _decode_iso(datetime.date.fromisoformat, v, False),
    TIME_TAG: lambda v: _decode_iso(datetime.time.fromisoformat, v, False),
    TIMEDELTA_TAG: _decode_timedelta,
    DECIMAL_TAG: _decode_decimal,
    DECIMAL_TEXT_TAG: _decode_decimal_text,
    RATIONAL_TAG: _decode_fraction,
    UUID_TAG: _decode_uuid,
    COMPLEX_TAG: _decode_complex,
}
_OBJECT_TAGS = frozenset((DATACLASS_TAG, ENUM_TAG, NAMEDTUPLE_TAG, PATH_TAG))


# True while Cache.transfer reads a record to copy it: every tag stays a Tag,
# which encodes back to its own bytes (a pickle is never loaded, a path keyed
# by its content keeps what it held), so the call it rebuilds has its digest.
_raw_tags = contextvars.ContextVar("quiver.raw_tags", default=False)


def _tag_hook(tag, value, trusted):
    if _raw_tags.get():
        return Tag(tag, value)
    if tag == NDARRAY_TAG:
        return _decode_ndarray(value)
    if tag == PICKLE_TAG and isinstance(value, bytes):
        if not trusted:
            why = "; ".join(sorted({c._distrust for c in list(_untrusted) if not c.closed})) \
                or "someone else could have written it"
            raise UntrustedPickleError(
                f"refusing to unpickle a value from a cache others could write (unpickling runs code): {why}; "
                "sign its entries with a secret every writer shares (Cache.open(path, secret=...) or "
                "QUIVER_SECRET), or open it with Cache.open(path, trust_pickle=True) if you trust whoever "
                "can write it")
        return pickle.loads(value)
    if tag == REGISTERED_TAG and isinstance(value, list) and len(value) == 2 and value[0] in _by_name:
        return _by_name[value[0]](value[1])
    if tag == PATH_CONTENT_TAG and isinstance(value, list) and len(value) == 3:
        # An argument of a call keyed by its content: read back as the path
        # (what it held is in the key, not in the value the call was given).
        obj = _decode_object(PATH_TAG, value[:2], trusted)
        if obj is not None:
            return obj
    # What does not make exactly the object that encodes back to these bytes
    # (another version of the class, a value another language wrote
    # differently) stays a Tag, which does.
    try:
        if tag in _OBJECT_TAGS:
            obj = _decode_object(tag, value, trusted)
        else:
            dec = _DECODERS.get(tag)
            obj = dec(value) if dec is not None else None
    except (ValueError, TypeError, ArithmeticError, AttributeError):
        obj = None
    return Tag(tag, value) if obj is None else obj


def _typed_dtype(tag):
    """The numpy dtype of an RFC 8746 typed-array tag (the core's table), or
    None: numpy has no clamped uint8, nor IEEE binary128 floats."""
    t = _quiver.typed_array_type(tag)
    if t is None or t[0] == "c" or (t[0] == "f" and t[1] == 16):
        return None
    kind, size, little = t
    return f"{'<' if little else '>'}{kind}{size}"


def _decode_ndarray(value):
    if (isinstance(value, list) and len(value) == 2 and isinstance(value[0], list)
            and isinstance(value[1], Tag) and isinstance(value[1].value, bytes)):
        dt = _typed_dtype(value[1].tag)
        if dt is not None:
            import numpy as np
            try:
                arr = np.frombuffer(bytearray(value[1].value), dtype=dt)
                return arr.astype(arr.dtype.newbyteorder("="), copy=False).reshape(value[0])
            except (ValueError, TypeError):
                pass  # a shape that does not fit the data: keep the tag as it is
    return Tag(NDARRAY_TAG, value)


def encode(obj):
    """The canonical encoding of obj (DESIGN section 3), as bytes."""
    return _quiver.encode(obj)


def decode(data):
    """The object whose canonical encoding is data; quiver.DecodeError when
    data is not exactly one canonical item."""
    return _quiver.decode(data)


def digest(obj):
    """The value digest of obj: 32 lowercase hex characters."""
    return _quiver.digest(obj)


def call_digest(name, version, args, kwargs):
    """The call digest of name/version with args (a sequence of positional
    values, already bound) and kwargs (a dict), as 32 hex characters."""
    return _quiver.qv_digest_bytes(_quiver.call_encoding(name, version, list(args), dict(kwargs or {})))
