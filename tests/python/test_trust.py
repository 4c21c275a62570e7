"""Which caches pickles are loaded from: every file and directory whose writer
could plant a pickle must be writable only by the reader (or root).

Each case runs twice, in a fresh process that opens the cache and reads a
pickled result back: as root, and as an unprivileged user made here, since
root passes every permission check and a rule that leaned on one would pass
for root alone."""
import glob
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import pytest

import quiver

USER = "quiver-trust"

# The reader: opens the cache read-only (some cases leave data.mdb writable
# by its owner only) and calls a memo whose stored result is a pickle.
READER = r"""
import json, sys, warnings, quiver
path, trust = sys.argv[1], sys.argv[2] == "1"
ran = []
f = quiver.memo(name="trust.pickled")(lambda: ran.append(1) or range(7))
with quiver.Cache.open(path, readonly=True, trust_pickle=trust) as c, quiver.cache(c):
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        got = f()
refused = [str(w.message) for w in said if "refusing to unpickle" in str(w.message)]
# a refused pickle is a miss that says why: the call ran instead
out = {"refused": refused[0]} if refused and ran else {"loaded": got == range(3) and not ran}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def unprivileged():
    """(uid, gid) of USER, made if missing."""
    if os.geteuid() != 0:
        pytest.skip("making a user and running a process as that user needs root")
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        # Another test run may be making the same user: its success is ours.
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       capture_output=True)
        pw = pwd.getpwnam(USER)
    return pw.pw_uid, pw.pw_gid


@pytest.fixture(scope="module")
def world():
    """A directory every user can traverse, holding a copy of the quiver
    package and its library: the build tree and the interpreter may sit
    under directories only root can enter (/root/.pyenv here)."""
    base = tempfile.mkdtemp(prefix="quiver-trust-")
    os.chmod(base, 0o755)
    pkg = os.path.join(base, "py", "quiver")
    shutil.copytree(os.path.dirname(quiver.__file__), pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(quiver._quiver.__file__, pkg)
    lib = os.path.join(base, "lib")
    os.mkdir(lib)
    for so in glob.glob(os.path.join(os.environ["QUIVER_BUILD"], "lib", "libquiver.so*")):
        shutil.copy2(so, lib, follow_symlinks=False)
    for d, dirs, files in os.walk(base):
        for n in dirs:
            os.chmod(os.path.join(d, n), 0o755)
        for n in files:
            if not os.path.islink(os.path.join(d, n)):
                os.chmod(os.path.join(d, n), 0o644)
    env = dict(os.environ, PYTHONPATH=os.path.join(base, "py"), LD_LIBRARY_PATH=lib, PYTHONDONTWRITEBYTECODE="1")
    yield base, env
    shutil.rmtree(base, ignore_errors=True)


def _as_user(uid, gid):
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


@pytest.fixture(scope="module")
def interpreter(world, unprivileged):
    """A Python of this version that the unprivileged user can run and
    import quiver with: this one, or the system's of the same version."""
    base, env = world
    version = sysconfig.get_python_version()
    tried = []
    for exe in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        r = subprocess.run(_as_user(*unprivileged) + [exe, "-c", "import quiver"], env=env, cwd=base,
                           capture_output=True, text=True)
        if r.returncode == 0:
            return exe
        namei = subprocess.run(["namei", "-l", exe, base], capture_output=True, text=True).stdout
        tried.append(f"{exe}: {r.stderr.strip()[-300:]}\n{namei}")
    pytest.fail(f"{USER} can run no Python {version} that imports quiver:\n" + "\n".join(tried))


NOBODY = pwd.getpwnam("nobody").pw_uid


