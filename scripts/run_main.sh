#!/usr/bin/env bash
# Main job: set up the environment, then multi-task SAC on Meta-World MT10 with the main-job preset
# (configs/mt10_main.yaml: the CPU preset's 2x256 networks with 32 transitions per task per batch, 8,000
# vector steps, 20 evaluation episodes per task at 4,000 and 8,000 steps; README, "The main job: what a
# first run shows", has its measured time and its range over seeds). It prints each task's success at
# the end; TensorBoard shows the curves. Extra arguments are config overrides, e.g.
# `bash scripts/run_main.sh balancer=imtl_g`. One torch thread: for updates this small, two threads were
# measured slower than one on a 2-core machine (~15 against ~20 vector steps/s for the CPU preset's batch of
# 1,280; OMP_WAIT_POLICY=PASSIVE, as OpenMP's default spinning threads were ~10x slower still when another
# process was busy). OMP_NUM_THREADS=2 bash scripts/run_main.sh overrides it.
# The full budget (2M vector steps, 3x400 networks, 50 evaluation episodes per task) belongs on a GPU:
#   .venv/bin/python scripts/train.py configs/mt10_sac.yaml device=cuda
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
RUN_NAME=${RUN_NAME:-mt10_main_$(date -u +%Y%m%d-%H%M%S)}
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/python scripts/train.py \
  configs/mt10_main.yaml logdir=runs run_name="$RUN_NAME" "$@"
echo
echo "Run directory: runs/$RUN_NAME (config.yaml, events, checkpoints/, results.json)"
echo "Open TensorBoard:  .venv/bin/tensorboard --logdir runs   then browse http://localhost:6006"
echo "Evaluate again:    .venv/bin/python scripts/evaluate.py runs/$RUN_NAME episodes=10"
echo "Full budget (GPU): .venv/bin/python scripts/train.py configs/mt10_sac.yaml device=cuda"
