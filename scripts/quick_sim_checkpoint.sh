#!/usr/bin/env bash
# The simulated-ALOHA transfer-cube policy in one sitting, from scratch (docs/training.md). Everything it makes lives
# under DIR (default runs/quick); the checkpoint is DIR/checkpoint, in the format of checkpoints/. Each step is skipped
# when its output exists, so an interrupted run resumes. Two recipes:
#
# RECIPE=stream (default): the embedded checkpoint, checkpoints/sim_transfer_cube_predict2.5 (Predict2.5 formulation,
# made for execution:=stream with real-time chunking, the launch files' default; trained on its own sim VAE, so its
# predicted future frames are pictures). Measured 2026-12-07 on the idle 2-core machine: the VAE 100 + 18 min, then
# steps 2-6s 51 + 27 min (phase A's latent cache 16 min of it).
#   1. scripted-expert data, every scene starting with the cube at rest (settle 25 steps): 40 whole demos (seeds
#      0..39), 600 scene starts (the first chunk), 500 grasp-phase scenes with the arms pushed off the expert's path
#      before step 50, 400 hand-over scenes pushed off from step 88 (samples at 100 and 150, policy samples only);
#   1v. the sim VAE (VAE_STEPS, default 1316; 0: the preset's randomly initialised, frozen VAE, whose predicted
#       frames are not pictures): the small Wan VAE (python -m cosmos_policy_training.vae, base 8, 4 clips per step,
#       about 4.4 s per step on one idle core) on the 40 demos into DIR/vae_plain, then VAE_HARD_STEPS (300) more with
#       the hard-pixel term (the lone cube on cam_high) into DIR/vae; every phase trains on its latents
#       (docs/training.md, "The sim VAE");
#   2. phase A: the `sim` network from scratch on it (3,000 steps, lr 4e-3 decaying to 4e-4, action frame weight 16,
#      half the draws at a scene's first step, absolute actions, each chunk smoothed over 7 actions at inference);
#   3s. streaming DAgger: 400 rollouts of phase A (seeds 6800..7199) streaming with replace RTC, an inference delay of
#       4..10 ticks drawn per scene, an observation every 25 ticks (first 200) or 35 ticks (last 200), labelled with
#       the expert's actions at the observation ticks, failed scenes only before tick 75;
#   4s. phase S: phase A continued on the expert data and them (1,200 steps, lr 6e-4) -> DIR/phase_s;
#   5s. streaming DAgger round 2 (S2_STEPS > 0, default 1200): 400 rollouts of phase S (seeds 7200..7599), as in 3s;
#   6s. phase S2: phase S continued on everything (S2_STEPS steps, lr 3e-4) -> DIR/checkpoint (S2_STEPS=0: phase S).
#
# RECIPE=pause: checkpoints/sim_transfer_cube (Predict2 formulation, made for execution:=pause; about 109 min on
# 2 CPU cores, measured 2026-12-05; with GRASP_STARTS=500 A_STEPS=3000 C_STEPS=1200 PAUSE_TICKS=10 it ran end to end
# in 91 min and was a little weaker, validation 47/60 against 50/60, docs/sim_checkpoint_results.md):
#   1. as above, with 1,000 grasp-phase scenes;
#   2. phase A as above with 4,000 steps and action frame weight 3;
#   3. DAgger the way the ROS graph runs the policy: 400 rollouts of phase A (seeds 6000..6399) holding the last action
#      28 ticks before every re-plan (execution:=pause on 2 cores), labelled with the expert's actions, recorded at
#      every re-planning step (0 50 100 150, failures too: phase A lifts the cube but fails the hand-over);
#   4. phase B: phase A continued with them (2,000 steps, lr 6e-4, 30% of the draws at a first step);
#   5. DAgger round 2: 400 rollouts of phase B (seeds 6400..6799), as in 3;
#   6. phase C: phase B continued on everything (1,500 steps, lr 3e-4) -> DIR/checkpoint.
#
# Training on the CPU is seeded but not bit-exact across machines: a rerun gives a checkpoint of the same recipe, not
# the same bytes. Usage: [RECIPE=stream|pause] scripts/quick_sim_checkpoint.sh [DIR]
# Each recipe's settings are defaults, overridable for experiments: BACKBONE (predict2 / predict2.5), ACTION_WEIGHT,
# GRASP_STARTS, A_STEPS, B_STEPS, C_STEPS (phase C or S), PAUSE_TICKS, REFINE (pause: steps 3-6, stream: 3s-6s),
# VAE_STEPS, VAE_HARD_STEPS, S2_STEPS (stream only).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dev-env.sh
dir=${1:-runs/quick}
case "${RECIPE:-stream}" in
  stream)
    GRASP_STARTS=${GRASP_STARTS:-500} A_STEPS=${A_STEPS:-3000} C_STEPS=${C_STEPS:-1200} BACKBONE=${BACKBONE:-predict2.5}
    ACTION_WEIGHT=${ACTION_WEIGHT:-16} REFINE=${REFINE:-stream} VAE_STEPS=${VAE_STEPS:-1316} S2_STEPS=${S2_STEPS:-1200} ;;
  pause)
    GRASP_STARTS=${GRASP_STARTS:-1000} A_STEPS=${A_STEPS:-4000} C_STEPS=${C_STEPS:-1500} BACKBONE=${BACKBONE:-predict2}
    ACTION_WEIGHT=${ACTION_WEIGHT:-3} REFINE=${REFINE:-pause} VAE_STEPS=${VAE_STEPS:-0} S2_STEPS=0 ;;
  *) echo "RECIPE: expected stream or pause, got '$RECIPE'" >&2; exit 2 ;;
