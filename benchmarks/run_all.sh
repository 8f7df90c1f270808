#!/usr/bin/env bash
# The full benchmark set on one GPU, an estimated 12 minutes on an H100 (see benchmarks/README.md).
#
#   benchmarks/run_all.sh                                  # these four, one after the other (levers.py: run alone)
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
failed=()
for script in "$@"; do  # a script that fails (a missing dataset) does not stop the others
    start=$SECONDS
    "${PYTHON:-python3}" -m "benchmarks.$script" --json "$RESULTS/$script.json" || failed+=("$script")
    echo "($script: $((SECONDS - start)) s)"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]} (their errors are above)" >&2
    exit 1
fi