class Tree:
    """base (root, 0755) / parent (the reader's, 0755) / cache (the reader's,
    0700), holding a cache whose call trust.pickled() returned range(3)."""

    def __init__(self, base, uid, gid, secret=None):
        self.uid, self.gid = uid, gid
        self.base = tempfile.mkdtemp(dir=base)
        os.chmod(self.base, 0o755)
        self.parent = os.path.join(self.base, "parent")
        self.cache = os.path.join(self.parent, "cache")
        with quiver.Cache.open(self.cache, secret=secret) as c, quiver.cache(c):
            quiver.memo(name="trust.pickled")(lambda: range(3))()
        os.chmod(self.parent, 0o755)
        os.chmod(self.cache, 0o700)
        for p in (self.parent, self.cache, *glob.glob(os.path.join(self.cache, "*"))):
            os.chown(p, uid, gid)

    def file(self, name):
        return os.path.join(self.cache, name)

    def foreign_link(self, name, owner):
        """Replace name by a hard link to a copy owned by owner."""
        elsewhere = os.path.join(self.base, name + ".elsewhere")
        os.rename(self.file(name), elsewhere)
        os.chown(elsewhere, owner, -1)
        os.link(elsewhere, self.file(name))


# name: (what is done to a fresh Tree, trust_pickle, expected: True (the
# pickle loads) or the texts the refusal must name).
CASES = {
    "private": (lambda t: None, False, True),
    "dir_group_writable": (lambda t: os.chmod(t.cache, 0o770), False, ["{cache} ", "0770"]),
    "dir_world_writable": (lambda t: os.chmod(t.cache, 0o703), False, ["{cache} ", "0703"]),
    "dir_other_owner": (lambda t: (os.chown(t.cache, NOBODY, -1), os.chmod(t.cache, 0o755)), False,
                        ["{cache} ", "nobody"]),
    "data_group_writable": (lambda t: os.chmod(t.file("data.mdb"), 0o664), False, ["data.mdb", "0664"]),
    "data_world_writable": (lambda t: os.chmod(t.file("data.mdb"), 0o646), False, ["data.mdb", "0646"]),
    "data_other_owner": (lambda t: os.chown(t.file("data.mdb"), NOBODY, -1), False, ["data.mdb", "nobody"]),
    "data_root_owned": (lambda t: os.chown(t.file("data.mdb"), 0, 0), False, True),
    "lock_world_writable": (lambda t: os.chmod(t.file("lock.mdb"), 0o666), False, ["lock.mdb", "0666"]),
    "lock_other_owner": (lambda t: (os.chmod(t.file("lock.mdb"), 0o666), os.chown(t.file("lock.mdb"), NOBODY, -1)),
                         False, ["lock.mdb", "nobody"]),
    "data_hard_link_to_foreign_file": (lambda t: t.foreign_link("data.mdb", NOBODY), False,
                                       ["data.mdb", "nobody", "2 links"]),
    "data_hard_link_to_own_file": (lambda t: os.link(t.file("data.mdb"), os.path.join(t.base, "backup.mdb")),
                                   False, True),
    "data_symlink": (lambda t: (os.rename(t.file("data.mdb"), os.path.join(t.parent, "real.mdb")),
                                os.symlink(os.path.join(t.parent, "real.mdb"), t.file("data.mdb"))),
                     False, ["data.mdb", "symbolic link"]),
    "leases_world_writable": (lambda t: (os.chown(t.file("quiver.leases"), NOBODY, -1),
                                         os.chmod(t.file("quiver.leases"), 0o666)), False, True),
    "parent_group_writable": (lambda t: os.chmod(t.parent, 0o775), False, ["{parent} ", "0775"]),
    "parent_world_writable": (lambda t: os.chmod(t.parent, 0o777), False, ["{parent} ", "0777"]),
    "parent_other_owner": (lambda t: os.chown(t.parent, NOBODY, -1), False, ["{parent} ", "nobody"]),
    "parent_sticky": (lambda t: os.chmod(t.parent, 0o1777), False, True),
    "parent_sticky_other_owner": (lambda t: (os.chown(t.parent, NOBODY, -1), os.chmod(t.parent, 0o1777)),
                                  False, ["{parent} ", "nobody"]),
    # The walk stops at a sticky directory: its entries can only be renamed by
    # their owners, whoever may write what lies above.
    "above_sticky_not_checked": (lambda t: (os.chmod(t.parent, 0o1777), os.chmod(t.base, 0o777)), False, True),
    "grandparent_world_writable": (lambda t: os.chmod(t.base, 0o777), False, ["{base} ", "0777"]),
    "trust_pickle_overrides": (lambda t: (os.chmod(t.cache, 0o777), os.chmod(t.file("data.mdb"), 0o666),
                                          os.chown(t.file("data.mdb"), NOBODY, -1), os.chmod(t.parent, 0o777)),
                               True, True),
}


