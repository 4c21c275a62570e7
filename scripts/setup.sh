#!/usr/bin/env bash
# Install what quiver's build and tests need, when it is missing, and make
# the Python virtual environment. Quiet, and quick when everything is there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${QUIVER_BUILD_DIR:-$root/build}

# Debian packages: compilers, the C libraries, the binding tools, test runners.
packages=(cmake make pkg-config gcc clang libclang-rt-14-dev liblmdb-dev lmdb-utils libxxhash-dev
          libffi-dev swig lua5.4 liblua5.4-dev lua-busted luarocks libcmocka-dev
          libhiredis-dev redis-server libssl-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Python virtual environment, from the machine's python3, with the pinned
# requirements; reinstalled only when requirements-dev.txt changes.
python=${PYTHON:-python3}
venv="$build/venv"
mkdir -p "$build"
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv from $($python --version 2>&1)"
  "$python" -m venv "$venv"
fi
want=$(sha256sum "$root/requirements-dev.txt" | cut -d' ' -f1)
have=$(cat "$venv/.requirements.sha256" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  echo "setup: installing requirements-dev.txt into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/requirements-dev.txt"
  echo "$want" > "$venv/.requirements.sha256"
fi
