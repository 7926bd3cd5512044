#!/usr/bin/env bash
# The GPU measurements in one go, as Markdown on stdout (about 6 minutes on one recent GPU):
#   1. the training step against a bare loop: deit_small_patch16_224, bf16, batch 256, TokenMix,
#      with TokenMix's share of the step, and the same under torch.compile (run.compile=true);
#   2. the teacher's cost per step: the online CAM teacher against offline maps (gather + cut);
#   3. with two or more GPUs: `suite train --nproc 2` (nccl) against one process, same run.
#
#   benchmarks/gpu.sh > gpu-results.md        # on a CUDA machine, from the repository root
#   benchmarks/gpu.sh --dry-run               # the same script in miniature on any machine (CPU:
#                                             # gloo, no compile rows); its numbers mean nothing
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
cuda=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
if [ "$DRY" = 0 ] && [ "$cuda" = 0 ]; then
    echo "benchmarks/gpu.sh measures CUDA devices and none is here; --dry-run runs it in miniature" >&2
    exit 2
fi
gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
device=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')")
echo "# GPU benchmarks: $device x $gpus, torch $("$PY" -c 'import torch; print(torch.__version__)'), $(date -u +%F)"
[ "$DRY" = 1 ] && echo "(dry run: tiny sizes, numbers mean nothing)"

echo; echo "## 1. Training step against a bare loop"; echo
if [ "$DRY" = 1 ]; then
    "$PY" benchmarks/bench_trainer.py --case gpu --dry-run --threads 1
else
    "$PY" benchmarks/bench_trainer.py --case gpu --compile
fi

echo; echo "## 2. Teacher cost per step: online CAM teacher vs offline maps"; echo
if [ "$DRY" = 1 ]; then
    "$PY" benchmarks/bench_offline_maps.py --batch 8 --map 4 --grid 4 --count 64 --img 32 --repeats 2 --threads 1
else
    "$PY" benchmarks/bench_offline_maps.py --batch 256 --map 18 --grid 14 --count 100000 --teacher resnet50
fi

echo; echo "## 3. Data parallel: --nproc 2 against one process"; echo
if [ "$DRY" = 1 ] || [ "$gpus" -ge 2 ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    if [ "$DRY" = 1 ]; then
        run=(data=builtin data.train_size=256 data.batch_size=32 model.depth=1 model.embed_dim=48 run.threads=1)
    else
        run=(data=builtin data.img_size=224 data.train_size=10240 data.batch_size=256
             model.name=deit_small_patch16_224 mix.token_grid=14)
    fi
    common=("${run[@]}" mix.method=tokenmix mix.mixup_alpha=0 schedule.epochs=2 eval.every=2 eval.occlusion=[]
            tracking.mode=disabled --no-progress)
    echo "| processes | img/s (epoch 2) |"
    echo "|---:|---:|"
    for n in 1 2; do
        .venv/bin/suite train "${common[@]}" "run.output_root=$tmp/n$n" --nproc "$n" > "$tmp/n$n.log" 2>&1
        "$PY" - "$tmp/n$n" "$n" <<'PYEOF'
import json, pathlib, sys
(run,) = [p for p in pathlib.Path(sys.argv[1]).iterdir() if p.is_dir()]
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
print(f"| {sys.argv[2]} | {rows[-1]['images_per_s']:.0f} |")
PYEOF
    done
else
    echo "one GPU here: skipped"
fi
