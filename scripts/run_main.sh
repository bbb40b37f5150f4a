#!/usr/bin/env bash
# Main job: set up the environment, then multi-task SAC on Meta-World MT10 with the CPU preset
# (configs/mt10_sac_cpu.yaml: 2x256 networks, 128 transitions per task per batch, a budget that fits
# about 10 minutes on 2 CPU cores, 10 evaluation episodes per task). It prints each task's success at
# the end; TensorBoard shows the curves. Extra arguments are config overrides, e.g.
# `bash scripts/run_main.sh balancer=imtl_g`. One torch thread: on the 2-core machine this was measured on,
# the preset's updates (batch 1,280 through 2x256 networks) ran at ~20 vector steps/s on one thread and
# ~15 on two (OMP_WAIT_POLICY=PASSIVE; OpenMP's default spinning threads were ~10x slower still when
# another process was busy). OMP_NUM_THREADS=2 bash scripts/run_main.sh overrides it.
# The full budget (2M vector steps, 3x400 networks, 50 evaluation episodes per task) belongs on a GPU:
#   .venv/bin/python scripts/train.py configs/mt10_sac.yaml device=cuda
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
RUN_NAME=${RUN_NAME:-mt10_main_$(date -u +%Y%m%d-%H%M%S)}
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/python scripts/train.py \
  configs/mt10_sac_cpu.yaml logdir=runs run_name="$RUN_NAME" "$@"
echo
echo "Run directory: runs/$RUN_NAME (config.yaml, events, checkpoints/, results.json)"
echo "Open TensorBoard:  .venv/bin/tensorboard --logdir runs   then browse http://localhost:6006"
echo "Evaluate again:    .venv/bin/python scripts/evaluate.py runs/$RUN_NAME episodes=10"
echo "Full budget (GPU): .venv/bin/python scripts/train.py configs/mt10_sac.yaml device=cuda"
