#!/usr/bin/env bash
# Drift check: a fresh virtual environment with the NEWEST versions pyproject's ranges allow (torch stays pinned),
# empty pip and model caches, then the CI test suite. Shows which versions differ from requirements.lock.
#   Usage: bash scripts/check-latest.sh [--write-lock] [pytest args]
#   --write-lock   when the tests pass, replace requirements.lock with these versions (review, then commit)
# Run it weekly and before each release (README: "Keeping up with dependencies").
set -euo pipefail
cd "$(dirname "$0")/.."
write=0; [ "${1:-}" = "--write-lock" ] && { write=1; shift; }
work=$(mktemp -d -t mu-llama-latest.XXXXXX)
echo "check-latest: venv, caches and logs in $work"
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
export PIP_CACHE_DIR="$work/pip-cache" HF_HOME="$work/hf" MU_LLAMA_CACHE="$work/mu_llama-cache"
export MU_LLAMA_UNLOCKED=1
set +e
bash scripts/test.sh "$@" 2>&1 | tee "$work/test.log"
rc=${PIPESTATUS[0]}
set -e
python3 -m pip freeze --exclude-editable --disable-pip-version-check | sort -f > "$work/latest.lock"
echo "check-latest: versions that differ from requirements.lock (< locked, > newest):"
diff <(grep -v '^#' requirements.lock | sort -f) "$work/latest.lock" | grep '^[<>]' || echo "  none"
if [ "$rc" -ne 0 ]; then
    echo "check-latest: FAILED (pytest exit $rc) with the newest versions; the lock keeps users on tested versions." >&2
    echo "  Find the package that broke it (diff above), fix the code or add an upper bound in pyproject.toml." >&2
    exit "$rc"
fi
if [ "$write" -eq 1 ]; then
    bash scripts/lock.sh "$work/latest.lock"
fi
echo "check-latest: passed with the newest versions"
