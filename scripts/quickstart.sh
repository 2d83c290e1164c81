#!/bin/bash
# Five minutes of BigGAN on the built-in Shapes dataset (16 px, 10 classes: red or blue circle,
# square, triangle, plus and ring, drawn on the fly: no download), on the CPU or a GPU, then its
# class accuracy: a small classifier, trained on real Shapes images in seconds (beside the
# training, on the core it leaves idle), labels 100 samples of each class of G_ema (1.0: every
# row of the sheet has the right colour and shape).
# Writes checkpoints to runs/quickstart/weights, logs to runs/quickstart/logs, samples to
# runs/quickstart/samples (QUICKSTART_ROOT=FOLDER for another place), and a loss plot.
# The recipe: G and D at 16 px (an iteration costs about 0.4x a 32 px one here and learns about
# as much shape) for 7000 iterations or 4.5 minutes of training, whichever comes first (a slower
# machine stops earlier, with fewer shapes right, so the whole command stays within 5 minutes;
# bash scripts/quickstart.sh --resume goes on), ch 8 (32 channels) without attention, batch 16, one
# D step at learning rates 1e-3 (G) and 2e-3 (D) with Adam beta2 0.99 (second moments that follow
# the quickly changing gradients of a short run), orthogonal init of G and D, an auxiliary
# classifier in D (--AC_weight 1: a direct class signal), hierarchical z (--hier: a chunk of z in
# each G block's conditional BN), EMA 0.99 from the start, and less work per iteration: the G
# step scores the D step's fakes (--reuse_fakes: one G forward pass less) and Adam runs as one
# fused kernel (--fused_optim); README.md ("Small datasets and modest hardware") has its
# measurements.
# Extra flags are passed to train.py, e.g. `bash scripts/quickstart.sh --max_minutes 0` (all 7000
# iterations, however long they take).
# SIGTERM or Ctrl-C stops it cleanly: train.py saves a checkpoint first (then --resume goes on).
set -e
cd "$(dirname "$0")/.."
ROOT=${QUICKSTART_ROOT:-runs/quickstart}
STOPPED=
PID=
CLASSIFIER=
# (|| true: under set -e a failed kill, e.g. of a classifier already done, would end the script)
trap 'STOPPED=1; [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null || true
      [ -n "$CLASSIFIER" ] && kill -TERM "$CLASSIFIER" 2>/dev/null || true' TERM INT

run() {  # a child process that a signal to this script stops cleanly
  "$@" &
  PID=$!
  local status=0
  wait "$PID" || status=$?
  while [ -n "$STOPPED" ] && kill -0 "$PID" 2>/dev/null; do  # still saving
    status=0
    wait "$PID" || status=$?
  done
  PID=
  if [ -n "$STOPPED" ]; then
    echo "Stopped by a signal. Checkpoints: $ROOT/weights; continue with: bash $0 --resume"
    exit 0
  fi
  return $status
}

# The scoring classifier trains beside G and D (cached in $ROOT/data; at once when it is there).
mkdir -p $ROOT
python shapes_classifier.py --resolution 16 --data_root $ROOT/data >$ROOT/classifier.log 2>&1 &
CLASSIFIER=$!
# One thread: at this size a second one adds 3% here, and the classifier has the other core.
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} run python train.py \
--dataset Shapes --resolution 16 --base_root $ROOT \
--shuffle --num_workers 1 \
--batch_size 16 --num_D_steps 1 --G_ch 8 --D_ch 8 --G_attn 0 --D_attn 0 \
--G_shared --hier --shared_dim 32 --dim_z 64 --G_init ortho --D_init ortho --AC_weight 1 \
--G_lr 1e-3 --D_lr 2e-3 --G_B2 0.99 --D_B2 0.99 \
--ema --use_ema --ema_start 0 --ema_decay 0.99 --G_eval_mode --reuse_fakes --fused_optim \
--num_iters 7000 --max_minutes 4.5 --save_every 500 --test_every 1000000 --sv_log_interval 10 "$@"
EXP=$(ls -t $ROOT/weights | grep -v '\.old-' | head -n 1)
run python logs/plot_training.py $ROOT/logs/$EXP --out $ROOT/training.png
echo "Scoring G_ema's class accuracy (log: $ROOT/score.log)..."
wait $CLASSIFIER || true
CLASSIFIER=
>$ROOT/score.log run python sample.py --experiment_name $EXP --config_from_name \
--base_root $ROOT --use_ema --G_eval_mode --sample_sheets --sample_shapes_accuracy
ITR=$(ls $ROOT/samples/$EXP | grep -E '^[0-9]+$' | sort -n | tail -n 1)
echo
grep 'class accuracy' $ROOT/score.log
echo "Weights: $ROOT/weights/$EXP"
echo "Logs:    $ROOT/logs/$EXP (plot: $ROOT/training.png)"
echo "Samples: $ROOT/samples/$EXP (final sheet, a row per class: $ROOT/samples/$EXP/$ITR/samples0.jpg)"
