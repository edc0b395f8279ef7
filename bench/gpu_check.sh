#!/usr/bin/env bash
# The GPU check: medaudit's GPU tests and its three GPU benchmarks on one CUDA GPU, in one command,
# each step under its own time limit, every step's output kept in a folder.
#
# Run it from a clone of the repository, in an environment made by the README's test command
# (torch and torchvision with CUDA, then `pip install -e '.[test]'`; on Linux x86_64 and Windows
# x64 that brings onnxruntime-gpu, the ONNX Runtime with the CUDA provider):
#   bash bench/gpu_check.sh              # outputs in $OUT, else /tmp/medaudit-gpu
#   bash bench/gpu_check.sh DIR          # outputs in DIR
#   bash bench/gpu_check.sh --dry-run    # print the steps and their limits, run nothing
# It takes at most about 9 minutes (the step limits below add up to 540 s; steps that finish
# sooner take less) and uses the first GPU (cuda, cuda:0). bench/README.md says what each step
# measures, what it prints and what to compare.
#
# Output folder: gpu.txt (the card, driver, torch, CUDA, ONNX Runtime providers), one file per
# step (gpu_tests.txt, train_throughput.txt, probe.txt, audit_wall.txt), summary.txt (each
# step's exit status and seconds; exit 124 means it ran past its limit). The headline lines are
# printed at the end. The script's own exit status is 1 when a step failed or ran out of time.
#
# Environment: PYTHON (default python3) is the interpreter. On a GPU node without network, set
# WHEELS to a folder of wheels the node lacks: they are installed into a private folder first
# (the environment itself is not changed). Make the folder on a machine with network, e.g. for
# Python 3.12 on Linux x86_64 (name the packages your node lacks):
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d wheels \
#     jsonschema jsonschema-specifications referencing rpds-py platformdirs
#   WHEELS=wheels bash bench/gpu_check.sh
set -uo pipefail
PY=${PYTHON:-python3}
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
    dry_run=1
    shift
fi
OUT=${1:-${OUT:-/tmp/medaudit-gpu}}
case $OUT in /*) ;; *) OUT="$PWD/$OUT" ;; esac  # relative names: from where it was started
case ${WHEELS:-/} in /*) ;; *) WHEELS="$PWD/$WHEELS" ;; esac
cd "$(dirname "$0")/.." || exit 1  # the repository root: the steps name paths inside it

if [ "$dry_run" = 0 ]; then
    mkdir -p "$OUT" || exit 1
    : >"$OUT/summary.txt"
    if [ -n "${WHEELS:-}" ]; then
        site=$(mktemp -d "${TMPDIR:-/tmp}/medaudit-gpu-site.XXXXXX") || exit 1
        trap 'rm -rf "$site"' EXIT
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" "$WHEELS"/*.whl || exit 1
        export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    else
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this clone's audit package
    fi
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "no CUDA GPU visible to torch ($PY); the GPU check needs one" >&2
        exit 1
    fi
fi

began=$(date +%s)
failed=0
step() {  # step NAME SECONDS COMMAND...: run, keep its output, note its exit status and time
    local name=$1 limit=$2
    shift 2
    if [ "$dry_run" = 1 ]; then
        echo "$name (limit $limit s): $*"
        return
    fi
    local t0 code
    t0=$(date +%s)
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    code=$?
    [ "$code" = 0 ] || failed=1
    echo "$name: exit $code in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
}

if [ "$dry_run" = 0 ]; then
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
        "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
        "$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
    } >"$OUT/gpu.txt" 2>&1
fi

# The @pytest.mark.gpu tests: audits on the GPU, two workers on one GPU, device tensors, ONNX CUDA.
step gpu_tests 150 "$PY" -m pytest -m gpu -p no:cacheprovider -rs tests/test_gpu.py
# Fine-tuning images/s: medaudit's data path against a PNG Dataset + DataLoader, ResNet50 at 224 px.
step train_throughput 100 "$PY" bench/train_throughput.py --device cuda --model resnet50 \
    --input-size 224 --batch-size 256 --images 512 --steps 30 --jobs 12
# Inference images/s: ONNX Runtime (CUDA provider) against PyTorch eager, ResNet50 at 224 px.
step probe 60 "$PY" bench/probe.py --device cuda --arch resnet50 --images 512 --batch-size 128
# Wall time of one confounder's study-sized grid (6 levels x 5 folds x 2 models, 30 epochs):
# medaudit's runner against the same runs one after another (the first 4 naive runs, scaled).
step audit_wall 230 "$PY" bench/audit_wall.py --devices cuda --images 331 \
    --levels 0,0.1,0.2,0.5,0.8,1 --folds 5 --epochs 30 --patience 5 --batch-size 64 \
    --arch resnet50 --input-size 224 --naive-runs 4

[ "$dry_run" = 1 ] && exit 0
echo "total: $(( $(date +%s) - began )) s" | tee -a "$OUT/summary.txt"
headline="ratio|images/s|medaudit runner:|naive, one run|same AUCs|largest output difference"
headline="$headline|passed|failed|skipped|error"
for name in gpu train_throughput probe audit_wall gpu_tests; do
    [ -f "$OUT/$name.txt" ] || continue
    echo "== $name"
    if [ "$name" = gpu ]; then cat "$OUT/gpu.txt"; else grep -hE "$headline" "$OUT/$name.txt" | tail -12; fi
done
exit "$failed"
