import os
import tempfile

import pytest

# The default cache is the user's own (~/.cache/quiver) unless QUIVER_CACHE
# says otherwise: tests that use it, and the workers and children they start
# (which inherit the environment), get a private memory cache instead.
os.environ.setdefault("QUIVER_CACHE", ":memory:")


@pytest.fixture
def tmpdir_path():
    """A fresh directory under the build tree's test-tmp (or the system's)."""
    base = os.environ.get("QV_TEST_TMP") or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix="py-", dir=base)
    os.chmod(d, 0o700)
    yield d
    import shutil
    shutil.rmtree(d, ignore_errors=True)
