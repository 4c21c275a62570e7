"""The value mapping of DESIGN section 3 for what C does not encode natively."""
import pickle
import sys
from collections import namedtuple

from . import _quiver

PICKLE_TAG = 0x51560002
REGISTERED_TAG = 0x51560004  # [type name, encoder(obj)]: a type the user registered
NDARRAY_TAG = 40
_TYPED = {64: "u1", 69: "<u2", 70: "<u4", 71: "<u8", 72: "i1", 77: "<i2", 78: "<i4", 79: "<i8",
          84: "<f2", 85: "<f4", 86: "<f8"}
_TYPED_BE = {65: ">u2", 66: ">u4", 67: ">u8", 73: ">i2", 74: ">i4", 75: ">i8", 80: ">f2", 81: ">f4", 82: ">f8"}


class QuiverWarning(UserWarning):
    """Something quiver did instead of what was asked: a call run uncached, a
    corrupt entry read as a miss, a memory cache that cannot be shared."""


class Tag(namedtuple("Tag", "tag value")):
    """A CBOR tag quiver gives no Python meaning to; it encodes back as itself."""
    __slots__ = ()


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


def _encode_hook(obj):
    """What to encode in place of obj, which has no native encoding."""
    entry = _by_type.get(type(obj))
    if entry is not None:
        name, encoder = entry
        return Tag(REGISTERED_TAG, [name, encoder(obj)])
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    arr = _ndarray(obj)
    if arr is not None:
        return arr
    try:
        return Tag(PICKLE_TAG, pickle.dumps(obj, protocol=5))
    except Exception as e:
        raise _quiver.EncodeError(f"cannot encode or pickle an object of type {type(obj).__qualname__}: {e}") from e


def _tag_hook(tag, value, trusted):
    if tag == NDARRAY_TAG:
        return _decode_ndarray(value)
    if tag == PICKLE_TAG and isinstance(value, bytes):
        if not trusted:
            raise _quiver.Error(
                "refusing to unpickle a value from a cache whose directory is not owned by you alone "
                "(unpickling runs code); open it with Cache.open(path, trust_pickle=True) if you trust it")
        return pickle.loads(value)
    if tag == REGISTERED_TAG and isinstance(value, list) and len(value) == 2 and value[0] in _by_name:
        return _by_name[value[0]](value[1])
    return Tag(tag, value)


def _decode_ndarray(value):
    if (isinstance(value, list) and len(value) == 2 and isinstance(value[0], list)
            and isinstance(value[1], Tag) and isinstance(value[1].value, bytes)):
        dt = _TYPED.get(value[1].tag) or _TYPED_BE.get(value[1].tag)
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
