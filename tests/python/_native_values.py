"""Values of the types quiver encodes natively beyond plain data, and a few
it still pickles; importable by name, so that they decode back to their
classes in another process."""
import collections
import dataclasses
import datetime
import decimal
import enum
import fractions
import pathlib
import uuid


class Color(enum.Enum):
    RED = 1
    GREEN = "green"


class Perm(enum.IntFlag):
    R = 4
    W = 2


@dataclasses.dataclass(frozen=True)
class Tagged:
    name: str
    tags: frozenset


@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0


Pair = collections.namedtuple("Pair", "left right")


class Bag:
    """Not a dataclass: pickled. Its set and its dict (built from a set) come
    out of hashing in whatever order PYTHONHASHSEED gives."""

    def __init__(self, words):
        self.words = set(words)
        self.index = {w: len(w) for w in set(words)}

    def __eq__(self, other):
        return type(other) is Bag and (self.words, self.index) == (other.words, other.index)


WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


def values():
    """name -> value: what the hash-seed test digests in every process."""
    return {
        "frozen dataclass with a frozenset": Tagged("t", frozenset(WORDS)),
        "dataclass": Point(1.5),
        "enum": Color.GREEN,
        "int flag": Perm.R | Perm.W,
        "named tuple": Pair("a", frozenset(WORDS)),
        "path": pathlib.PurePosixPath("data/in.csv"),
        "posix path": pathlib.Path("/tmp/x"),
        "naive datetime": datetime.datetime(2024, 2, 29, 13, 14, 15, 123456),
        "utc datetime": datetime.datetime(2024, 2, 29, 13, 14, 15, tzinfo=datetime.timezone.utc),
        "date": datetime.date(2024, 2, 29),
        "time": datetime.time(13, 14, 15),
        "timedelta": datetime.timedelta(days=-1, seconds=5),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "decimal": decimal.Decimal("1.10"),
        "fraction": fractions.Fraction(-1, 3),
        "complex": 1 + 2j,
        "pickled object with a set and a dict": Bag(WORDS),
    }
