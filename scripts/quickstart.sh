#!/bin/bash
# A few minutes of BigGAN training on the built-in Shapes dataset (32 px, 10 classes, generated
# on the fly: no download), on the CPU or a GPU. Writes checkpoints to runs/quickstart/weights,
# logs to runs/quickstart/logs, samples to runs/quickstart/samples, and a loss plot.
# Extra flags are passed to train.py, e.g. `bash scripts/quickstart.sh --num_iters 2000`.
set -e
cd "$(dirname "$0")/.."
ROOT=runs/quickstart
python train.py \
--dataset Shapes --resolution 32 --base_root $ROOT \
--shuffle --batch_size 32 --num_D_steps 2 --num_workers 1 \
--G_ch 16 --D_ch 16 --G_attn 0 --D_attn 0 --G_shared --shared_dim 32 --dim_z 64 \
--G_lr 2e-4 --D_lr 2e-4 --G_init N02 --D_init N02 \
--ema --use_ema --ema_start 100 --G_eval_mode \
--num_iters 500 --save_every 100 --test_every 1000000 --sv_log_interval 10 "$@"
EXP=$(ls -t $ROOT/weights | head -n 1)
python logs/plot_training.py $ROOT/logs/$EXP --out $ROOT/training.png
echo
echo "Weights: $ROOT/weights/$EXP"
echo "Logs:    $ROOT/logs/$EXP (plot: $ROOT/training.png)"
echo "Samples: $ROOT/samples/$EXP (fixed_samples<itr>.jpg, <itr>/samples0.jpg, <itr>/interp*.jpg)"
