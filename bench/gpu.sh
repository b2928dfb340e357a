#!/usr/bin/env bash
# One-command GPU benchmark from a clean checkout (GitHub issue 9):
#
#     bash bench/gpu.sh                      # full suite on cuda -> bench/results/suite_cuda.{json,md}
#     bash bench/gpu.sh --runs 5 --clips 64  # any bench/suite.py option is passed through
#
# Setup: uses the current Python if it already has CUDA torch + bitsandbytes + mu-llama; otherwise creates
# .venv-bench/ and installs the checkout with the quant extra (PyPI's Linux torch wheel is the CUDA build).
# Model: random weights in MU-LLaMA's shapes (MERT-330M + LLaMA-2-7B), no hub access. The 7B weights are drawn
# once on the GPU and cached under $MU_LLAMA_CACHE/bench/ (13.5 GB fp16 safetensors; needs ~30 GB free disk).
#
#     bash bench/gpu.sh --dry-run            # no GPU: the same code paths on CPU in seconds (tiny random LLaMA +
#                                            # MERT, NF4 via bitsandbytes' CPU backend) -> $TMPDIR/mu-llama-gpu-dry/
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ "${1:-}" = "--dry-run" ]; then
    shift
    OUT=${TMPDIR:-/tmp}/mu-llama-gpu-dry
    echo "== dry run on CPU: would set up .venv-bench if needed, then run: bench/suite.py --device cuda $*" >&2
    "$PY" -c "import torch, bitsandbytes, mu_llama" || { echo "dry run needs torch + bitsandbytes + mu-llama" >&2; exit 1; }
    export MU_LLAMA_CACHE=${MU_LLAMA_CACHE:-$PWD/.cache/mu_llama} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    exec "$PY" bench/suite.py --smoke --modes none,8bit,4bit --batch-sizes 1,2 --clips 2 --out "$OUT" "$@"
fi
if ! "$PY" -c "import torch, bitsandbytes, mu_llama; assert torch.cuda.is_available()" 2>/dev/null; then
    echo "== setup: .venv-bench (torch CUDA wheel + mu-llama[quant])" >&2
    [ -d .venv-bench ] || "$PY" -m venv .venv-bench
    # shellcheck disable=SC1091
    . .venv-bench/bin/activate
    PY=python
    python -m pip install -q --upgrade pip
    python -m pip install -q -c requirements.lock -e ".[quant]"
    python -c "import torch; assert torch.cuda.is_available(), 'torch has no CUDA here: ' + torch.__version__"
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export MU_LLAMA_CACHE=${MU_LLAMA_CACHE:-$PWD/.cache/mu_llama}
export TOKENIZERS_PARALLELISM=false
echo "== suite: $PY bench/suite.py --device cuda $*" >&2
exec "$PY" bench/suite.py --device cuda "$@"
