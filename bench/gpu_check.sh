#!/usr/bin/env bash
# The whole GPU check for a session lent a device machine: one call, figures written to $OUT.
#
# The device machine has Python 3.12, torch and no network. Prepare the wheels it lacks here,
# once (the folder is git-ignored locally through .git/info/exclude):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl \
#     jsonschema jsonschema-specifications referencing rpds-py platformdirs
# then run it through the device tool with carry [".whl"] and timeout_s 570:
#   bash bench/gpu_check.sh
# Each step has its own time limit, so a slow step leaves the others' figures in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/medaudit-gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD"
began=$(date +%s)
step() {  # step NAME SECONDS COMMAND...: run, keep its output, note its exit status and time
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    echo "$name: exit $? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/gpu.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >>"$OUT/gpu.txt"
step gpu_tests 150 python3 -m pytest -m gpu -p no:cacheprovider -rs tests/test_gpu.py
step train_throughput 100 python3 bench/train_throughput.py --device cuda --model resnet50 \
    --input-size 224 --batch-size 256 --images 512 --steps 30 --jobs 12
step probe 60 python3 bench/probe.py --device cuda --arch resnet50 --images 512 --batch-size 128
step audit_wall 230 python3 bench/audit_wall.py --devices cuda --images 331 \
    --levels 0,0.1,0.2,0.5,0.8,1 --folds 5 --epochs 30 --patience 5 --batch-size 64 \
    --arch resnet50 --input-size 224 --naive-runs 4
echo "total: $(( $(date +%s) - began )) s" | tee -a "$OUT/summary.txt"
grep -h "ratio\|images/s\|passed\|failed\|skipped" "$OUT"/*.txt | tail -40
