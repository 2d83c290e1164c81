#!/bin/bash
# A class-conditional BigGAN for a small image folder (about 1k-10k images, one subfolder per
# class) on a modest machine: a 2-core CPU or one GPU. The recipe (width, batch, learning rates,
# D steps, EMA, augmentation, regularisation) is the quickstart's model with the published small-data
# remedies (DiffAugment, LeCam), an auxiliary classifier in D (--AC_weight 1: on 1000 Patterns
# images it took class accuracy from 0.44 to 0.66 in 1400 iterations) and a slower EMA for long
# runs; bench/bench_small_data.py compares it with the alternatives: README, "Small datasets and
# modest hardware".
#
#   bash scripts/launch_small_data.sh --dataset /path/to/folder --resolution 32 [train.py flags]
#
# Later flags override the recipe's, e.g. --num_iters 20000, or --G_ch 32 --D_ch 32 on a GPU.
# Outputs go to weights/, logs/ and samples/ under the current folder (or --base_root). SIGTERM
# (or SIGUSR1) saves a checkpoint with G_ema and exits 0; the same command with --resume goes on.
set -e
exec python "$(dirname "$0")/../train.py" \
--shuffle --load_in_mem --num_workers 0 \
--batch_size 32 --num_D_steps 1 --G_ch 8 --D_ch 8 --G_attn 0 --D_attn 0 \
--G_shared --shared_dim 32 --dim_z 64 --G_init N02 --D_init N02 \
--G_lr 2e-4 --D_lr 4e-4 \
--ema --use_ema --ema_start 500 --ema_decay 0.999 --G_eval_mode \
--DiffAugment translation,color,cutout --LeCam 0.1 --AC_weight 1 \
--num_iters 20000 --save_every 500 --test_every 1000000 --sv_log_interval 10 "$@"
