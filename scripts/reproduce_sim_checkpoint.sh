#!/usr/bin/env bash
# Rebuild g8, the simulated-ALOHA checkpoint of the long chain (the embedded one comes from the shorter
# scripts/quick_sim_checkpoint.sh), the way it was made: a chain of recipe runs, each continuing the previous one
# (--init) on more data (the phases and their figures: docs/sim_checkpoint_results.md).
# Each phase is skipped when its output exists, so an interrupted chain resumes. About 9 hours on 2 CPU cores
# (the recorded times are in each checkpoint's recipe.json). Training on the CPU is seeded but not bit-exact
# across machines, and the DAgger phases roll out the checkpoint before them, so a rebuild gives a checkpoint
# of the same recipe, not the same bytes.
# Usage: scripts/reproduce_sim_checkpoint.sh [OUT]   (default OUT: runs/ckpt_g8)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dev-env.sh
out=${1:-runs/ckpt_g8}
# phases 1-5 run on scenes that start with the cube in mid-air (gym-aloha's first frame, settle steps 0) and
# without the chunk smoothing (phase 5 writes it into its output), as their DAgger rollouts were recorded; phases
# 6-11 use scenes at rest. The mid-air demos have their own folder, data/sim_demos_s0 (a later --demos-dir wins)
recipe() { python -m cosmos_policy_training.recipes.sim_transfer_cube --relative-actions none --smoothing-window 1 \
  --demos-dir data/sim_demos_s0 --no-progress "$@"; }
ft=(--lr 3e-4 --warmup 20 --decay-factor 0.33 --action-weight 3)
dagger() {  # POLICY SEED OUT: 40 rollouts of POLICY on new scenes, labelled with the scripted expert's actions
  [ -f "$3/episode_$(($2 + 39)).hdf5" ] ||
    python -m cosmos_policy_training.rollouts --policy "$1" --seed-start "$2" --episodes 40 --out "$3" \
      --expert-labels --threads 2 --settle-steps 0
}
dagger_at_rest() {  # POLICY SEED OUT [ARGS...]: 400 rollouts on 2 processes, recorded only where the policy
  # re-plans (0 50 100 150; 0 50 for failures, where the expert's open-loop plan no longer fits the scene later on)
  local a policy=$1 seed=$2 dir=$3
  shift 3
  for a in "$seed" "$((seed + 200))"; do
    [ -f "$dir/episode_$((a + 199)).hdf5" ] ||
      python -m cosmos_policy_training.rollouts --policy "$policy" --seed-start "$a" --episodes 200 --out "$dir" \
        --expert-labels --sample-steps 0 50 100 150 --failure-sample-steps 0 50 "$@" &
  done
  wait
}
starts() {  # N SEED OUT ARGS...: cheap expert scenes rendered only where their samples read
  local n=$1 seed=$2 dir=$3
  shift 3
  [ -f "$dir/episode_$((n - 1)).hdf5" ] ||
    python -m cosmos_policy_ros.sim.generate_demos --episodes "$n" --out "$dir" --image-size 240 320 \
      --seed-start "$seed" --workers 2 --settle-steps "${SETTLE:-0}" --no-progress "$@"
}
handover() {  # N SEED OUT NOISE: hand-over scenes (samples at 100 and 150, arms pushed off the path from step 88);
  # their labels are not what was executed, so they are marked as policy samples only
  [ -f "$3/episode_$(($1 - 1)).hdf5" ] && return 0
  starts "$1" "$2" "$3" --sample-steps 100 150 --execution-noise "$4" --noise-hold 31 --noise-from 88 --noise-until 150
  python -c "import glob, h5py, sys
for p in glob.glob(sys.argv[1] + '/*.hdf5'):
    with h5py.File(p, 'r+') as f:
        f.attrs['action_labels'] = 'expert'" "$3"
}
[ -f data/sim_demos_s0/episode_99.hdf5 ] || python -m cosmos_policy_ros.sim.generate_demos --episodes 100 \
  --out data/sim_demos_s0 --image-size 240 320 --seed-start 0 --workers 2 --settle-steps 0 --no-progress

# 1. absolute actions from scratch (100 scripted demos, seeds 0..99; 6,000 steps), then a low-lr phase
[ -d runs/ckpt_abs ] || recipe --out runs/ckpt_abs --run-dir runs/abs
[ -d runs/ckpt_ftabs ] || recipe --init runs/ckpt_abs --out runs/ckpt_ftabs --run-dir runs/ftabs --steps 3000 \
  "${ft[@]}" --first-step-fraction 0.25 --seed 5
