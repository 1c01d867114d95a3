#!/bin/bash
# The 1.3B stage-2 train step on one GPU (bf16 compute, f32 params; issue 7's GPU row):
# full remat vs the "minimal" policy (matmul outputs saved) at the same batch, then the
# larger batch, then the larger batch with the fused cuDNN attention kernel
# (model.llm.attention_impl=cudnn; CUDNN=0 skips it). Each run prints step time, tokens/s, images/s and MFU
# (benchmarks/train_step.py). Usage: bash benchmarks/gpu_train_step.sh [OUTDIR]
set -u
OUTDIR=${1:-/tmp/gpu_bench}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUTDIR/gpu.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$OUTDIR/gpu.txt"
BENCH="python3 benchmarks/train_step.py --config configs/janusflow_1p3b.py --config.stage=2
  --config.batch.und_seq_len=640 --config.batch.text_seq_len=640 --config.batch.gen_prompt_len=64
  --steps 8 --warmup 2"
B64="--config.batch.und_rows=16 --config.batch.text_rows=8 --config.batch.gen_rows=40"
B128="--config.batch.und_rows=32 --config.batch.text_rows=16 --config.batch.gen_rows=80"
run() {  # name, extra flags...
  name=$1; shift
  echo "== $name: $*" | tee "$OUTDIR/$name.txt"
  timeout 220 $BENCH "$@" 2>&1 | grep -v -E "^(W|I)[0-9]{4} " | tail -n 12 | tee -a "$OUTDIR/$name.txt"
}
run full_b64 $B64 --config.model.llm.remat_policy=full
run minimal_b64 $B64 --config.model.llm.remat_policy=minimal
run minimal_b128 $B128 --config.model.llm.remat_policy=minimal
if [ "${CUDNN:-1}" = 1 ]; then
  run minimal_b128_cudnn $B128 --config.model.llm.remat_policy=minimal \
    --config.model.llm.attention_impl=cudnn
fi
