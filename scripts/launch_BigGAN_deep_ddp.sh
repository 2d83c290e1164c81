#!/bin/bash
# BigGAN-deep at 128 px (launch_BigGAN_deep.sh) with DistributedDataParallel: 8 processes x batch
# 32 x 8 accumulations = 2048 images per step, as the original's 256 x 8.
NPROC=${NPROC:-8}
torchrun --nproc_per_node $NPROC train.py \
--model BigGANdeep \
--dataset I128_hdf5 --shuffle  --num_workers 4 --batch_size $((256 / NPROC)) \
--num_G_accumulations 8 --num_D_accumulations 8 \
--num_D_steps 1 --G_lr 1e-4 --D_lr 4e-4 --D_B2 0.999 --G_B2 0.999 \
--G_attn 64 --D_attn 64 \
--G_ch 128 --D_ch 128 \
--G_depth 2 --D_depth 2 \
--G_nl inplace_relu --D_nl inplace_relu \
--SN_eps 1e-6 --BN_eps 1e-5 --adam_eps 1e-6 \
--G_ortho 0.0 \
--G_shared \
--G_init ortho --D_init ortho --skip_init \
--hier --dim_z 128 --shared_dim 128 \
--ema --use_ema --ema_start 20000 --G_eval_mode \
--test_every 2000 --save_every 500 --num_best_copies 5 --num_save_copies 2 --seed 0 \
--use_multiepoch_sampler "$@"
