#!/usr/bin/env bash
# The GPU checks of the training (README, "Against the fastest plain loop"), as the one command
# of a device run, from the repository root:
#   bash benchmarks/gpu_check.sh        (results under $OUT, or /tmp/gpu-check)
# It runs the throughput benchmark (batch 512 and 8,192; the project eager and compiled into CUDA
# graphs, beside a plain CUDA-graph loop) and the sizing run (181 channels x 1 year), on the GPU
# and the machine's CPU. The two modules are run directly: run_all imports every benchmark, and
# the preprocessing one needs Dask, which that machine lacks (these two need torch, Lightning,
# numpy, pandas and pyarrow). Wheels of anything else missing there travel in .whl (git-ignored;
# see the device tool's README).
set -euo pipefail
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi") | tee "$out/gpu.csv"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee "$out/torch.txt"
python3 - "$out/results.json" <<'PY' 2>&1 | tee "$out/bench.log"
import json
import sys

from benchmarks import bench_gpu, bench_sizing

rows = bench_gpu.run() + bench_sizing.run()
for row in rows:
    print(json.dumps(row))
with open(sys.argv[1], "w") as handle:
    json.dump(rows, handle, indent=1)
PY
