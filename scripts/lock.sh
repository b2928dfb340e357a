#!/usr/bin/env bash
# Writes requirements.lock: every Python package of a tested environment, pinned (pip freeze).
#   Usage: bash scripts/lock.sh [FREEZE_FILE]   (default: freeze the current environment)
# The lock is a pip constraints file: scripts/setup.sh installs `-c requirements.lock -e .[extras]`, so every
# package it installs comes at the locked version. Upgrading a dependency = a new lock + a rerun of everything.
set -euo pipefail
cd "$(dirname "$0")/.."
src="${1:-}"
{
    echo "# requirements.lock: the versions the tests pass with (written by scripts/lock.sh; check with"
    echo "# scripts/check-latest.sh). Python $(python3 -c 'import sys; print(".".join(map(str, sys.version_info[:2])))'), $(uname -m)."
    if [ -n "$src" ]; then grep -v '^#' "$src"; else python3 -m pip freeze --exclude-editable --disable-pip-version-check; fi \
        | grep -v -E '^(-e |mu-llama==|pip==|setuptools==|wheel==)' \
        | sed -E 's/^([A-Za-z0-9_.-]+==[^+ ]+)\+[A-Za-z0-9.]+$/\1/' | sort -f   # ==2.13.0 admits 2.13.0+cpu and CUDA builds
} > requirements.lock.tmp
mv requirements.lock.tmp requirements.lock
echo "lock: wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
