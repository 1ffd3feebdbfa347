#!/usr/bin/env bash
# Build the planning model that bench/planning_success.py scores best-of-N candidates with: the embedded policy
# (checkpoints/sim_transfer_cube_predict2.5) refined in two stages (docs/planning.md):
#   1. on its own rollouts and on noisy-expert rollouts, successes and failures (training/recipes/refine_value.py:
#      record, refine, value AUC before and after);
#   2. on branch scenes: at one decision every one of the policy's 8 candidates is executed from the same state and
#      the base policy finishes the episode (rollouts --branch-candidates), so that the world model and the value see
#      different actions from one state with their real outcomes; BRANCH_GRASP scenes branch at the grasp
#      (tick 50), BRANCH_APPROACH at the start; BRANCH_STEPS of training, mostly world-model samples.
#
#   scripts/planning_model.sh [WORK_DIR]        (default runs/planning_model; about 40 min on 2 CPU cores)
#
# Writes WORK_DIR/results.json (value AUC of stage 1, the branch stage's record) and copies the refined checkpoint to
# $OUT (default checkpoints/sim_transfer_cube_predict2.5_planning). Sizes: POLICY_EPISODES, EXPERT_EPISODES, STEPS,
# BRANCH_GRASP, BRANCH_APPROACH, BRANCH_STEPS (BRANCH_STEPS=0: stage 1 only).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dev-env.sh
work=${1:-runs/planning_model}
OUT=${OUT:-checkpoints/sim_transfer_cube_predict2.5_planning}
POLICY_EPISODES=${POLICY_EPISODES:-24} EXPERT_EPISODES=${EXPERT_EPISODES:-24} STEPS=${STEPS:-400}
BRANCH_GRASP=${BRANCH_GRASP:-40} BRANCH_APPROACH=${BRANCH_APPROACH:-20} BRANCH_STEPS=${BRANCH_STEPS:-800}
mkdir -p "$work"
# 10 scripted demos (scenes 0..9, the embedded policy's own training scenes), mixed into the refinement
[ -f "$work/demos/episode_9.hdf5" ] ||
  python -m cosmos_policy_ros.sim.generate_demos --episodes 10 --out "$work/demos" --image-size 240 320 \
    --seed-start 0 --workers 2 --settle-steps 25 --no-progress
python -m cosmos_policy_training.recipes.refine_value --policy checkpoints/sim_transfer_cube_predict2.5 \
  --demos-dir "$work/demos" --demos 10 --work-dir "$work" --cache-dir "$work/latent_cache" \
  --train-policy-episodes "$POLICY_EPISODES" --train-expert-episodes "$EXPERT_EPISODES" --steps "$STEPS" \
  --policy-id sim-transfer-cube-predict2.5-planning
final="$work/run/final"
if [ "$BRANCH_STEPS" -gt 0 ]; then
  # scenes 7000.. and 7100..: apart from the held-out 1000..1199, the tuning 4000..4099, the refinement's 2000.. and
  # 5000.. and the policy's DAgger scenes (6000..6799)
  t0=$SECONDS
  branch_dirs=()
  branch() {  # QUERY SEED_START SCENES DIR
    [ "$3" -gt 0 ] || return 0
    [ -f "$4/episode_$(($2 + $3 - 1))_c7.hdf5" ] ||
      python -m cosmos_policy_training.rollouts --policy checkpoints/sim_transfer_cube_predict2.5 --branch-candidates 8 \
        --branch-query "$1" --seed-start "$2" --episodes "$3" --out "$4" --threads 2
    branch_dirs+=("$4")
  }
  branch 1 7000 "$BRANCH_GRASP" "$work/branch_grasp"
  branch 0 7100 "$BRANCH_APPROACH" "$work/branch_approach"
  t1=$SECONDS
  # every 20th step of stage 1's rollouts keeps their value targets in the mix without drowning the branch scenes
  python -m cosmos_policy_training.cli --init "$final" --demos "$work/demos" \
    --rollouts "$work/rollouts_train" "${branch_dirs[@]}" --demo-fraction 0.1 --stride 20 \
    --split 0.1 0.6 0.3 --out "$work/run_branch" --steps "$BRANCH_STEPS" --batch 16 --lr 2e-4 --warmup 20 \
    --decay-steps "$BRANCH_STEPS" --cache-latents --cache-dir "$work/latent_cache" --keep-checkpoint-stats \
    --save-every "$BRANCH_STEPS" --threads 2 --no-progress --policy-id sim-transfer-cube-predict2.5-planning
  final="$work/run_branch/final"
  python - "$work" "$BRANCH_GRASP" "$BRANCH_APPROACH" "$BRANCH_STEPS" "$((t1 - t0))" "$((SECONDS - t1))" <<'PY'
import json, sys
from pathlib import Path
work, grasp, approach, steps, t_record, t_train = sys.argv[1:]
res = Path(work) / "results.json"
data = json.loads(res.read_text())
data["branch_stage"] = {"grasp_scenes": int(grasp), "approach_scenes": int(approach), "candidates": 8,
                        "steps": int(steps), "seconds": {"record": int(t_record), "train": int(t_train)},
                        "script": "scripts/planning_model.sh"}
res.write_text(json.dumps(data, indent=1), encoding="utf-8")
PY
fi
rm -rf "$OUT"
mkdir -p "$OUT"
cp "$final"/* "$OUT"/
cp "$work/results.json" "$OUT/refine_results.json"
echo "planning model: $OUT"
