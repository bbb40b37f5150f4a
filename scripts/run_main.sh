#!/usr/bin/env bash
# Main job: set up the environment, then a SHORT multi-task SAC training on Meta-World MT10 with the
# reference preset (configs/mt10_sac.yaml: 3×400 trunks, 128 transitions per task, Adam 3e-4, ...)
# cut down to a few minutes on a 2-core CPU: 3000 vector steps (30k transitions), 500 random warm-up
# steps, and one evaluation episode per task every 1500 steps. Extra arguments are more overrides,
# e.g. `bash scripts/run_main.sh balancer=imtl_g`. OMP_WAIT_POLICY=PASSIVE: with OpenMP's default
# spinning threads, a 2-thread run on a 2-core machine shared with another busy process ran ~10x slower.
# The full budget (2M vector steps, 50 evaluation episodes per task) belongs on a GPU:
#   .venv/bin/python scripts/train.py configs/mt10_sac.yaml device=cuda
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
RUN_NAME=${RUN_NAME:-mt10_main_$(date -u +%Y%m%d-%H%M%S)}
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/python scripts/train.py configs/mt10_sac.yaml \
  total_steps=3000 sac.warmup_steps=500 eval_every=1500 eval_episodes=1 checkpoint_every=1500 \
  log_every=100 device=cpu logdir=runs run_name="$RUN_NAME" "$@"
echo
echo "Run directory: runs/$RUN_NAME (config.yaml, events, checkpoints/, results.json)"
echo "Open TensorBoard:  .venv/bin/tensorboard --logdir runs   then browse http://localhost:6006"
echo "Evaluate again:    .venv/bin/python scripts/evaluate.py runs/$RUN_NAME episodes=10"
echo "Full budget (GPU): .venv/bin/python scripts/train.py configs/mt10_sac.yaml device=cuda"
