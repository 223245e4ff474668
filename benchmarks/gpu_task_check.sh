#!/usr/bin/env bash
# The dcgan task itself on the lent GPU machine (device tool), in one call: the public
# prior fitted on the GPU, then ROUNDS rounds of five clients training there through the
# task's own train() (the in-process probe: that machine has no Ray), with DP as in a run.
# Run with carry [".whl"] (see benchmarks/gpu_throughput.sh for the wheels):
#     ROUNDS=3 bash benchmarks/gpu_task_check.sh
# The probe's log, public_prior.json and the first and last grids come back under $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
out=${OUT:-/tmp}
run=/tmp/probe
python3 benchmarks/dcgan_quality_probe.py "$run" "${ROUNDS:-3}" \
    '{"device": "cuda", "target-epsilon": 9.5}' 2>&1 | grep -v -i warn | tee "$out/probe.log"
cp "$run/public_prior.json" "$run/samples/round_000.png" "$out/"
cp "$(ls "$run"/samples/round_*.png | tail -1)" "$out/last_round.png"
python3 - "$run" <<'PY'
import json, sys
record = json.load(open(f"{sys.argv[1]}/public_prior.json"))
print("public prior on", record["device"], "in", record["seconds"], "s; guide-coded:",
      record["class_code"])
PY
