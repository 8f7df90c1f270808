#!/usr/bin/env bash
# The full benchmark set on one GPU, about 12 minutes on an H100 (see benchmarks/README.md).
#
#   benchmarks/run_all.sh                                  # all four, one after the other
#   benchmarks/run_all.sh train_throughput                 # ~6 min: where one command may run 10 min,
#   benchmarks/run_all.sh data_path time_to_quality latency    # run the set as these two halves
#
# Datasets are found through SEGLIB_DATA_DIR (default <repo>/data); JSON goes to $RESULTS
# (default benchmarks/results/), one <script>.json each.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results}
if [ $# -eq 0 ]; then
    set -- train_throughput data_path time_to_quality latency
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv || true
for script in "$@"; do
    start=$SECONDS
    "${PYTHON:-python3}" -m "benchmarks.$script" --json "$RESULTS/$script.json"
    echo "($script: $((SECONDS - start)) s)"
done