# 2. three DAgger rounds (scenes 0..39, 100..139, 140..179)
dagger runs/ckpt_ftabs 0 data/dagger
if [ ! -d runs/ckpt_dag ]; then
  mkdir -p data/mix
  for i in $(seq 0 99); do ln -sf "../sim_demos_s0/episode_$i.hdf5" "data/mix/episode_$i.hdf5"; done
  for i in $(seq 0 39); do ln -sf "../dagger/episode_$i.hdf5" "data/mix/episode_$((100 + i)).hdf5"; done
  recipe --init runs/ckpt_ftabs --demos-dir data/mix --episodes 140 --out runs/ckpt_dag --run-dir runs/dag \
    --steps 1200 "${ft[@]}" --first-step-fraction 0.25 --seed 6
fi
dagger runs/ckpt_dag 100 data/dagger2
[ -d runs/ckpt_dag2 ] || recipe --init runs/ckpt_dag --extra-demos data/dagger data/dagger2 --out runs/ckpt_dag2 \
  --run-dir runs/dag2 --steps 1200 "${ft[@]}" --first-step-fraction 0.25 --seed 7
dagger runs/ckpt_dag2 140 data/dagger3
[ -d runs/ckpt_dag3 ] || recipe --init runs/ckpt_dag2 --extra-demos data/dagger data/dagger2 data/dagger3 \
  --out runs/ckpt_dag3 --run-dir runs/ckpt_dag3_run --steps 1200 "${ft[@]}" --first-step-fraction 0.25 --seed 140
# 3. scene starts: 1,341 more scenes for the first chunk
d3=(data/dagger data/dagger2 data/dagger3)
starts 641 10000 data/scene_starts --scene-starts
[ -d runs/ckpt_s4 ] || recipe --init runs/ckpt_dag3 --extra-demos "${d3[@]}" data/scene_starts --out runs/ckpt_s4 \
  --run-dir runs/s4 --steps 1500 "${ft[@]}" --first-step-fraction 0.35 --seed 11
starts 700 11000 data/scene_starts2 --scene-starts
[ -d runs/ckpt_s5 ] || recipe --init runs/ckpt_s4 --extra-demos "${d3[@]}" data/scene_starts data/scene_starts2 \
  --out runs/ckpt_s5 --run-dir runs/s5 --steps 1500 "${ft[@]}" --first-step-fraction 0.35 --seed 12
# 4. a fourth DAgger round and 1,000 grasp-phase scenes (samples at 0, 50, 100; arms pushed off the path before 50)
dagger runs/ckpt_s5 180 data/dagger4
starts 1000 12000 data/grasp_starts --sample-steps 0 50 100 --execution-noise 0.03 --noise-hold 25 --noise-until 50
[ -d runs/ckpt_g1 ] || recipe --init runs/ckpt_s5 --extra-demos "${d3[@]}" data/dagger4 data/scene_starts \
  data/scene_starts2 data/grasp_starts --out runs/ckpt_g1 --run-dir runs/g1 --steps 2000 "${ft[@]}" \
  --first-step-fraction 0.35 --seed 14
# 5. a fifth DAgger round, 1,000 more grasp-phase scenes and 300 hand-over scenes (samples at 100 and 150; arms
#    pushed off the path from step 88; their labels are not what was executed, so they are policy samples only)
dagger runs/ckpt_g1 220 data/dagger5
starts 1000 14000 data/grasp_starts2 --sample-steps 0 50 100 --execution-noise 0.03 --noise-hold 25 --noise-until 50
handover 300 13000 data/handover_starts 0.02
[ -d runs/ckpt_g2 ] || recipe --init runs/ckpt_g1 --extra-demos "${d3[@]}" data/dagger4 data/dagger5 data/scene_starts data/scene_starts2 \
  data/grasp_starts data/grasp_starts2 data/handover_starts --out runs/ckpt_g2 --run-dir runs/g2 --steps 2000 "${ft[@]}" \
  --first-step-fraction 0.35 --seed 15 --smoothing-window 7
