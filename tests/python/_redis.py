"""A real redis-server for the remote tier's tests: each started on a free
loopback port (and a unix socket in its own directory), with no persistence,
and killed after, also when the test fails. Never a mock."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(path, timeout=0.2):
    """Whether the server on the unix socket path answers: that socket is
    this server's alone, where a port tried may be another's."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent():
    """In the child before exec: a test process killed outright (a timeout's
    SIGKILL) takes its redis-server with it, where no finally would run."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, 9)


class RedisServer:
    """One redis-server process: .port, .socket, .url, .unix_url; cli(*args)
    runs redis-cli against it; stop() kills it (start() starts it again on
    the same port and socket, empty)."""

    def __init__(self, base=None):
        base = base or os.environ.get("QV_TEST_TMP") or tempfile.gettempdir()
        os.makedirs(base, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=base)
        self.socket = os.path.join(self.dir, "redis.sock")
        self.port = None
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self):
        return f"unix://{self.socket}"

    def start(self):
        for _ in range(5):  # another process may take the free port first
            port = self.port or _free_port()
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--unixsocket", self.socket, "--unixsocketperm", "700", "--dir", self.dir,
                 "--logfile", os.path.join(self.dir, "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _ping(self.socket):
                    self.port = port
                    return self
                time.sleep(0.02)
            self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def cli(self, *args, input=None):
        """redis-cli's answer (stdout, stripped) to one command."""
        r = subprocess.run([REDIS_CLI, "-p", str(self.port), *map(str, args)], input=input,
                           capture_output=True, check=True)
        return r.stdout.strip()

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server():
    """A running redis-server, killed after the test whatever its outcome."""
    r = RedisServer()
    try:
        yield r.start()
    finally:
        r.remove()


def resp(port, *args):
    """One command over a raw socket, for binary values redis-cli would
    mangle: the reply as bytes, an int, a list, or None."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(out)
        f = s.makefile("rb")
        return _read_reply(f)


def _read_reply(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise RuntimeError(f"unexpected reply {line!r}")
