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
# bench/results/ and give the machine back. It writes six files ($OUT returns at most eight):
# gpu-tests.txt (the card, pytest -m gpu, the CUDA-graph probe), gpu-bench.txt (the benchmarks' screens),
# gpu-<card>.json and .md (fastnn-cupy against torch-cuda), gpu-<card>-tf32.json, gpu-overhead.txt.
set -uo pipefail
out="${OUT:-bench/results}"
mkdir -p "$out" /tmp/site
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
ln -sfn "$PWD/cli" /tmp/site/fastnn_cli  # the CLI package without an install
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu-tests.txt"
python3 -m pytest -m gpu -q -rs -p no:cacheprovider tests/ 2>&1 | tee -a "$out/gpu-tests.txt"
python3 -m bench.graph_probe 2>&1 | tee -a "$out/gpu-tests.txt"  # is a CUDA-graph option possible with this CuPy?
device=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9_-')
python3 -m bench --only fastnn-cupy,torch-cuda --torch-adam default,fused --out "$out/gpu-$device.json" --markdown "$out/gpu-$device.md" 2>&1 | tee "$out/gpu-bench.txt"
python3 -m bench --only fastnn-cupy,torch-cuda --tf32 --out "$out/gpu-$device-tf32.json" 2>&1 | tee -a "$out/gpu-bench.txt"
# the host's share of a step with augmentation, as fastnn train runs it: is gathering 8 batches at once worth it here?
python3 -m bench.overhead --device gpu --hidden 1024,512 --batch-size 256 --steps 150 --repeats 5 2>&1 | tee "$out/gpu-overhead.txt"
