#!/usr/bin/env bash
# One GPU run of the study, as on an H100/H200 (see README "Performance"): the study's 4-cell
# sweep with our recipe on the device-resident data path, candidate models under +experiment=best,
# and the default (Albumentations) path, all concurrently on one GPU; then everything but
# checkpoints is tarred.
#
#   bash benchmarks/gpu_sweep.sh            # DATA=/tmp/cifar10 (pickle layout), OUT=results dir
# Knobs: EPOCHS (120), MAX_TIME (safety stop per run, DD:HH:MM:SS), RUNS (work dir), TRAINER, ARGS,
# MODELS (the sweep's models, default strided,dilated), CANDIDATES (model presets trained with
# +experiment=best, each "preset[:epochs]", default "iterated:70"), EXTRA_RUN.
set -u
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
DATA=${DATA:-/tmp/cifar10}
OUT=${OUT:-outputs/gpu_sweep}
RUNS=${RUNS:-/tmp/gpu_runs}
EPOCHS=${EPOCHS:-120}
MAX_TIME=${MAX_TIME:-00:00:05:30}
TRAINER=${TRAINER:-gpu}   # TRAINER=cpu ARGS="++trainer.limit_train_batches=2 ..." for a dry run
ARGS=${ARGS:-}
MODELS=${MODELS:-strided,dilated}
CANDIDATES=${CANDIDATES:-iterated:70}
mkdir -p "$OUT" "$RUNS"
quiet="~callbacks.progress_bar ++trainer.enable_progress_bar=false"
common="trainer=$TRAINER data.root=$DATA data.download=false ++trainer.max_time=$MAX_TIME $quiet $ARGS"
gpu="data=cifar10_gpu $common"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || nproc; } | tee "$OUT/hardware.txt"
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" | tee -a "$OUT/hardware.txt"

if [ -f benchmarks/lightning_overhead.py ]; then
  timeout 60 python3 benchmarks/lightning_overhead.py --device cuda > "$OUT/bench_lightning_overhead.txt" 2>&1
fi

start=$(date +%s)
python3 train.py -m +experiment=study model=$MODELS aug=cutout,ricap trainer.max_epochs=$EPOCHS $gpu \
  hydra/launcher=joblib hydra.launcher.n_jobs=4 hydra.sweep.dir=$RUNS/study > "$RUNS/study.log" 2>&1 &
for candidate in $CANDIDATES; do
  model=${candidate%%:*}; epochs=${candidate#*:}; [ "$epochs" = "$candidate" ] && epochs=$EPOCHS
  python3 train.py +experiment=best model=$model trainer.max_epochs=$epochs $gpu \
    hydra.run.dir=$RUNS/best_$model > "$RUNS/best_$model.log" 2>&1 &
done
# The default recipe on the default (Albumentations, CPU workers) data path, on the GPU.
python3 train.py data.num_workers=5 $common \
  hydra.run.dir=$RUNS/default_albumentations > "$RUNS/default_albumentations.log" 2>&1 &
if [ -n "${EXTRA_RUN:-}" ]; then  # one more run, e.g. "data=cifar10_gpu +experiment=study aug=none"
  python3 train.py $common $EXTRA_RUN \
    hydra.run.dir=$RUNS/extra > "$RUNS/extra.log" 2>&1 &
fi
wait
echo "all runs finished in $(( $(date +%s) - start )) s" | tee -a "$OUT/hardware.txt"
cat "$RUNS"/study/summary.md 2>/dev/null
for f in "$RUNS"/*/metrics.json; do echo "$f"; grep -E '"(test_acc|best_val_acc|epochs|epoch_time_s|train_images_per_sec|status|error)"' "$f"; done
tar --exclude='*.ckpt' -czf "$OUT/runs.tgz" -C "$(dirname "$RUNS")" "$(basename "$RUNS")"
