#!/usr/bin/env bash
# Build the planning model that bench/planning_success.py scores best-of-N candidates with: the embedded policy
# (checkpoints/sim_transfer_cube_predict2.5) refined on its own rollouts and on noisy-expert rollouts, successes and
# failures (training/recipes/refine_value.py: record, refine, value AUC before and after; docs/planning.md).
#
#   scripts/planning_model.sh [WORK_DIR]        (default runs/planning_model; about 20 min on 2 CPU cores)
#
# Writes WORK_DIR/results.json (value AUC) and copies the refined checkpoint to $OUT
# (default checkpoints/sim_transfer_cube_predict2.5_planning). Sizes: POLICY_EPISODES, EXPERT_EPISODES, STEPS.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dev-env.sh
work=${1:-runs/planning_model}
OUT=${OUT:-checkpoints/sim_transfer_cube_predict2.5_planning}
POLICY_EPISODES=${POLICY_EPISODES:-24} EXPERT_EPISODES=${EXPERT_EPISODES:-24} STEPS=${STEPS:-400}
mkdir -p "$work"
# 10 scripted demos (scenes 0..9, the embedded policy's own training scenes), mixed into the refinement
[ -f "$work/demos/episode_9.hdf5" ] ||
  python -m cosmos_policy_ros.sim.generate_demos --episodes 10 --out "$work/demos" --image-size 240 320 \
    --seed-start 0 --workers 2 --settle-steps 25 --no-progress
python -m cosmos_policy_training.recipes.refine_value --policy checkpoints/sim_transfer_cube_predict2.5 \
  --demos-dir "$work/demos" --demos 10 --work-dir "$work" --cache-dir "$work/latent_cache" \
  --train-policy-episodes "$POLICY_EPISODES" --train-expert-episodes "$EXPERT_EPISODES" --steps "$STEPS" \
  --policy-id sim-transfer-cube-predict2.5-planning
rm -rf "$OUT"
mkdir -p "$OUT"
cp "$work"/run/final/* "$OUT"/
cp "$work/results.json" "$OUT/refine_results.json"
echo "planning model: $OUT"
