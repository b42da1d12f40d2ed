#!/usr/bin/env bash
# The headline numbers on a GPU machine, in under 8 minutes: the device, training throughput in
# float32 and mixed precision (bench/throughput.py), then the classic best hyperspace trained on the
# real CIFAR-100 archive for as many epochs as fit (bench/timed_training.py). Runs on a CPU too.
#
#   bench/gpu_check.sh                    # with the Python packages already installed
#   WHEELS=wheels bench/gpu_check.sh      # first installs every wheel in ./wheels, offline
#   bench/gpu_check.sh --quick            # tiny sizes: checks that it all runs (CI)
#
# Env: WHEELS (a folder of wheels, see the README), DATA_DIR (folder of cifar-100-python.tar.gz,
# default ml_req), KERAS_BACKEND (default: jax where it is installed, else tensorflow), BUDGET_S
# (seconds for the whole script, default 450), RESULTS_DIR (default results/timed_training).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
budget=${BUDGET_S:-450}  # 7.5 minutes: under 8 with the Python start-up around it
quick=${1:-}
export HKS_NO_DOWNLOAD=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

if [ -n "${WHEELS:-}" ]; then
  echo "== Installing the wheels in $WHEELS (no index)"
  python3 -m pip install -q --no-index --find-links "$WHEELS" "$WHEELS"/*.whl
fi
if [ -z "${KERAS_BACKEND:-}" ]; then
  if python3 -c "import jax" 2>/dev/null; then
    export KERAS_BACKEND=jax
  else
    export KERAS_BACKEND=tensorflow
  fi
fi

echo "== Device"
python3 -c "import device; print(device.describe())"
command -v nvidia-smi >/dev/null \
  && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

echo "== Throughput: classic best hyperspace, float32 and each mixed precision the device" \
  "computes natively"
if [ "$quick" = "--quick" ]; then
  python3 bench/throughput.py --quick
else
  # 50 timed steps per round: a GPU step takes milliseconds, so rounds this long average out noise.
  python3 bench/throughput.py --data-dir "${DATA_DIR:-ml_req}" --steps 50 --rounds 3
fi

left=$((start + budget - $(date +%s)))
echo "== Training the classic best hyperspace on the real archive (${left} s left)"
if [ "$quick" = "--quick" ]; then
  python3 bench/timed_training.py --data-dir "${DATA_DIR:-ml_req}" --train-subset 100 --seconds 20 \
    --results-dir "${RESULTS_DIR:-results/timed_training}"
elif [ "$left" -gt 60 ]; then
  python3 bench/timed_training.py --data-dir "${DATA_DIR:-ml_req}" --seconds "$left" \
    --results-dir "${RESULTS_DIR:-results/timed_training}"
else
  echo "Training skipped: less than a minute left of the ${budget} s budget"
fi
echo "== Done in $(($(date +%s) - start)) s"
