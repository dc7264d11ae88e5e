#!/usr/bin/env bash
# The GPU checks and figures in one go, for a lent GPU machine (or any CUDA machine), each part bounded
# in time and logged on its own, so that one failing part leaves the others' figures:
#     OUT=gpu-logs bash bench/gpu_session.sh        # logs in gpu-logs/ (default: $OUT, else gpu-logs)
# The figures in README.md's "GPU" section came from this script's logs.
set -u
cd "$(dirname "$0")/.."
out=${OUT:-gpu-logs}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
part() {  # part NAME SECONDS COMMAND...: run, log to $out/NAME.log, note its time and status
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "=== $name: $*" | tee -a "$out/$name.log"
    timeout "$limit" "$@" >>"$out/$name.log" 2>&1
    echo "=== $name: status $?, $((SECONDS - start)) s" | tee -a "$out/$name.log"
    tail -n 14 "$out/$name.log"
}
{ nvidia-smi -L; nproc; python3 -c "import torch, torchvision, timm; print(torch.__version__, torchvision.__version__, timm.__version__)"; } \
    >"$out/env.log" 2>&1
cat "$out/env.log"
part train_eager 110 python3 bench/bench_train.py --device cuda --rounds 4 --e2e-batches 30
part tests 230 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
part train_compiled 190 python3 bench/bench_train.py --device cuda --compile --rounds 4 --e2e-batches 30
part attention 100 python3 bench/bench_attention.py --device cuda --no-compile --repeats 10
part memory 110 bash -c "python3 bench/bench_train.py --device cuda --memory --steps 4 && \
    python3 bench/bench_train.py --device cuda --memory --steps 4 --model swin_base_patch4_window7_224"
part data 40 python3 bench/bench_data.py --workers 15 --batch-size 128 --images 2560 --rounds 2 --upscale 3 --gpu-decode
