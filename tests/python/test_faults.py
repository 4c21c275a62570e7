"""Storage faults from Python (issue 15): a full disk, a read-only
filesystem, network filesystems (tests/c/test_faults.c has the C side, the
group-shared directory and the reader slots of killed processes).

The disk and read-only scenarios run in a process of their own inside a new
mount namespace (unshare), where a small tmpfs is mounted: the mount goes
with the process, whatever happens to the test. Without unshare and mount,
the full disk is played by RLIMIT_FSIZE and the read-only case is skipped."""
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest

import quiver

WORKER = textwrap.dedent(r"""
    import os, resource, signal, subprocess, sys, warnings
    import quiver

    mode, base = sys.argv[1], sys.argv[2]
    mounted = os.environ.get("MOUNTED") == "1"
    path = os.path.join(base, "cache")
    computed = []

    @quiver.memo(name="faults.blob", version="1")
    def blob(i):
        computed.append(i)
        return bytes([i % 251]) * 4000

    def caught(fn, *args):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            out = fn(*args)
        return out, [str(x.message) for x in w if issubclass(x.category, quiver.QuiverWarning)]

    def clean(c, stage):
        bad = c.verify()
        assert not bad, f"verify after {stage}: {bad}"

    if mode != "readonly":
        c = quiver.Cache.open(path)
        with quiver.cache(c):
            for i in range(30):
                blob(i)
        assert computed == list(range(30))

    if mode == "full":
        filler = os.path.join(base, "filler")
        if mounted:
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
            chunk = b"x" * 65536
            while len(chunk) >= 512:
                try:
                    os.write(fd, chunk)
                except OSError:
                    chunk = chunk[: len(chunk) // 2]
            os.close(fd)
        else:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            size = os.path.getsize(os.path.join(path, "data.mdb"))
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        del computed[:]
        said = []
        with quiver.cache(c):
            for i in range(100, 140):
                out, ws = caught(blob, i)
                assert out == bytes([i % 251]) * 4000      # the computed result, stored or not
                said += ws
            assert computed == list(range(100, 140))
            assert any("not stored" in w and "free space on that disk" in w for w in said), said
            unstored = [i for i in range(100, 140) if not blob.contains(i)]
            assert unstored, "every store fit on a full disk"
            del computed[:]
            for i in range(30):                           # hits keep working
                assert blob(i) == bytes([i % 251]) * 4000
            assert computed == []
        clean(c, "filling the disk")
        if mounted:
            os.unlink(filler)
        else:
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        with quiver.cache(c):
            for i in unstored[:5]:
                blob(i)
                assert blob.contains(i), "stores work again once there is room"
        clean(c, "freeing space")
        print(f"full: {len(unstored)} of 40 unstored", file=sys.stderr)

    elif mode == "readonly":
        # the filesystem went read-only after the "populate" run
        c, ws = caught(quiver.Cache.open, path)
        assert len(ws) == 1 and "read-only" in ws[0], ws
        assert c.readonly, "the handle says it fell back to read-only"
        del computed[:]
        with quiver.cache(c):
            hits, ws = caught(lambda: [blob(i) for i in range(30)])
            assert computed == [] and not ws, (computed, ws)
            assert hits[7] == bytes([7]) * 4000
            out, ws = caught(blob, 500)                    # a miss runs, unstored
            assert out == bytes([500 % 251]) * 4000 and not blob.contains(500)
    print("ok")
""")


def _mount_namespace():
    """The command prefix that runs a process in a new mount namespace, or None."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or not unshare:
        return None
    r = subprocess.run([unshare, "--mount", "--propagation", "private", "true"], capture_output=True)
    return [unshare, "--mount", "--propagation", "private", "--"] if r.returncode == 0 else None


def _run(mode, tmp_path, ns):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    base = tmp_path / "disk"
    base.mkdir()
    if ns:
        # populating and reading are two processes: one with the cache open
        # (its lease table is mapped for writing) keeps a remount busy
        steps = {"full": 'MOUNTED=1 "$2" "$3" full "$1"',
                 "readonly": '"$2" "$3" populate "$1" && mount -o remount,ro "$1" && "$2" "$3" readonly "$1"'}
        inner = f'mount -t tmpfs -o size=8m tmpfs "$1" && {steps[mode]}'
        cmd = ns + ["sh", "-c", inner, "sh", str(base), sys.executable, str(script)]
    else:
        cmd = [sys.executable, str(script), mode, str(base)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


def test_full_disk_stores_fail_softly(tmp_path):
    _run("full", tmp_path, _mount_namespace())


def test_full_disk_by_file_size_limit(tmp_path):
    _run("full", tmp_path, None)


def test_readonly_filesystem_opens_readonly_with_one_warning(tmp_path):
    ns = _mount_namespace()
    if not ns:
        pytest.skip("a read-only filesystem needs a mount namespace (root and unshare)")
    _run("readonly", tmp_path, ns)


@pytest.mark.parametrize("fstype", ["0x6969", "0xFF534D42", "0x0BD00BD0", "0x47504653", "fuse.sshfs"])
def test_network_filesystem_is_refused(tmp_path, monkeypatch, fstype):
    monkeypatch.setenv("QUIVER_TEST_FSTYPE", fstype)
    with pytest.raises(ValueError, match="redis://") as e:
        quiver.Cache.open(str(tmp_path / "c"))
    assert "allow_network_fs=True" in str(e.value)


def test_network_filesystem_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("QUIVER_TEST_FSTYPE", "0x6969")

    @quiver.memo(name="faults.nfs", version="1")
    def twice(x):
        return 2 * x

    c = quiver.Cache.open(str(tmp_path / "c"), allow_network_fs=True)
    with quiver.cache(c):
        assert twice(4) == 8
        assert twice.contains(4)
    c.close()


def test_network_filesystem_from_lua(tmp_path):
    lua = os.environ.get("QUIVER_LUA") or shutil.which("lua5.4") or shutil.which("lua")
    if not lua:
        pytest.skip("no Lua interpreter")
    code = textwrap.dedent(f"""
        local quiver = require("quiver")
        local ok, err = pcall(quiver.open, {str(tmp_path / 'c')!r})
        assert(not ok and tostring(err):find("redis://", 1, true), tostring(err))
        local c = quiver.open({str(tmp_path / 'c')!r}, {{allow_network_fs = true}})
        c:close()
        print("ok")
    """)
    env = dict(os.environ, QUIVER_TEST_FSTYPE="0x6969")
    r = subprocess.run([lua, "-e", code], capture_output=True, text=True, env=env, timeout=60)
    if "module 'quiver' not found" in r.stderr:
        pytest.skip("the Lua module is not on LUA_PATH/LUA_CPATH here")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