# 6. scenes at rest: 40 demos, 600 scene starts, 1,000 grasp-phase and 400 gentler hand-over scenes,
#    all with the cube resting on the table at step 0
SETTLE=25
starts 40 0 data/sim_demos
starts 600 17000 data/scene_starts3 --scene-starts
starts 1000 15000 data/grasp_starts3 --sample-steps 0 50 100 --execution-noise 0.03 --noise-hold 25 --noise-until 50
handover 400 16000 data/handover_starts2 0.012
[ -d runs/ckpt_g3 ] || python -m cosmos_policy_training.recipes.sim_transfer_cube --relative-actions none --smoothing-window 7 --no-progress \
  --init runs/ckpt_g2 --demos-dir data/sim_demos --episodes 40 \
  --extra-demos data/scene_starts3 data/grasp_starts3 data/handover_starts2 --out runs/ckpt_g3 --run-dir runs/g3 \
  --steps 1800 --lr 3e-4 --warmup 20 --decay-factor 0.33 --action-weight 3 --first-step-fraction 0.35 --seed 16
# 7. the same data again, half the samples at step 0 (the first chunk is what the scenes at rest changed)
[ -d runs/ckpt_g4 ] || python -m cosmos_policy_training.recipes.sim_transfer_cube --relative-actions none --smoothing-window 7 --no-progress \
  --init runs/ckpt_g3 --demos-dir data/sim_demos --episodes 40 \
  --extra-demos data/scene_starts3 data/grasp_starts3 data/handover_starts2 --out runs/ckpt_g4 --run-dir runs/g4 \
  --steps 2000 --lr 4e-4 --warmup 20 --decay-factor 0.33 --action-weight 3 --first-step-fraction 0.5 --seed 17
# 8. once more (the action loss was still falling)
[ -d runs/ckpt_g5 ] || python -m cosmos_policy_training.recipes.sim_transfer_cube --relative-actions none --smoothing-window 7 --no-progress \
  --init runs/ckpt_g4 --demos-dir data/sim_demos --episodes 40 \
  --extra-demos data/scene_starts3 data/grasp_starts3 data/handover_starts2 --out runs/ckpt_g5 --run-dir runs/g5 \
  --steps 2000 --lr 3e-4 --warmup 20 --decay-factor 0.33 --action-weight 3 --first-step-fraction 0.5 --seed 18
# 9. DAgger on scenes at rest: 400 rollouts of g5, only the re-planning steps recorded (0 50 100 150;
#    0 50 for failures, where the expert's plan no longer fits the scene later on), then one more phase
dagger_at_rest runs/ckpt_g5 3000 data/dagger_g5
[ -d runs/ckpt_g6 ] || python -m cosmos_policy_training.recipes.sim_transfer_cube --relative-actions none --smoothing-window 7 --no-progress \
  --init runs/ckpt_g5 --demos-dir data/sim_demos --episodes 40 \
  --extra-demos data/scene_starts3 data/grasp_starts3 data/handover_starts2 data/dagger_g5 --out runs/ckpt_g6 --run-dir runs/g6 \
  --steps 2000 --lr 3e-4 --warmup 20 --decay-factor 0.33 --action-weight 3 --first-step-fraction 0.5 --seed 19
# 10. a second DAgger round the same way: 400 rollouts of g6 (3400..3799), one more phase on everything
dagger_at_rest runs/ckpt_g6 3400 data/dagger_g6
[ -d runs/ckpt_g7 ] || python -m cosmos_policy_training.recipes.sim_transfer_cube --relative-actions none --smoothing-window 7 --no-progress \
  --init runs/ckpt_g6 --demos-dir data/sim_demos --episodes 40 \
  --extra-demos data/scene_starts3 data/grasp_starts3 data/handover_starts2 data/dagger_g5 data/dagger_g6 --out runs/ckpt_g7 \
  --run-dir runs/g7 --steps 2000 --lr 3e-4 --warmup 20 --decay-factor 0.33 --action-weight 3 --first-step-fraction 0.5 --seed 20
# 11. DAgger the way the ROS graph runs the policy: execution:=pause holds the last action while the
#     policy thinks (~28 ticks on 2 cores), and the arms settle before each re-plan; 400 rollouts of g7 (4000..4399)
dagger_at_rest runs/ckpt_g7 4000 data/dagger_p7 --pause-ticks 28
python -m cosmos_policy_training.recipes.sim_transfer_cube --relative-actions none --smoothing-window 7 --no-progress \
  --init runs/ckpt_g7 --demos-dir data/sim_demos --episodes 40 \
  --extra-demos data/scene_starts3 data/grasp_starts3 data/handover_starts2 data/dagger_g5 data/dagger_g6 data/dagger_p7 \
  --out "$out" --run-dir runs/g8 --steps 2000 --lr 3e-4 --warmup 20 --decay-factor 0.33 --action-weight 3 \
  --first-step-fraction 0.5 --seed 21
