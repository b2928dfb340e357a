#!/usr/bin/env bash
# Set-up plus the test suite (the README's second command; .ci/run runs exactly this).
# Slow tests are marked `slow` and run outside CI:  python -m pytest -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
set +e
python3 -m pytest -m "not slow" -q "$@"
rc=$?
set -e
# pytest exit 5 = no tests collected: that is a failure for us, never a pass.
[ "$rc" -eq 5 ] && echo "test.sh: no tests were collected" >&2
exit "$rc"
