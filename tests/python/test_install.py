"""`pip wheel .` builds a wheel that installs and works in a fresh virtual
environment: no build backend there, no LD_LIBRARY_PATH, its own libquiver.so."""
import os
import shutil
import subprocess
import sys
import venv

import pytest

SOURCE = os.environ.get("QUIVER_SOURCE") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.mark.skipif(shutil.which("cmake") is None, reason="pip wheel . builds through CMake, which is missing")
def test_pip_wheel_installs_in_fresh_venv(tmpdir_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH")}
    pip = ["-m", "pip", "-q", "--disable-pip-version-check"]
    # The wheel is built in one venv, with the build backend from PyPI and no
    # second isolated environment (one download instead of two) ...
    build_py = os.path.join(tmpdir_path, "build-venv", "bin", "python")
    venv.create(os.path.dirname(os.path.dirname(build_py)), with_pip=True)
    subprocess.run([build_py, *pip, "install", "scikit-build-core==1.1.2"], check=True, env=env)
    wheels = os.path.join(tmpdir_path, "wheels")
    subprocess.run([build_py, *pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, SOURCE],
                   check=True, env=env, cwd=tmpdir_path)
    built = [w for w in os.listdir(wheels) if w.endswith(".whl")]
    assert len(built) == 1 and built[0].startswith("quiver-"), built
    # ... and installed, offline, into another that has never seen the source.
    env_dir = os.path.join(tmpdir_path, "venv")
    venv.create(env_dir, with_pip=True)
    py = os.path.join(env_dir, "bin", "python")
    subprocess.run([py, *pip, "install", "--no-index", os.path.join(wheels, built[0])],
                   check=True, env=env, cwd=tmpdir_path)
    script = (
        "import quiver, os, sys\n"
        "assert os.path.dirname(quiver.__file__).startswith(sys.prefix), quiver.__file__\n"
        "libs = {l.split()[-1] for l in open('/proc/self/maps') if 'libquiver.so' in l}\n"
        "assert len(libs) == 1 and libs.pop().startswith(sys.prefix), libs  # the wheel's own copy\n"
        "calls = []\n"
        "@quiver.memo(name='install.add')\n"
        "def add(x, y=2):\n"
        "    calls.append(x)\n"
        "    return x + y\n"
        "c = quiver.Cache.open('cache')\n"
        "with quiver.cache(c):\n"
        "    assert add(1) == 3 and add(1, 2) == 3 and calls == [1]\n"
        "assert quiver.call_digest('shared.add', None, [1, 2], {}) == 'd2aec93101298c8daf75589ce9ce1f83'\n"
        "print('ok')\n")
    out = subprocess.run([py, "-c", script], env=env, cwd=tmpdir_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
