#!/usr/bin/env bash
# The GPU checks of the training (issue "GPU training measured on a GPU"), as the one command of a
# device run, from the repository root:
#   bash benchmarks/gpu_check.sh              (results under $OUT, or /tmp/gpu-check)
# It runs, each in a process of its own (a CPU run hides the GPUs from its process):
#   - the throughput benchmark (batch 512 and 8,192; the project eager and compiled into CUDA
#     graphs, beside a plain CUDA-graph loop) and the sizing run (181 channels x 1 year), on the
#     GPU and the machine's CPU;
#   - the pipeline's training on the default data (30 epochs), then evaluation, on the GPU (eager
#     and compiled) and on the machine's CPU cores: seconds, val_nll and Fc1 side by side.
# Before, on this machine (once):
#   bash benchmarks/gpu_check.sh --prepare    the default data's scaled sets, and the wheels
#   poetry run bash benchmarks/gpu_check.sh --dry-run
#                                             the same steps, small, on the CPU, the packages the
#                                             GPU machine lacks made unimportable (no device time)
# and carry both folders: carry ["benchmarks/results/gpu-data", ".whl"].
# The modules are run directly: run_all imports every benchmark, and the preprocessing one needs
# Dask, which that machine lacks.
set -euo pipefail
data=${GPU_CHECK_DATA:-benchmarks/results/gpu-data}
# What evaluation needs that the GPU machine's image lacks: the report's plotly (module names).
export GPU_CHECK_CARRIED="plotly"
mode=${1:-run}
if [[ "$mode" == "--prepare" ]]; then
  poetry run python -m benchmarks.bench_gpu prepare "$data"
  mkdir -p .whl
  # The versions this project locks.
  wheels=$(poetry run python -c "import importlib.metadata as m; print(*(f'{n}=={m.version(n)}' for n in '$GPU_CHECK_CARRIED'.split()))")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl $wheels
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  ls -l .whl "$data"
  exit 0
fi
dry=()
if [[ "$mode" == "--dry-run" ]]; then
  export PYTHONPATH="$PWD/benchmarks/device_sim${PYTHONPATH:+:$PYTHONPATH}"
  dry=(--dry-run)
elif compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
if [[ ! -f "$data/scaler.json" ]]; then
  echo "$data is missing: run 'bash benchmarks/gpu_check.sh --prepare' here and carry it" >&2
  exit 2
fi
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi") | tee "$out/gpu.csv"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee "$out/torch.txt"
gpu=$(python3 -c "import torch; print('gpu' if torch.cuda.is_available() else 'cpu')")
python3 - "$out/results.json" "${dry[@]}" <<'PY' 2>&1 | tee "$out/bench.log"
import json
import sys

from benchmarks import bench_gpu, bench_sizing

if "--dry-run" in sys.argv:
    rows = bench_gpu.run(n_rows=4_096, n_features=4, batch_sizes=(256,), epochs=1) + bench_sizing.run(4_096, 8)
else:
    rows = bench_gpu.run() + bench_sizing.run()
for row in rows:
    print(json.dumps(row))
with open(sys.argv[1], "w") as handle:
    json.dump(rows, handle, indent=1)
PY
# Without a GPU (a dry run) the "GPU" leg runs on the CPU too: a check that it runs.
compile=(--compile none)
[[ "$gpu" == "gpu" ]] && compile+=(--compile reduce-overhead)
{
  python3 -m benchmarks.bench_gpu default-data "$data" --accelerator "$gpu" "${compile[@]}" \
    --out "$out/default_gpu.json" "${dry[@]}"
  CUDA_VISIBLE_DEVICES="" python3 -m benchmarks.bench_gpu default-data "$data" --accelerator cpu \
    --out "$out/default_cpu.json" "${dry[@]}"
  python3 -m benchmarks.bench_gpu compare "$out/default_gpu.json" "$out/default_cpu.json" --out "$out/default.json"
} 2>&1 | tee "$out/default.log"
