"""quiver: memoized function calls in one cache shared by every language.

    from quiver import memo, cache, Cache

    @memo
    def add(x, y=2):
        return x + y

    with cache(Cache.open("work/cache")):
        add(1)      # runs and stores
        add(1, 2)   # a hit: the same call once bound
"""
import pkgutil as _pkgutil

# In a build tree the extension sits in build/python/quiver and these files
# in the sources: both directories are portions of this one package.
__path__ = _pkgutil.extend_path(__path__, __name__)

from ._quiver import (  # noqa: E402
    Error, NotFoundError, InvalidArgumentError, NoMemoryError, DecodeError, EncodeError, StoreError,
    FullError, ReadOnlyError, CorruptError, ClosedError, MisuseError, IOError, RangeError, TypeError,
    TimeoutError, CancelledError, FailedError, qv_version as _qv_version,
)
from ._codec import QuiverWarning, Tag, UntrustedPickleError, encode, decode, digest, call_digest, register  # noqa: E402
from ._cache import Cache, FilteredCache, Record, cache, meta, current_cache, current_meta  # noqa: E402
from ._query import ANY, Query  # noqa: E402
from ._memo import memo, Memo  # noqa: E402

__version__ = _qv_version()

__all__ = [
    "memo", "Memo", "cache", "meta", "Cache", "FilteredCache", "Record", "Query", "ANY", "current_cache",
    "current_meta",
    "encode", "decode", "digest", "call_digest", "register", "Tag", "QuiverWarning", "UntrustedPickleError",
    "BoundWrapper", "wrap_executor", "Runner", "SafeCounter", "SafeDict", "parallel",
    "Error", "NotFoundError", "InvalidArgumentError", "NoMemoryError", "DecodeError", "EncodeError",
    "StoreError", "FullError", "ReadOnlyError", "CorruptError", "ClosedError", "MisuseError",
    "RangeError", "CancelledError", "FailedError",
]  # quiver.IOError, quiver.TypeError and quiver.TimeoutError too, left out so that * does not shadow builtins

_lazy = {"BoundWrapper": "bound", "wrap_executor": "bound", "Runner": "parallel", "SafeCounter": "parallel",
         "SafeDict": "parallel"}


def __getattr__(name):
    # The executor layer imports concurrent machinery: only on first use.
    import importlib
    if name == "parallel":
        return importlib.import_module(".parallel", __name__)
    if name in _lazy:
        return getattr(importlib.import_module("." + _lazy[name], __name__), name)
    raise AttributeError(f"module 'quiver' has no attribute {name!r}")
