#!/usr/bin/env bash
# One DAgger round of the sim transfer-cube policy (docs/training.md, "Refining a policy with DAgger"):
#   1. roll out POLICY on NEW scenes SEED..SEED+N-1, recording its observations with the scripted expert's actions
#      as labels (rollouts --expert-labels; the rollout outcomes are also a held-out measure of POLICY);
#   2. continue training POLICY on the scripted demos plus every DAgger folder so far (they are policy samples only).
# Usage: scripts/dagger_round.sh POLICY OUT SEED N "DAGGER_DIR..." [extra recipe args]
#   e.g. scripts/dagger_round.sh runs/ckpt_dag2 runs/ckpt_dag3 140 40 "data/dagger data/dagger2 data/dagger3"
# EXECUTION=stream records the rollouts the way the graph's execution:=stream with real-time chunking runs the policy
# (docs/training.md, "Streaming DAgger"): rollouts --execution stream with the stream-rtc row's RTC settings, an
# inference delay drawn per episode from DELAY_TICKS (default "4 10", 25 Hz ticks), samples at the streaming
# observation ticks, failed episodes kept before tick FAILURE_SAMPLE_UNTIL (default 75: before the gripper reaches the
# cube, where the expert's plan still fits a failed scene). Default EXECUTION=pause: every recorded step, as before.
set -euo pipefail
policy=$1 out=$2 seed=$3 n=$4 dirs=$5
shift 5
new=${dirs##* }  # the last folder receives this round's rollouts
source "$(dirname "$0")/dev-env.sh"
rollout_args=(--expert-labels --threads 2)
case "${EXECUTION:-pause}" in
  pause) ;;
  stream)
    read -r -a delay <<< "${DELAY_TICKS:-4 10}"
    rollout_args+=(--execution stream --delay-ticks "${delay[@]}" --failure-sample-until "${FAILURE_SAMPLE_UNTIL:-75}") ;;
  *) echo "EXECUTION: expected pause or stream, got '$EXECUTION'" >&2; exit 2 ;;
esac
if [ ! -f "$new/episode_$((seed + n - 1)).hdf5" ]; then
  python -m cosmos_policy_training.rollouts --policy "$policy" --seed-start "$seed" --episodes "$n" --out "$new" \
    "${rollout_args[@]}"
fi
# shellcheck disable=SC2086
python -m cosmos_policy_training.recipes.sim_transfer_cube --init "$policy" --demos-dir data/sim_demos --episodes 100 \
  --extra-demos $dirs --out "$out" --run-dir "runs/$(basename "$out")_run" --relative-actions none --steps 1200 \
  --lr 3e-4 --warmup 20 --decay-factor 0.33 --first-step-fraction 0.25 --action-weight 3 --seed "$seed" --no-progress "$@"
