"""The kill loops (issue 15): rounds of writers SIGKILLed mid-store.

    python kill_loops.py ROUNDS DIR

Each round starts writers in C, Python and Lua (writer.c, writer.py,
writer.lua; QV_SOAK_PER_LANG of each, default 2) storing soak.kill(W, i)
into one cache in DIR/cache, all with the round's durability (safe, durable
and fast in turn). Most rounds wait until every writer has reported a store,
then kill each at its own random moment of the next 0.3 s; one
round in five kills at a random moment of the first 0.4 s, whatever the
writers are doing then (starting, opening, their first store). Then
`quiver verify` must be clean, its open must have cleared the reader slots
the killed writers held, and every store a writer reported must hit with
its value. A last pass checks every round's stores again.

"Reported stored" is the same in every durability: the memoized call
returned and a second call hit (so its write transaction committed and is
readable), and then the writer's log line was written and fsync'd. A process
kill loses nothing committed in any mode, since the kernel holds what was
written; the modes differ only on an OS crash, which this does not test."""
import os
import random
import signal
import subprocess
import sys
import time

import quiver

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from writer import kill_value, value  # noqa: E402  the memo and values every writer stores

MODES = ("safe", "durable", "fast")
READY_SECONDS = 30  # a writer that reports no store in this long has failed


def writer_commands(per_lang):
    here = os.path.dirname(os.path.abspath(__file__))
    build = os.environ["QUIVER_BUILD"]
    langs = [
        ("c", [os.path.join(build, "tests", "soak", "soak_writer")]),
        ("python", [os.path.join(build, "venv", "bin", "python"), os.path.join(here, "writer.py")]),
        ("lua", [os.environ["QV_LUA"], os.path.join(here, "writer.lua")]),
    ]
    return [(lang, cmd) for lang, cmd in langs for _ in range(per_lang)]


def reported(log):
    """The (w, i) a writer's log reports: complete lines only."""
    try:
        with open(log) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return [tuple(int(x) for x in line.split()) for line in text.split("\n")[:-1]]


def check_stored(c, keys):
    """The keys that do not hit with their value in cache c: (w, i, what
    went wrong). Memo.load reads the stored result, never running the body."""
    wrong = []
    with quiver.cache(c):
        for w, i in keys:
            try:
                got = kill_value.load(w, i)
            except KeyError:
                wrong.append((w, i, "missing"))
                continue
            if got != value(w, i):
                wrong.append((w, i, f"wrong value {got[:40]!r}..."))
    return wrong


def dead_slots(path):
    """Reader slots held in the cache by processes that no longer exist."""
    probe = os.path.join(os.environ["QUIVER_BUILD"], "tests", "soak", "soak_readers")
    return int(subprocess.run([probe, "0", path], capture_output=True, text=True, check=True).stdout.split()[2])


def verify(path):
    cli = os.path.join(os.environ["QUIVER_BUILD"], "bin", "quiver")
    try:
        p = subprocess.run([cli, "verify", path], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "quiver verify did not finish in 60 s"
    if p.returncode != 0 or "bad entries: 0" not in p.stdout:
        return f"quiver verify exited {p.returncode}: {p.stdout.strip()} {p.stderr.strip()}"
    return None


def one_round(r, rng, path, logs, commands):
    """Runs round r; returns its durability, the keys its writers reported,
    and a failure or None."""
    mode = MODES[r % len(MODES)]
    procs = []
    for k, (lang, cmd) in enumerate(commands):
        w = r * 16 + k
        log = os.path.join(logs, f"{r}-{w}.log")
        err = open(os.path.join(logs, f"{r}-{w}.err"), "w")
        procs.append((lang, w, log, err, subprocess.Popen([*cmd, path, mode, str(w), log], stderr=err)))
    start = time.monotonic()
    failure = None
    if rng.random() < 0.2:
        time.sleep(rng.uniform(0, 0.4))
    else:
        # until each has reported a store; one that exits is reported below
        while not all(os.path.exists(log) and os.path.getsize(log) for _, _, log, _, _ in procs):
            if any(p.poll() is not None for *_, p in procs):
                break
            if time.monotonic() - start > READY_SECONDS:
                failure = f"a writer reported no store in {READY_SECONDS} s"
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.1))
    order = list(procs)
    rng.shuffle(order)
    for _, _, _, _, p in order:
        time.sleep(rng.uniform(0, 0.03))
        p.send_signal(signal.SIGKILL)
    keys = []
    for lang, w, log, err, p in procs:
        rc = p.wait()
        err.close()
        if rc not in (-signal.SIGKILL, 0) and not failure:
            with open(err.name) as f:
                failure = f"{lang} writer {w} exited {rc}: {f.read().strip()}"
        keys += reported(log)
    return mode, keys, failure


def main(rounds, directory):
    rounds = int(rounds)
    per_lang = int(os.environ.get("QV_SOAK_PER_LANG", "2"))
    path, logs = os.path.join(directory, "cache"), os.path.join(directory, "logs")
    os.makedirs(logs, exist_ok=True)
    commands = writer_commands(per_lang)
    rng = random.Random(int(os.environ.get("QV_SOAK_SEED", "15")))
    t0 = time.monotonic()
    # This process holds the cache open throughout, read-only, as a
    # long-running reader would: the lock file then outlives each round's
    # writers (the last process to leave an environment takes its reader
    # table with it), so the slots of killed writers stay until an open
    # clears them, as DESIGN section 4 says every open does.
    quiver.Cache.open(path).close()
    held = quiver.Cache.open(path, readonly=True)
    every, killed, per_mode, dead_max = [], 0, dict.fromkeys(MODES, 0), 0
    for r in range(rounds):
        mode, keys, failure = one_round(r, rng, path, logs, commands)
        killed += len(commands)
        per_mode[mode] += 1
        dead_max = max(dead_max, dead_slots(path))
        failure = failure or verify(path)
        if not failure and dead_slots(path):
            failure = f"{dead_slots(path)} reader slots of killed writers were still taken after quiver verify opened the cache"
        wrong = [] if failure else check_stored(held, keys)
        if failure or wrong:
            for w, i, what in wrong[:10]:
                print(f"kill loops: round {r} ({mode}): soak.kill({w}, {i}) reported stored, {what}", file=sys.stderr)
            print(f"kill loops: round {r} ({mode}) FAILED: {failure or f'{len(wrong)} of {len(keys)} reported stores lost'}"
                  f" (logs in {logs})", file=sys.stderr)
            return 1
        every += keys
    wrong = check_stored(held, every)
    held.close()
    if wrong:
        print(f"kill loops: the last pass found {len(wrong)} of {len(every)} stores lost, "
              f"first soak.kill({wrong[0][0]}, {wrong[0][1]}): {wrong[0][2]}", file=sys.stderr)
        return 1
    print(f"kill loops: {rounds} rounds ({', '.join(f'{m} {n}' for m, n in per_mode.items())}), "
          f"{killed} writers killed ({per_lang} each of C, Python, Lua per round), {len(every)} reported stores "
          f"checked after their round and again at the end; verify clean and the killed writers' reader slots "
          f"(up to {dead_max} a round) cleared by its open after every round; {time.monotonic() - t0:.1f} s")
    return 0

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: kill_loops.py ROUNDS DIR")
    sys.exit(main(*sys.argv[1:]))
