#!/usr/bin/env bash
# Sequential unlearning on the real TOFU rows (tiny model, CPU): forget10's 20 authors in 5
# requests of 4 (sequence=tofu_forget10_in_5), NPO with each adapter's tuned forget05 settings
# (conf/experiment/tiny_tofu/npo_<adapter>.yaml, unchanged: the same recipe per request), GRUN
# with both combinations and the official protocol (each request's edit trained alone on the
# base model, combined with the release's scale); then `grun report` (sequence.png), the table in README.md
# and the claims (claims.yaml) over $out/results.json (copy it to experiments/sequential/ to record it).
# usage: GRUN_DATA_DIR=../shared/data experiments/sequential/run.sh <out folder> [seed]
set -euo pipefail
out=$1; seed=${2:-42}
mkdir -p "$out"
run() {  # name, overrides...
  local name=$1; shift
  grun unlearn sequence=tofu_forget10_in_5 logger=none seed="$seed" "$@" hydra.run.dir="$out/$name" \
    > "$out/$name.log" 2>&1
  echo "$name done"
}
run npo_grun experiment=tiny_tofu/npo_grun
run npo_grun_official experiment=tiny_tofu/npo_grun adapter.combine=official
run npo_grun_protocol_official experiment=tiny_tofu/npo_grun sequence.protocol=official
run npo_lora experiment=tiny_tofu/npo_lora
run npo_full experiment=tiny_tofu/npo_full
grun eval model=tiny data=tofu data.forget_split=forget10 logger=none seed="$seed" hydra.run.dir="$out/target" \
  > "$out/target.log" 2>&1  # the target before any request: the utility claim's reference row
grun report "runs=[$out/npo_grun,$out/npo_grun_official,$out/npo_grun_protocol_official,$out/npo_lora,$out/npo_full]" out="$out/report" \
  > "$out/report.log" 2>&1
python3 "$(dirname "$0")/table.py" --target "$out/target" --json "$out/results.json" "$out"/npo_grun "$out"/npo_grun_official "$out"/npo_grun_protocol_official "$out"/npo_lora "$out"/npo_full
