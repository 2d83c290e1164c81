#!/bin/bash
# A class-conditional BigGAN for a small image folder (about 1k-10k images, one subfolder per
# class) on a modest machine: a 2-core CPU or one GPU. The recipe: the quickstart's model and
# optimiser (ch 8 without attention, batch 16, one D step, orthogonal init, hierarchical z, Adam
# beta2 0.99, EMA 0.99 from the start) at half its learning rates (5e-4 for G, 1e-3 for D: at
# 1e-3 / 2e-3 one of five 10-minute runs lost D's class signal for good), with the published
# small-data remedies (DiffAugment, LeCam) and an auxiliary classifier in D (--AC_weight 1);
# bench/bench_small_data.py compares it with the alternatives: README, "Small datasets and modest
# hardware".
#
#   bash scripts/launch_small_data.sh --dataset /path/to/folder --resolution 32 [train.py flags]
#
# Later flags override the recipe's, e.g. --num_iters 20000, or --G_ch 32 --D_ch 32 on a GPU.
# Outputs go to weights/, logs/ and samples/ under the current folder (or --base_root). SIGTERM
# (or SIGUSR1) saves a checkpoint with G_ema and exits 0; the same command with --resume goes on.
set -e
exec python "$(dirname "$0")/../train.py" \
--shuffle --load_in_mem --num_workers 0 \
--batch_size 16 --num_D_steps 1 --G_ch 8 --D_ch 8 --G_attn 0 --D_attn 0 \
--G_shared --hier --shared_dim 32 --dim_z 64 --G_init ortho --D_init ortho \
--G_lr 5e-4 --D_lr 1e-3 --G_B2 0.99 --D_B2 0.99 \
--ema --use_ema --ema_start 0 --ema_decay 0.99 --G_eval_mode \
--DiffAugment translation,color,cutout --LeCam 0.1 --AC_weight 1 \
--num_iters 20000 --save_every 500 --test_every 1000000 --sv_log_interval 10 "$@"