def _reader(reader, request):
    """Who reads the cache: root, or the unprivileged user (root passes every
    permission check). Its uid, gid, command prefix and interpreter."""
    if reader == "root":
        if os.geteuid() != 0:
            pytest.skip("the root reader needs root")
        return 0, 0, [], sys.executable
    uid, gid = request.getfixturevalue("unprivileged")
    return uid, gid, _as_user(uid, gid), request.getfixturevalue("interpreter")


@pytest.mark.parametrize("reader", ["root", "user"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_pickle_trust(case, reader, world, request):
    base, env = world
    uid, gid, prefix, exe = _reader(reader, request)
    change, trust, expected = CASES[case]
    t = Tree(base, uid, gid)
    change(t)
    r = subprocess.run(prefix + [exe, "-c", READER, t.cache, "1" if trust else "0"], env=env, cwd=base,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    if expected is True:
        assert out == {"loaded": True}
    else:
        assert "refused" in out, out
        for text in expected:
            assert text.format(cache=t.cache, parent=t.parent, base=t.base) in out["refused"]
        assert "trust_pickle=True" in out["refused"]


# Signed entries (the cache's secret, here through QUIVER_SECRET in the
# reader) are trusted whatever the files say; a local cache that a stack
# filled from an unsigned remote tier is not, signed or not.
SECRET = "trust-test secret"
SIGNED_CASES = {
    "signed_private": (lambda t: None, True),
    "signed_dir_group_writable": (lambda t: os.chmod(t.cache, 0o2770), True),
    "signed_data_world_writable": (lambda t: os.chmod(t.file("data.mdb"), 0o666), True),
    "signed_data_other_owner": (lambda t: os.chown(t.file("data.mdb"), NOBODY, -1), True),
    "signed_parent_world_writable": (lambda t: os.chmod(t.parent, 0o777), True),
    "signed_with_remote_copies": (lambda t: open(t.file("quiver.remote-copies"), "w").write("redis://h:6379/0\n"),
                                  ["copies of entries from redis://h:6379/0"]),
}


@pytest.mark.parametrize("reader", ["root", "user"])
@pytest.mark.parametrize("case", sorted(SIGNED_CASES))
def test_signed_pickle_trust(case, reader, world, request):
    base, env = world
    uid, gid, prefix, exe = _reader(reader, request)
    change, expected = SIGNED_CASES[case]
    t = Tree(base, uid, gid, secret=SECRET)
    change(t)
    r = subprocess.run(prefix + [exe, "-c", READER, t.cache, "0"], env=dict(env, QUIVER_SECRET=SECRET), cwd=base,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    if expected is True:
        assert out == {"loaded": True}
    else:
        assert "refused" in out, out
        for text in expected:
            assert text in out["refused"]


def test_decided_at_open(tmpdir_path):
    """Trust is decided when a cache is opened: a handle opened while the
    cache was private keeps loading its pickles, and one opened while others
    could write it keeps refusing them, whatever the modes become."""
    path = os.path.join(tmpdir_path, "c")
    f = quiver.memo(name="trust.pickled")(lambda: range(3))
    with quiver.Cache.open(path) as c, quiver.cache(c):
        f()
    with quiver.Cache.open(path) as private:
        os.chmod(path, 0o777)
        try:
            with quiver.Cache.open(path) as shared:
                assert private.load(f.digest()).result == range(3)
                os.chmod(path, 0o700)
                with pytest.raises(quiver.Error, match=re.escape(f"{path} is writable by others than its owner "
                                                                 "(mode 0777)")):
                    shared.load(f.digest())
        finally:
            os.chmod(path, 0o700)
