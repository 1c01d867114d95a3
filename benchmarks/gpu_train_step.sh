#!/bin/bash
# The 1.3B stage-2 train step on one GPU (bf16 compute, f32 params; docs/benchmarks.md).
# Runs (pick with RUNS="name ..."; default all): full vs "minimal" remat (matmul outputs
# saved) at batch 64, minimal at batch 128, then batch 128 with the fused cuDNN attention
# kernel (model.llm.attention_impl=cudnn), alone and with XLA's Triton GEMMs off
# (cuBLAS for every matmul). Each run prints step time, tokens/s, images/s and MFU
# (benchmarks/train_step.py). PROFILE=1 (or PROFILE="run ...") also traces 3 steps of
# each (named) run and prints where the GPU time goes (benchmarks/trace_summary.py; traces
# under OUTDIR/<run>_trace). Rows are 640 tokens; generation rows are GEN_PROMPT (64)
# + 1 + 576 tokens (63 makes them 640 too, a multiple of cuDNN's 64).
# Usage: [RUNS="minimal_b128 ..."] [PROFILE=1] [GEN_PROMPT=63] bash benchmarks/gpu_train_step.sh [OUTDIR]
set -u
OUTDIR=${1:-/tmp/gpu_bench}
RUNS=${RUNS:-"full_b64 minimal_b64 minimal_b128 minimal_b128_cudnn minimal_b128_cudnn_cublas"}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUTDIR/gpu.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" | tee -a "$OUTDIR/gpu.txt"
BENCH="python3 benchmarks/train_step.py --config configs/janusflow_1p3b.py --config.stage=2 --random_vae
  --config.batch.und_seq_len=640 --config.batch.text_seq_len=640 --config.batch.gen_prompt_len=${GEN_PROMPT:-64}
  --steps ${STEPS:-8} --warmup 2"
B64="--config.batch.und_rows=16 --config.batch.text_rows=8 --config.batch.gen_rows=40"
B128="--config.batch.und_rows=32 --config.batch.text_rows=16 --config.batch.gen_rows=80"
MIN="--config.model.llm.remat_policy=minimal"
CUDNN="--config.model.llm.attention_impl=cudnn"
run() {  # name, extra flags...
  name=$1; shift
  case " $RUNS " in *" $name "*) ;; *) return ;; esac
  prof=()
  case " ${PROFILE:-0} " in
    " 1 "|*" $name "*) prof=(--profile_dir "$OUTDIR/${name}_trace") ;;
  esac
  echo "== $name: ${XLA_FLAGS:-} $*" | tee "$OUTDIR/$name.txt"
  timeout 300 $BENCH "$@" "${prof[@]}" 2>&1 | grep -v -E "^(W|I)[0-9]{4} " | tail -n 12 \
    | tee -a "$OUTDIR/$name.txt"
  if [ ${#prof[@]} -gt 0 ]; then
    python3 benchmarks/trace_summary.py "$OUTDIR/${name}_trace" --steps 3 --thread Stream \
      --top 25 --show_args 4 2>&1 | tee -a "$OUTDIR/$name.txt"
  fi
}
run full_b64 $B64 --config.model.llm.remat_policy=full
run minimal_b64 $B64 $MIN
run minimal_b128 $B128 $MIN
run minimal_b128_cudnn $B128 $MIN $CUDNN
XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_triton_gemm=false" \
  run minimal_b128_cudnn_cublas $B128 $MIN $CUDNN
