#!/bin/bash
# One device call: install the carried wheels (diffusers, importlib_metadata), time the variants
# side by side for a few steps, then train them in parallel for as many steps as the budget allows and tar
# each run's final checkpoint into $OUT. Run from the repository root with .devdata (the bundle from
# cache_bundle.py export) and .whl carried:  OUT=$OUT DEV=cuda BUDGET_S=540 bash scripts/device_sweep/sweep.sh
# Options (environment): VARIANTS="name=steps=recipe args;..." instead of the built-in list (e.g. one
# large-batch run, VARIANTS="b256=40000=--batch 256"), BUNDLE (default .devdata/exp8), STRIDE (the bundle's, 8),
# CAP (most steps per variant), TSTEPS (timing steps, 60).
set -u
T0=$(date +%s); nvidia-smi --query-gpu=name,memory.used --format=csv; DEADLINE=$((T0 + ${BUDGET_S:-540}))
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
mkdir -p /tmp/pkgs && ln -sfn $PWD/training /tmp/pkgs/cosmos_policy_training
export PYTHONPATH=/tmp/site:/tmp/pkgs:$PWD
python3 - <<'PY' || exit 4
import torch, diffusers
print("torch", torch.__version__, torch.cuda.is_available(), "diffusers", diffusers.__version__)
import cosmos_policy_training.trainer
PY
W=/tmp/sw; mkdir -p $W
# the variants (recipe arguments on top of the defaults) and the steps each wants: $VARIANTS or the list below.
# 7 side by side ran at 0.12 s per step each on an H200 (measured 2026-12-04; the GPU time-slices the processes).
declare -A V WANT
if [ -n "${VARIANTS:-}" ]; then
  # VARIANTS="name=steps=recipe args;name2=steps=recipe args" (e.g. one large-batch run, see docs/training.md)
  IFS=';' read -ra ITEMS <<< "$VARIANTS"
  for it in "${ITEMS[@]}"; do n=${it%%=*}; rest=${it#*=}; WANT[$n]=${rest%%=*}; V[$n]="${rest#*=}"; done
else
  V[scene]="--latent-norm scene"
  V[scene_pos]="--latent-norm scene --extra-pos-embed learnable"
  V[scene_aw10]="--latent-norm scene --action-weight 10"
  V[scene_pos_aw10]="--latent-norm scene --extra-pos-embed learnable --action-weight 10"
  V[scene_lr8]="--latent-norm scene --lr 8e-3"
  V[scene_pos_aw10_pd]="--latent-norm scene --extra-pos-embed learnable --action-weight 10 --proprio-dropout 0.5"
  V[data_pos]="--latent-norm data --extra-pos-embed learnable"
  for n in "${!V[@]}"; do WANT[$n]=9000; done
fi
run() {  # name steps
  python3 scripts/device_sweep/cache_bundle.py train ${BUNDLE:-.devdata/exp8} -- --out $W/out_$1 --run-dir $W/run_$1 --stride ${STRIDE:-8} --device ${DEV:-cuda} \
    --threads 2 --no-progress --steps $2 ${V[$1]} > $W/log_$1.txt 2>&1
}
# timing: all variants side by side for 60 steps
for n in "${!V[@]}"; do run $n ${TSTEPS:-60} & done; wait
python3 - <<'PY' > $W/rate.txt
import json, glob
r = []
for f in glob.glob("/tmp/sw/run_*/history.jsonl"):
    h = [json.loads(l) for l in open(f)]
    if len(h) >= 3: r.append((h[-1]["elapsed_s"] - h[1]["elapsed_s"]) / (h[-1]["step"] - h[1]["step"]))
print(max(r) if r else 1.0)
PY
PER=$(cat $W/rate.txt); NOW=$(date +%s); AVAIL=$((DEADLINE - NOW - 45))
echo "per-step (${#V[@]} side by side): $PER s; available $AVAIL s"; for n in "${!V[@]}"; do tail -2 $W/log_$n.txt; break; done
rm -rf $W/run_* $W/out_*
for n in "${!V[@]}"; do
  S=$(python3 -c "print(int(min(${WANT[$n]}, ${CAP:-99999}, $AVAIL / $PER * 0.92) // 8 * 8))")
  echo "$n: $S steps"; if [ "$S" -ge 200 ]; then run $n $S & fi
done; wait
for n in "${!V[@]}"; do tail -1 $W/log_$n.txt | cut -c1-400; done
for n in "${!V[@]}"; do tar -cf $OUT/$n.tar -C $W run_$n/final run_$n/history.jsonl log_$n.txt 2>/dev/null; done
echo "total $(( $(date +%s) - T0 )) s"
