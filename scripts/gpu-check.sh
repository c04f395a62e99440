#!/usr/bin/env bash
# The CUDA checks and benchmark, for a machine with an NVIDIA GPU (such as the H100/H200 this
# project is sometimes lent, once, for minutes), run from the repository root with that machine's
# own Python: no project virtualenv, no internet, nothing installed. Only `harness.agent` (stdlib +
# numpy + torch), `benchmarks/` and, if the machine has pytest, the GPU tests are run.
#
# Everything goes to $OUT (default ./gpu-check-out) as it comes, so a run cut short still leaves
# what it did: gpu-check.log (all of the output below), steps.txt (each step's exit status and
# seconds), machine.txt, nvidia-smi*.txt, packages.txt, check/ (each --check session's result),
# pytest-gpu.xml, bench/ (every session's result, the pairs, the profiles, summary.json).
# Each step has its own time limit and a failing step does not stop the next; the benchmark gets
# what is left of BUDGET. Exit status 1 if anything failed, 2 if there is no CUDA GPU at all.
#
#   bash scripts/gpu-check.sh            # ~6 minutes on an H200, never much past BUDGET (450 s)
#   PAIRS=5 DURATION=3 BUDGET=900 CPUS=4,5 OUT=/tmp/gpu bash scripts/gpu-check.sh
#   ONLY=bench PAIRS=6 BUDGET=500 bash scripts/gpu-check.sh  # the benchmark alone
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD
export PYTHONUNBUFFERED=1  # the log keeps up with a run that is cut short
OUT=${OUT:-$PWD/gpu-check-out}
BUDGET=${BUDGET:-450}
# both sides of every benchmark pair on the same CPUs (CPUS= for none): eager mode is bound by the
# CPU launching kernels, and unpinned, one side's median moved 60% between two processes
CPUS=${CPUS-2,3}
mkdir -p "$OUT"
: > "$OUT/steps.txt"

# step NAME LIMIT_S COMMAND...: run COMMAND under a time limit, say how it ended
step() {
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  echo
  echo "== $name (limit ${limit} s, at ${SECONDS} s)"
  timeout -k 10 "$limit" "$@"
  rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "FAIL $name: still running after ${limit} s, stopped"
  fi
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  echo "$name exit=$rc seconds=$((SECONDS - t0))" >> "$OUT/steps.txt"
  return "$rc"
}

machine() {
  echo "== machine"
  timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit,persistence_mode --format=csv 2>&1 \
    || echo "nvidia-smi: not usable here"
  timeout 30 nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
  timeout 30 nvidia-smi -q > "$OUT/nvidia-smi-q.txt" 2>&1
  {
    uname -a; nproc; head -n 30 /etc/os-release 2>/dev/null
    grep -m1 "model name" /proc/cpuinfo; grep MemTotal /proc/meminfo
    env | grep -E '^(CUDA|NVIDIA|LD_LIBRARY_PATH|PYTHON|TORCH|OMP_)' | sort
  } > "$OUT/machine.txt" 2>&1
  timeout 60 "$PY" - > "$OUT/packages.txt" 2>&1 <<'EOF'
import importlib.metadata as md
print("\n".join(sorted(f"{d.metadata['Name']}=={d.version}" for d in md.distributions())))
EOF
  grep -iE '^(torch|torchvision|numpy|nvidia-ml-py|pynvml|onnxruntime|pytest)==' "$OUT/packages.txt"
  timeout 120 "$PY" - <<'EOF'
import platform, sys
print("python", sys.version.split()[0], sys.executable)
try:
    import numpy
    print("numpy", numpy.__version__)
except ImportError as err:
    print("FAIL numpy:", err)
try:
    import pynvml  # noqa: F401
    print("nvidia-ml-py present")
except ImportError:
    print("nvidia-ml-py absent: no fingerprint, state or energy from NVML")
try:
    import torchvision
    print("torchvision", torchvision.__version__)
except ImportError:
    print("torchvision absent: benchmarks/gpu_models.py builds the two models")
from harness.agent import isa
print("host ISA:", isa.kernel_flags(open("/proc/cpuinfo").read(), platform.machine())["isa"])
try:
    import torch
except ImportError as err:
    sys.exit(f"FAIL: {sys.executable} cannot import torch ({err})")
print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN",
      torch.backends.cudnn.version(), "| CUDA available", torch.cuda.is_available())