esac
B_STEPS=${B_STEPS:-2000} PAUSE_TICKS=${PAUSE_TICKS:-28} VAE_HARD_STEPS=${VAE_HARD_STEPS:-300}
case "$REFINE" in pause | stream) ;; *) echo "REFINE: expected pause or stream, got '$REFINE'" >&2; exit 2 ;; esac
data=$dir/data
mkdir -p "$data"
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
starts() {  # N SEED OUT ARGS...: expert scenes, rendered only where their samples read
  local n=$1 seed=$2 out=$3
  shift 3
  [ -f "$out/episode_$((n - 1)).hdf5" ] ||
    python -m cosmos_policy_ros.sim.generate_demos --episodes "$n" --out "$out" --image-size 240 320 \
      --seed-start "$seed" --workers 2 --settle-steps 25 --no-progress "$@"
}
recipe() {
  python -m cosmos_policy_training.recipes.sim_transfer_cube --relative-actions none --smoothing-window 7 \
    --no-progress --demos-dir "$data/demos" --episodes 40 --cache-dir "$data/latent_cache" --action-weight "$ACTION_WEIGHT" \
    --first-step-fraction 0.5 --warmup 20 "$@"
}
t0=$(date +%s)
log "recipe ${RECIPE:-stream}, sizes: GRASP_STARTS=$GRASP_STARTS A_STEPS=$A_STEPS B_STEPS=$B_STEPS C_STEPS=$C_STEPS PAUSE_TICKS=$PAUSE_TICKS VAE_STEPS=$VAE_STEPS S2_STEPS=$S2_STEPS"
log "backbone: $BACKBONE, action weight $ACTION_WEIGHT, refinement: $REFINE"
log "1. expert data -> $data"
starts 40 0 "$data/demos"
starts 600 17000 "$data/scene_starts" --scene-starts
starts "$GRASP_STARTS" 15000 "$data/grasp_starts" --sample-steps 0 50 100 --execution-noise 0.03 --noise-hold 25 --noise-until 50
if [ ! -f "$data/handover_starts/.labelled" ]; then
  starts 400 16000 "$data/handover_starts" --sample-steps 100 150 --execution-noise 0.012 --noise-hold 31 \
    --noise-from 88 --noise-until 150
  # their labels are the expert's plan, not what was executed: policy samples only
  python -c "import glob, h5py, sys
for p in glob.glob(sys.argv[1] + '/*.hdf5'):
    with h5py.File(p, 'r+') as f:
        f.attrs['action_labels'] = 'expert'" "$data/handover_starts"
  touch "$data/handover_starts/.labelled"
fi
expert=("$data/scene_starts" "$data/grasp_starts" "$data/handover_starts")
vae_args=()
if [ "$VAE_STEPS" -gt 0 ]; then
  log "1v. the sim VAE: $VAE_STEPS steps on the demos, then $VAE_HARD_STEPS with the hard-pixel term -> $dir/vae"
  [ -f "$dir/vae_plain/vae_report.json" ] || [ -f "$dir/vae/vae_report.json" ] ||
    python -m cosmos_policy_training.vae --episodes "$data/demos" --out "$dir/vae_plain" --base-dim 8 --batch 4 \
      --lr 2e-3 --steps "$VAE_STEPS" --eval-every 350 --save-every 50 --threads 2 --max-minutes 0 --no-progress
  [ -f "$dir/vae/vae_report.json" ] ||
    python -m cosmos_policy_training.vae --episodes "$data/demos" --out "$dir/vae" --init "$dir/vae_plain" --batch 4 \
      --lr 1e-3 --steps "$VAE_HARD_STEPS" --hard-weight 2 --eval-every 100 --save-every 50 --threads 2 \
      --max-minutes 0 --no-progress
  vae_args=(--vae "$dir/vae")
