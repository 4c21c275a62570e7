"""`pip install .` in a fresh virtual environment builds a working quiver."""
import os
import shutil
import subprocess
import sys
import venv

import pytest

SOURCE = os.environ.get("QUIVER_SOURCE") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.mark.skipif(shutil.which("cmake") is None, reason="pip install . builds through CMake, which is missing")
def test_pip_install_in_fresh_venv(tmpdir_path):
    env_dir = os.path.join(tmpdir_path, "venv")
    venv.create(env_dir, with_pip=True)
    py = os.path.join(env_dir, "bin", "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH")}
    pin = "scikit-build-core==1.1.2"
    # The build backend from PyPI, then our package without another isolated
    # environment (one download instead of two).
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", pin], check=True, env=env)
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-build-isolation",
                    SOURCE], check=True, env=env, cwd=tmpdir_path)
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
