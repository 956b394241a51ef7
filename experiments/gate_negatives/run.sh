#!/usr/bin/env bash
# NPO x GRUN, the tuned TOFU forget05 cell (conf/experiment/tiny_tofu/npo_grun.yaml), with the
# MMLU sample's questions as extra gate negatives, over the seeds of expected_ci.json; compare
# with experiments/tofu_forget05 (the same cell without them).
# usage: experiments/gate_negatives/run.sh <out folder>   (GRUN_DATA_DIR: the TOFU and MMLU copies)
set -euo pipefail
out=$1
mkdir -p "$out"
for seed in 42 1 2; do
  grun unlearn experiment=tiny_tofu/npo_grun model=tiny seed=$seed logger=none \
    'adapter.gate_negatives=[mmlu]' hydra.run.dir="$out/npo_grun_mmlu_seed$seed" > "$out/seed$seed.log" 2>&1
  echo "seed $seed done"
done
