#!/usr/bin/env bash
# Every attack on each tuned TOFU forget05 cell (seed 42) of experiments/tofu_forget05 (the
# run folders `grun repro scale=cpu` wrote): `grun eval run=<cell> eval.attacks=[...]`, then
# the table in README.md (python experiments/attacks/table.py <out>).
# usage: experiments/attacks/run.sh <folder with the cells' run folders> <out folder>
set -euo pipefail
cells=$1; out=$2
mkdir -p "$out"
for run in "$cells"/*/; do
  name=$(basename "$run")
  adapter=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['config']['adapter']['kind'])" "$run/run_card.json")
  attacks="paraphrase,prompt_format,quantize_8bit,quantize_4bit,relearn"
  [ "$adapter" != full ] && attacks="$attacks,edit_off"
  grun eval run="$run" logger=none "eval.attacks=[$attacks]" hydra.run.dir="$out/$name" > "$out/$name.log" 2>&1
  echo "$name done"
done
