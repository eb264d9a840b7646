#!/usr/bin/env bash
# The whole GPU check for a lent H100/H200, as one command: eager baseline, then per-block
# compile with the DCP round trip. Logs go to $OUT (or ./gpu-check-logs).
set -uo pipefail
out=${OUT:-gpu-check-logs}; mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
gpus=$(nvidia-smi -L | wc -l)
nvidia-smi -L; python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
check() {  # name, then env assignments; falls back to micro-batch 2 if 4 runs out of memory
  local name=$1; shift
  for micro in 4 2; do
    env "$@" MICRO=$micro torchrun --standalone --nproc-per-node "$gpus" benchmarks/gpu_check.py \
      >"$out/$name.log" 2>&1 && { grep -E '^(NVIDIA|tokens|bench|checkpoint)' "$out/$name.log" | sed "s/^/[$name micro=$micro] /"; return 0; }
    echo "[$name micro=$micro] failed:"; grep -E 'Error|error' "$out/$name.log" | tail -3
  done
}
check eager COMPILE=0 CKPT=0 STEPS=10
check compiled COMPILE=1 CKPT=1 STEPS=20 CKPT_DIR=/tmp
