"""The Python writer of the kill loops (writer.c has the protocol).

    python writer.py CACHE DURABILITY W LOG

Stores soak.kill(W, i) for i = 0, 1, ... until killed; after each store a
second call must hit, and only then is "W i" appended to LOG and fsync'd."""
import os
import sys
import time

import quiver

RUN_SECONDS = 60  # a writer nobody kills stops by itself
hits_only = False


def value(w, i):
    """The result of soak.kill(w, i) in every writer: "w:i:" and 1 to 1500 letters."""
    return f"{w}:{i}:" + "".join(chr(97 + (w + i + k) % 26) for k in range(1 + (w * 31 + i * 7919) % 1500))


@quiver.memo(name="soak.kill", version="1")
def kill_value(w, i):
    if hits_only:
        print(f"writer.py: soak.kill({w}, {i}) was stored, yet ran again", file=sys.stderr, flush=True)
        os._exit(4)
    return value(w, i)


def main(path, durability, w, log):
    global hits_only
    w = int(w)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    c = quiver.Cache.open(path, durability=durability)
    stop = time.monotonic() + RUN_SECONDS
    i = 0
    with quiver.cache(c):
        while time.monotonic() < stop:
            kill_value(w, i)
            hits_only = True
            got = kill_value(w, i)
            hits_only = False
            if got != value(w, i):
                sys.exit(f"writer.py: soak.kill({w}, {i}) hit with a wrong value")
            os.write(fd, f"{w} {i}\n".encode())
            os.fsync(fd)
            i += 1
    c.close()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: writer.py CACHE safe|durable|fast W LOG")
    main(*sys.argv[1:])
