#!/usr/bin/env bash
# Run the decoder fuzzer for SECONDS (default 60), seeded with the shared vectors.
set -euo pipefail
seconds=${1:-60}
: "${QUIVER_BUILD:?source build/env.sh first}"
fuzzer="$QUIVER_BUILD/bin/fuzz_decoder"
[ -x "$fuzzer" ] || { echo "fuzz: $fuzzer was not built (libFuzzer needs clang)" >&2; exit 1; }
vectors="$QUIVER_SOURCE/../shared/vectors"
corpus="$QUIVER_BUILD/fuzz-corpus"
mkdir -p "$corpus"
# Seeds: every valid and invalid vector, as raw bytes.
python3 - "$vectors" "$corpus" <<'PY'
import pathlib, sys
vectors, corpus = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for name in ("values.tsv", "invalid.tsv"):
    for i, line in enumerate((vectors / name).read_text().splitlines()):
        hexed = line.split("\t", 1)[0]
        if len(hexed) <= 8192:
            (corpus / f"seed-{name[:-4]}-{i}").write_bytes(bytes.fromhex(hexed))
PY
exec "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$corpus"
