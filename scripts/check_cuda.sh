#!/bin/bash
# The CUDA path in one pass, as measured for the README's "On a GPU" section: training throughput of the presets
# (bf16, eager then compiled), decoding speed, every stage of a short speedrun, DDP on NCCL, and a compiled
# pretraining run resumed. Each part has its own time limit and its own log under $OUT (default: cuda-check/).
#
#     bash scripts/check_cuda.sh    # about 7 minutes on one H200 (the last two parts were not run there yet)
set -u
OUT=${OUT:-cuda-check}
export PYTHONUNBUFFERED=1 COLUMNS=${COLUMNS:-140}
PY=${PYTHON:-python3}
part() {  # part SECONDS NAME COMMAND...: run it, log to $OUT/NAME.txt, say how it ended
    local limit=$1 name=$2 start=$SECONDS; shift 2
    echo "=== $name"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}
$PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'check_cuda.sh: torch sees no CUDA device; \
run it where an NVIDIA GPU and a CUDA build of torch are')" || exit 1
nvidia-smi -L
mkdir -p "$OUT"
part 90 scaling_eager $PY scripts/bench_scaling.py --device cuda --dtype bfloat16 --batch 32 --presets tiny,small,medium,base
part 180 scaling_compiled $PY scripts/bench_scaling.py --device cuda --dtype bfloat16 --batch 32 --compile \
    --presets tiny,small,medium,base
part 90 generate $PY scripts/bench_generate.py --device cuda --runs 2
part 300 speedrun $PY -m minigpt speedrun --budget 150s --device cuda --out "$OUT/speedrun"
part 90 ddp torchrun --standalone --nproc-per-node 1 -m minigpt pretrain --data stdlib --max-iters 60 \
    --eval-interval 30 --device cuda --out "$OUT/ddp"
part 150 compiled_run $PY -m minigpt pretrain --data stdlib --optimizer muon --compile --max-iters 200 \
    --eval-interval 100 --batch-size 32 --block-size 256 --n-layer 6 --n-head 6 --n-embd 384 --device cuda \
    --out "$OUT/compiled"
part 90 compiled_resume $PY -m minigpt pretrain --resume --out "$OUT/compiled" --max-iters 260
