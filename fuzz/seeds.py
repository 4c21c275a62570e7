#!/usr/bin/env python3
"""Write the fuzzers' seeds into a directory, one file per input.

    seeds.py bytes DIR       CBOR seeds: every shared vector (valid and
                             invalid), tests/vectors, and every hex example
                             in docs/FORMAT.md
    seeds.py signatures DIR  qv_fn_new_c signature strings from the docs and
                             the C tests

FORMAT.md examples are found by shape, not by list, so an example added to the
document becomes a seed at the next run: a fenced block whose every line is
hex (an xxd-style dump, or hex followed by an annotation after three spaces)
is one seed, each such line is one too, and so is every inline code span of
hex digits.
"""
import hashlib
import pathlib
import re
import sys

SOURCE = pathlib.Path(__file__).resolve().parent.parent
VECTORS = [SOURCE.parent / "shared" / "vectors" / "values.tsv",
           SOURCE.parent / "shared" / "vectors" / "invalid.tsv",
           SOURCE / "tests" / "vectors" / "values.tsv"]
MAX_SEED = 8192  # libFuzzer's default -max_len is 4096; longer seeds only cost time

HEX = re.compile(r"[0-9a-f]+")
XXD = re.compile(r"^[0-9a-f]{8}: (.*)$")


def line_hex(line):
    """The bytes a line of a FORMAT.md block spells, or None when it is prose."""
    line = line.rstrip()
    m = XXD.match(line)
    if m:
        tokens = []
        for tok in m.group(1).split():
            if len(tokens) == 16 or not re.fullmatch(r"[0-9a-f]{2}", tok):
                break
            tokens.append(tok)
        return bytes.fromhex("".join(tokens)) if tokens else None
    # hex, then an optional annotation after a gap of three spaces or more
    code = re.split(r" {3,}", line.strip(), maxsplit=1)[0]
    tokens = code.split()
    if not tokens or not all(HEX.fullmatch(t) for t in tokens):
        return None
    digits = "".join(tokens)
    return bytes.fromhex(digits) if len(digits) % 2 == 0 else None


def format_examples(text):
    seeds = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        lines = [l for l in block.splitlines() if l.strip()]
        parsed = [line_hex(l) for l in lines]
        seeds += [p for p in parsed if p]
        if parsed and all(parsed):
            seeds.append(b"".join(parsed))
    for span in re.findall(r"`([0-9a-f][0-9a-f ]*)`", text):
        digits = span.replace(" ", "")
        if len(digits) >= 2 and len(digits) % 2 == 0:
            seeds.append(bytes.fromhex(digits))
    return seeds


def byte_seeds():
    seeds = []
    for path in VECTORS:
        for line in path.read_text().splitlines():
            hexed = line.split("\t", 1)[0]
            if HEX.fullmatch(hexed) and len(hexed) % 2 == 0:
                seeds.append(bytes.fromhex(hexed))
    seeds += format_examples((SOURCE / "docs" / "FORMAT.md").read_text())
    return seeds


def signature_seeds():
    found = set()
    sig = re.compile(r'"((?:void|i8|i16|i32|i64|u8|u16|u32|u64|f32|f64|bool|str|bytes|value)\s*\([^"\n]*\))"')
    for path in [SOURCE / "capi" / "include" / "quiver.h", SOURCE / "docs" / "API.md",
                 SOURCE / "tests" / "c" / "test_ffi.c", *sorted((SOURCE / "examples").rglob("*.c"))]:
        if path.exists():
            found.update(sig.findall(path.read_text()))
    return [s.encode() for s in sorted(found)]


def main():
    kind, out = sys.argv[1], pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    seeds = byte_seeds() if kind == "bytes" else signature_seeds()
    written = 0
    for s in seeds:
        if 0 < len(s) <= MAX_SEED:
            name = out / ("seed-" + hashlib.sha1(s).hexdigest()[:16])
            if not name.exists():
                name.write_bytes(s)
                written += 1
    print(f"seeds: {written} new {kind} seeds in {out} (of {len(seeds)} found)")


if __name__ == "__main__":
    main()
