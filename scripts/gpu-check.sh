#!/usr/bin/env bash
# The CUDA checks and benchmark, for a machine with an NVIDIA GPU (such as the H100/H200 this
# project is sometimes lent), run from the repository root with that machine's own Python: no
# project virtualenv, no internet. Only `harness.agent` (stdlib + numpy + torch) and, if the
# machine has pytest, the GPU tests are run. Prints everything; exit status 1 if a check failed.
#
#   bash scripts/gpu-check.sh            # ~4 minutes on an H200: checks, GPU tests, benchmark
#   PAIRS=5 DURATION=3 bash scripts/gpu-check.sh
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD
status=0

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
"$PY" -c 'import sys, torch, numpy; print("python", sys.version.split()[0], "| torch",
torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available(),
"| numpy", numpy.__version__)'
"$PY" -c 'import pynvml; print("nvidia-ml-py present")' || echo "nvidia-ml-py absent"
"$PY" -c 'import torchvision; print("torchvision", torchvision.__version__)' \
  || echo "torchvision absent: benchmark needs --models DIR"
"$PY" -c 'from harness.agent import isa; import platform
print("host ISA:", isa.kernel_flags(open("/proc/cpuinfo").read(), platform.machine())["isa"])'

echo "== agent CUDA paths (benchmarks/gpu.py --check)"
timeout 240 "$PY" benchmarks/gpu.py --check || status=1

if "$PY" -c 'import pytest' 2>/dev/null; then
  echo "== GPU tests (pytest -m gpu)"
  timeout 240 "$PY" -m pytest -q -m gpu -p no:cacheprovider -o addopts="" \
    -W "ignore::DeprecationWarning" tests/test_torch_runtime.py tests/test_gpu_probe.py || status=1
else
  echo "== pytest absent: GPU tests skipped (the --check above covers the same paths)"
fi

echo "== benchmark: edgebench vs a bare CUDA-events loop (benchmarks/gpu.py)"
timeout 420 "$PY" benchmarks/gpu.py --pairs "${PAIRS:-3}" --duration "${DURATION:-2}" || status=1
exit $status