fi
dagger() {  # POLICY SEED OUT: 400 rollouts of POLICY on 2 processes, holding the last action 28 ticks before every
  # re-plan (execution:=pause on 2 cores), labelled with the expert's actions, recorded at the re-planning steps
  local a pid pids=()
  for a in "$2" "$(($2 + 200))"; do
    [ -f "$3/episode_$((a + 199)).hdf5" ] && continue
    python -m cosmos_policy_training.rollouts --policy "$1" --seed-start "$a" --episodes 200 --out "$3" \
      --expert-labels --sample-steps 0 50 100 150 --failure-sample-steps 0 50 100 150 --pause-ticks "$PAUSE_TICKS" \
      > "$3.$a.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done  # a failed process stops the script (set -e)
  { cat "$3".*.log 2>/dev/null || true; } | { grep -o "max reward [0-9]" || true; } | sort | uniq -c  # the round's outcomes
}
log "2. phase A: from scratch"
[ -d "$dir/phase_a" ] || recipe --backbone "$BACKBONE" "${vae_args[@]}" --extra-demos "${expert[@]}" --out "$dir/phase_a" --run-dir "$dir/run_a" \
  --steps "$A_STEPS" --lr 4e-3 --warmup 200 --decay-factor 0.1 --seed 0
if [ "$REFINE" = stream ]; then
  stream_round() {  # POLICY SEED OUT: 400 rollouts of POLICY streaming with replace RTC (seeds SEED.., 2 processes)
    local seed horizon pid pids=()
    for a in "$2 25" "$(($2 + 200)) 35"; do
      read -r seed horizon <<< "$a"
      [ -f "$3/episode_$((seed + 199)).hdf5" ] && continue
      python -m cosmos_policy_training.rollouts --policy "$1" --seed-start "$seed" --episodes 200 \
        --out "$3" --expert-labels --threads 1 --execution stream --delay-ticks 4 10 \
        --execution-horizon "$horizon" --failure-sample-until 75 > "$3.$seed.log" 2>&1 &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    { cat "$3".*.log 2>/dev/null || true; } | { grep -o "max reward [0-9]" || true; } | sort | uniq -c
  }
  log "3s. streaming DAgger: 400 rollouts of phase A"
  stream_round "$dir/phase_a" 6800 "$data/dagger_stream"
  log "4s. phase S: phase A continued with them"
  [ -d "$dir/phase_s" ] || recipe --init "$dir/phase_a" --extra-demos "${expert[@]}" "$data/dagger_stream" \
    --out "$dir/phase_s" --run-dir "$dir/run_s" --steps "$C_STEPS" --lr 6e-4 --decay-factor 0.33 \
    --first-step-fraction 0.3 --seed 1 --policy-id "sim-transfer-cube-$BACKBONE"
  if [ "$S2_STEPS" -gt 0 ]; then
    log "5s. streaming DAgger round 2: 400 rollouts of phase S"
    stream_round "$dir/phase_s" 7200 "$data/dagger_stream2"
    log "6s. phase S2: phase S continued with both rounds"
    [ -d "$dir/checkpoint" ] || recipe --init "$dir/phase_s" --extra-demos "${expert[@]}" "$data/dagger_stream" \
      "$data/dagger_stream2" --out "$dir/checkpoint" --run-dir "$dir/run_s2" --steps "$S2_STEPS" --lr 3e-4 \
      --decay-factor 0.33 --first-step-fraction 0.3 --seed 2 --policy-id "sim-transfer-cube-$BACKBONE"
  else
    [ -d "$dir/checkpoint" ] || cp -r "$dir/phase_s" "$dir/checkpoint"
  fi
  log "done in $(( ($(date +%s) - t0) / 60 )) min: $dir/checkpoint"
  exit 0
fi
log "3. DAgger round 1: 400 rollouts of phase A"
dagger "$dir/phase_a" 6000 "$data/dagger_a"
log "4. phase B: phase A continued with them"
[ -d "$dir/phase_b" ] || recipe --init "$dir/phase_a" --extra-demos "${expert[@]}" "$data/dagger_a" \
  --out "$dir/phase_b" --run-dir "$dir/run_b" --steps "$B_STEPS" --lr 6e-4 --decay-factor 0.33 --first-step-fraction 0.3 \
  --seed 1
log "5. DAgger round 2: 400 rollouts of phase B"
dagger "$dir/phase_b" 6400 "$data/dagger_b"
log "6. phase C: phase B continued on everything"
[ -d "$dir/checkpoint" ] || recipe --init "$dir/phase_b" --extra-demos "${expert[@]}" "$data/dagger_a" "$data/dagger_b" \
  --out "$dir/checkpoint" --run-dir "$dir/run_c" --steps "$C_STEPS" --lr 3e-4 --decay-factor 0.33 --first-step-fraction 0.3 \
  --seed 2
log "done in $(( ($(date +%s) - t0) / 60 )) min: $dir/checkpoint"
