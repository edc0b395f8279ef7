#!/usr/bin/env bash
# A by-hand run of the demo-sized plan (4 confounders x 6 levels x 2 folds x 2 models = 96
# runs; 64 px, 20 epochs, 300 phantom patients) with a torchvision ResNet50 state_dict as the user
# model and an official-layout RadImageNet ResNet50 file (`backbone.<i>.*` keys) as the reference,
# both with random weights made here. Resumable: run it again and it says "N of 96 runs already
# done"; each attempt's wall time is appended to DIR/times.log, and results.json records every
# run's own seconds.
#   bash bench/resnet50_demo_plan.sh [DIR] [DEVICES]     # defaults: /tmp/r50-demo cpu,cpu
# Measured on 2 CPU cores, two workers (2026-11-26, other work running alongside part of the time):
# the 96 runs' own times sum to 26,750 s (median 234 s per run; sex runs, on fewer cases, 109 s),
# so about 3.7 h of wall time; on an idle machine about 2.7 h (72 runs x ~230 s + 24 x ~105 s, / 2).
# On a GPU: bash bench/resnet50_demo_plan.sh /tmp/r50-demo cuda
set -euo pipefail
dir=${1:-/tmp/r50-demo}
devices=${2:-cpu,cpu}
mkdir -p "$dir"
if [ ! -f "$dir/user_r50.pt" ] || [ ! -f "$dir/radimagenet_r50.pt" ]; then
  python - "$dir" <<'PY'
import sys

import torch
import torchvision

folder = sys.argv[1]
torch.manual_seed(0)
torch.save(torchvision.models.resnet50().state_dict(), f"{folder}/user_r50.pt")
body = torch.nn.Sequential(*list(torchvision.models.resnet50().children())[:9])
torch.save({f"backbone.{k}": v for k, v in body.state_dict().items()}, f"{folder}/radimagenet_r50.pt")
PY
fi
start=$(date +%s)
echo "start $(date -u +%FT%TZ) devices $devices" >>"$dir/times.log"
set +e
medaudit check "$dir/user_r50.pt" --modality cxr --synthetic --reference "$dir/radimagenet_r50.pt" \
  --out "$dir/out" --cache-dir "$dir/cache" --epochs 20 --patience 20 --batch-size 64 \
  --input-size 64 --image-size 64 --folds 2 --synthetic-patients 300 --device "$devices"
code=$?
echo "exit $code after $(( $(date +%s) - start )) s at $(date -u +%FT%TZ)" >>"$dir/times.log"
exit $code
