#!/usr/bin/env bash
# One short `slmbook train` run per setting on the GPUs present, against the CPU:
# tokens/s and the validation loss after STEPS steps, as a markdown table with the date.
#
#   scripts/gpu_check.sh                 # 200 steps each
#   STEPS=500 scripts/gpu_check.sh       # longer runs
#   RECORD=benchmarks/gpu_check.md scripts/gpu_check.sh   # also append the table there
#
# Settings: CPU float32 (the reference), CPU with 2 processes (torchrun, gloo), and on a
# CUDA machine: float32, bfloat16 and float16 autocast on one GPU, and DDP (NCCL) on all
# GPUs when there are at least 2. Every run uses the same model (the command's default,
# 4 layers of width 128), the same seed and the same global batch (BATCH, 24 by default,
# a multiple of 1, 2, 3, 4, 6 and 8 processes), so the losses must agree: float32 runs
# to float rounding, bfloat16 and float16 to about 0.05 nats. Run it from the repository
# root with the virtual environment active (or PYTHON=.venv/bin/python).
set -euo pipefail

STEPS=${STEPS:-200}
BATCH=${BATCH:-24}
PY=${PYTHON:-python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

COMMON=(--steps "$STEPS" --eval-every "$STEPS" --batch-size "$BATCH" --sample-length 0
        --no-progress --checkpoint-every none)
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")

ROWS=()
run() {  # run LABEL COMMAND...: one training, one row of the table
    local label=$1 log="$WORK/$1.log"
    shift
    if ! "$@" "${COMMON[@]}" --out "$WORK/$label.pt" >"$log" 2>&1; then
        echo "$label FAILED:" >&2
        tail -n 20 "$log" >&2
        ROWS+=("| $label | failed | |")
        return 0
    fi
    local tps loss
    tps=$(grep -o '[0-9,]* tokens/s' "$log" | tail -n 1 | cut -d' ' -f1)
    loss=$(grep -o 'val loss [0-9.]*' "$log" | tail -n 1 | cut -d' ' -f3)
    ROWS+=("| $label | $tps | $loss |")
    echo "$label: $tps tokens/s, val loss $loss" >&2
}

TORCHRUN=("$PY" -m torch.distributed.run --standalone)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
run cpu-float32 "$PY" -m slmbook train --device cpu --dtype float32
run cpu-ddp-2-gloo "${TORCHRUN[@]}" --nproc_per_node=2 -m slmbook train --device cpu --dtype float32
if [ "$NGPU" -gt 0 ]; then
    for dtype in float32 bfloat16 float16; do
        run "cuda-$dtype" "$PY" -m slmbook train --device cuda --dtype "$dtype"
    done
    if [ "$NGPU" -ge 2 ]; then
        run "cuda-ddp-$NGPU-nccl" "${TORCHRUN[@]}" --nproc_per_node="$NGPU" -m slmbook train \
            --device cuda --dtype float32
    else
        echo "one GPU: DDP on GPUs needs at least 2 (NCCL gives each rank its own GPU)" >&2
    fi
else
    echo "no CUDA GPU here: only the CPU runs" >&2
fi

GPUS=$("$PY" -c "import torch; print(', '.join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or 'none')")
TABLE=$(
    echo "### $(date -u '+%Y-%m-%d %H:%M UTC'): $STEPS steps, global batch $BATCH"
    echo
    echo "torch $("$PY" -c 'import torch; print(torch.__version__)'), GPUs: $GPUS," \
         "CPU threads per process: $OMP_NUM_THREADS"
    echo
    echo "| run | tokens/s | val loss |"
    echo "|---|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
)
echo "$TABLE"
if [ -n "${RECORD:-}" ]; then
    printf '\n%s\n' "$TABLE" >>"$RECORD"
    echo "appended to $RECORD" >&2
fi