if not torch.cuda.is_available():
    sys.exit(f"FAIL: torch {torch.__version__} sees no CUDA GPU here")
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i}", torch.cuda.get_device_properties(i))
EOF
}

main() {
  local status=0
  echo "gpu-check: $(date -u '+%F %T') UTC in $PWD, python: $PY, out: $OUT, budget ${BUDGET} s"
  if ! machine; then
    echo "FAIL: no usable torch with CUDA on this machine; nothing else run"
    echo "machine exit=2 seconds=$SECONDS (no usable torch with CUDA)" >> "$OUT/steps.txt"
    return 2
  fi
  echo "machine exit=0 seconds=$SECONDS" >> "$OUT/steps.txt"

  if [ "${ONLY:-}" = bench ]; then
    # a later run whose checks and tests passed already: the whole budget for the pairs
    echo "== ONLY=bench: no --check and no GPU tests this run"
    echo "checks and tests skipped (ONLY=bench)" >> "$OUT/steps.txt"
  else
  # six fresh processes, each importing torch and starting CUDA: a cold first import can take a
  # minute on its own
  step "agent CUDA paths (benchmarks/gpu.py --check)" 180 \
    "$PY" benchmarks/gpu.py --check --out "$OUT/check" || status=1

  if "$PY" -c 'import pytest' 2>/dev/null; then
    # -W default: warnings are listed at the end instead of failing a test (pyproject's
    # "error"), as a warning from this machine's packages must not cost the one run; addopts
    # keeps pyproject's plugin exclusions (a labgrid plugin there would load otherwise)
    step "GPU tests (pytest -m gpu)" 120 \
      "$PY" -m pytest -q -m gpu -rsx -p no:cacheprovider -o addopts="-p no:anyio -p no:labgrid" \
      -W default \
      --junitxml="$OUT/pytest-gpu.xml" tests/test_torch_runtime.py tests/test_gpu_probe.py \
      || status=1
    # a GPU test skipped here passed nothing: say so beside the exit status
    "$PY" - "$OUT/pytest-gpu.xml" <<'EOF' || status=1
import sys
import xml.etree.ElementTree as ET
try:
    suite = next(ET.parse(sys.argv[1]).getroot().iter("testsuite"))
except (OSError, ET.ParseError, StopIteration) as err:
    sys.exit(f"FAIL GPU tests: no report ({err})")
n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
print("GPU tests: {tests} run, {failures} failed, {errors} errors, {skipped} skipped".format(**n))
if n["skipped"] or not n["tests"]:
    sys.exit("FAIL GPU tests: skipped on a GPU machine (reasons above)")
EOF
  else
    echo "== pytest absent: GPU tests not run (the --check above covers the same paths)"
    echo "pytest absent" >> "$OUT/steps.txt"
  fi
  fi

  local left=$((BUDGET - SECONDS - 15))
  if [ "$left" -lt 90 ]; then left=90; fi
  step "benchmark: edgebench vs a bare CUDA-events loop (benchmarks/gpu.py)" $((left + 30)) \
    "$PY" benchmarks/gpu.py --pairs "${PAIRS:-3}" --duration "${DURATION:-1.5}" \
    --cpus "$CPUS" --budget "$left" --out "$OUT/bench" || status=1

  echo
  echo "== steps"
  cat "$OUT/steps.txt"
  echo "== done in $SECONDS s, exit $status"
  return "$status"
}

main 2>&1 | tee "$OUT/gpu-check.log"
exit "${PIPESTATUS[0]}"
