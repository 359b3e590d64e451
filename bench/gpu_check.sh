#!/usr/bin/env bash
# fastnn's whole GPU check in one run of about ten minutes, for a session that is lent the GPU machine
# (issue #13). It runs, each step under its own time limit, with a timestamp before and after:
#   1. pytest -m gpu                 CuPy against NumPy, the fused Adam kernel, TF32, train/evaluate end to end
#   2. python -m bench               fastnn on CuPy against PyTorch CUDA (torch's default and fused Adam),
#                                    batch 256, 1024, 4096, full float32 products
#   3. fastnn train --device gpu     the default recipe, for its wall time (see "Data" below)
#   4. python -m bench --tf32        step 2 with TF32 products in both frameworks
#   5. python -m bench.overhead      the host's share of a step at batch 256, and python -m bench.graph_probe
# A fresh machine compiles about a hundred CuPy kernels (about 1.5 s each) during step 1; later steps
# reuse CuPy's kernel cache on that machine.
#
# The device machine has Python 3.12, NumPy, CuPy (cupy-cuda13x), PyTorch (CUDA), click, rich, pytest and
# matplotlib, but no package index: the rest of fastnn's needs travel as wheels in .whl/ (git-ignored).
# Fetch them here once (pure-Python wheels; the versions CI tests with):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       array-api-compat==1.16.0 array-api-strict==2.6.1 threadpoolctl==3.6.0
# Then call the device tool's run with them carried (timeout_s 600 is one call's maximum):
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Without them the check stops at once, saying so.
#
# What it writes (under $OUT, which the tool brings back, at most eight files; bench/results/ without $OUT),
# with <device> the GPU's name as nvidia-smi gives it, e.g. NVIDIA-H200:
#   gpu-steps.txt          each step's start, exit status and duration
#   gpu-tests.txt          the GPU, the library versions, pytest -m gpu, the CUDA-graph probe
#   gpu-<device>.json/.md  step 2's numbers and table         gpu-<device>-tf32.json/.md  step 4's
#   gpu-bench.txt          both benchmarks' screens and the overhead measurement
#   gpu-train.txt          step 3's output and its wall time
# Copy them to bench/results/ and commit them there; bench/results/README.md and the project README
# quote the tables (say what ran where, with the command above).
#
# Data: the real CIFAR-10 archive cannot travel (170 MB; a call carries at most 64 MiB, and the data must
# not be copied into the working tree), so step 3 trains on a stand-in of CIFAR-10's sizes
# (tests/_util.py's write_learnable_cifar). Its wall time is the default recipe's; its accuracy says
# nothing about CIFAR-10.
set -uo pipefail
out="${OUT:-bench/results}"
site=$(mktemp -d)  # the carried wheels, installed for this run only
mkdir -p "$out"
steps="$out/gpu-steps.txt"
: >"$steps"

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
fi
ln -sfn "$PWD/cli" "$site/fastnn_cli"  # the CLI package without an install
export PYTHONPATH="$PWD:$site" PYTHONUNBUFFERED=1
if ! python3 -c "import array_api_compat, array_api_strict" 2>/dev/null; then
    echo "gpu_check: array-api-compat or array-api-strict is missing: the wheels in .whl/ did not come along." \
        "Fetch them and carry .whl (see this script's header)." | tee -a "$steps"
    exit 2
fi

# step NAME SECONDS FILE COMMAND...: run COMMAND under its own time limit, its output added to FILE and shown
step() {
    local name=$1 limit=$2 file="$out/$3" start=$SECONDS rc
    shift 3
    echo "== $(date -u +%H:%M:%S) $name (limit ${limit}s)" | tee -a "$steps" "$file"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$file"
    rc=${PIPESTATUS[0]}
    local note=""
    [ "$rc" = 124 ] && note=" (stopped at its time limit)"
    echo "== $(date -u +%H:%M:%S) $name: exit $rc after $((SECONDS - start)) s$note" | tee -a "$steps" "$file"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$out/gpu-tests.txt"
python3 -c "import sys, numpy, cupy, torch; print(sys.version.split()[0], 'numpy', numpy.__version__,
'cupy', cupy.__version__, 'torch', torch.__version__)" 2>&1 | tee -a "$out/gpu-tests.txt"
device=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9_-')
batches=256,1024,4096

step "pytest -m gpu" 220 gpu-tests.txt python3 -m pytest -m gpu -q -rs -p no:cacheprovider tests/
step "bench, float32" 80 gpu-bench.txt python3 -m bench --only fastnn-cupy,torch-cuda --batch-sizes "$batches" \
    --torch-adam default,fused --out "$out/gpu-$device.json" --markdown "$out/gpu-$device.md"
rm -rf /tmp/gpu-data /tmp/gpu-run  # a rerun on a warm machine starts afresh
step "stand-in data" 20 gpu-train.txt python3 -c "import sys; sys.path.insert(0, 'tests')
from pathlib import Path; from _util import write_learnable_cifar; print(write_learnable_cifar(Path('/tmp/gpu-data')))"
step "fastnn train --device gpu" 120 gpu-train.txt python3 -c "import sys; from fastnn_cli.main import cli
sys.argv[0] = 'fastnn'; cli()" train --device gpu --data-dir /tmp/gpu-data --out /tmp/gpu-run
step "bench, TF32" 60 gpu-bench.txt python3 -m bench --only fastnn-cupy,torch-cuda --batch-sizes "$batches" \
    --torch-adam default,fused --tf32 --out "$out/gpu-$device-tf32.json" --markdown "$out/gpu-$device-tf32.md"
step "overhead at batch 256" 40 gpu-bench.txt python3 -m bench.overhead --device gpu --hidden 1024,512 \
    --batch-size 256 --steps 150 --repeats 5
step "CUDA-graph probe" 15 gpu-tests.txt python3 -m bench.graph_probe
cat "$steps"
