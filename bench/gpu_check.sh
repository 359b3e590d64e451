#!/usr/bin/env bash
# The whole GPU check in one run, for a session that is lent the device machine:
# the GPU tests (pytest -m gpu) and the full GPU benchmark, everything written to $OUT (or bench/results).
#
# Here, before the run (the device has no package registry; fastnn needs array-api-compat there):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform any -d .whl array-api-compat array-api-strict
# (.whl/ is in .gitignore, so it travels only when carried.)
# Then: run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=480), copy $OUT's files to
# bench/results/ and give the machine back. It writes seven files ($OUT returns at most eight):
# gpu-device.txt, gpu-tests.txt, gpu-graph-probe.txt, gpu-bench.txt, gpu-<name>.json/.md, gpu-<name>-tf32.json.
set -uo pipefail
out="${OUT:-bench/results}"
mkdir -p "$out" /tmp/site
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
ln -sfn "$PWD/cli" /tmp/site/fastnn_cli  # the CLI package without an install
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu-device.txt"
python3 -m pytest -m gpu -q -rs -p no:cacheprovider tests/ 2>&1 | tee "$out/gpu-tests.txt"
python3 -m bench.graph_probe 2>&1 | tee "$out/gpu-graph-probe.txt"  # is a CUDA-graph option possible with this CuPy?
device=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9_-')
python3 -m bench --only fastnn-cupy,torch-cuda --torch-adam default,fused --out "$out/gpu-$device.json" --markdown "$out/gpu-$device.md" 2>&1 | tee "$out/gpu-bench.txt"
python3 -m bench --only fastnn-cupy,torch-cuda --tf32 --out "$out/gpu-$device-tf32.json" 2>&1 | tail -20 || true
