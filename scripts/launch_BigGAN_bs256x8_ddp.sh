#!/bin/bash
# The released 128 px model (launch_BigGAN_bs256x8.sh) with DistributedDataParallel: one process per
# GPU. Batch arithmetic: 8 processes x batch_size 32 x 8 accumulations = the original's 256 x 8 =
# 2048 images per D and G step (BN statistics per GPU are over 32 images, as under DataParallel).
# --batch_size is per process, so the experiment name says bs32; to continue a run started with
# launch_BigGAN_bs256x8.sh, add --experiment_name <its name> --resume.
# The HDF5 file is read lazily by every process (no --load_in_mem: it would copy the dataset 8 times).
NPROC=${NPROC:-8}
torchrun --nproc_per_node $NPROC train.py \
--dataset I128_hdf5 --shuffle  --num_workers 4 --batch_size $((256 / NPROC)) \
--num_G_accumulations 8 --num_D_accumulations 8 \
--num_D_steps 1 --G_lr 1e-4 --D_lr 4e-4 --D_B2 0.999 --G_B2 0.999 \
--G_attn 64 --D_attn 64 \
--G_nl inplace_relu --D_nl inplace_relu \
--SN_eps 1e-6 --BN_eps 1e-5 --adam_eps 1e-6 \
--G_ortho 0.0 \
--G_shared \
--G_init ortho --D_init ortho \
--hier --dim_z 120 --shared_dim 128 \
--G_eval_mode \
--G_ch 96 --D_ch 96 \
--ema --use_ema --ema_start 20000 \
--test_every 2000 --save_every 1000 --num_best_copies 5 --num_save_copies 2 --seed 0 \
--use_multiepoch_sampler "$@"
