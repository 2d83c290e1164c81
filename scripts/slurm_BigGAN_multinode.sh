#!/bin/bash
# The released 128 px model on 4 nodes x 8 GPUs with torchrun under SLURM:
# 32 processes x batch_size 16 x 4 accumulations = 2048 images per step.
#   sbatch scripts/slurm_BigGAN_multinode.sh
# Requeue: three minutes before the time limit SLURM signals this batch script (B:USR1@180), which
# sends SIGTERM to srun; torchrun passes it to its workers, which save at the next iteration boundary
# and exit 0; then the script requeues the job, and the requeued job resumes. torchrun kills workers
# that have not exited 30 s after SIGTERM: a save cut short that way leaves the previous checkpoint
# complete (saves are atomic) and the requeued job replays the iterations since.
#SBATCH --job-name=biggan
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --signal=B:USR1@180
#SBATCH --requeue
set -e
EXP=BigGAN_I128_ddp32x16x4
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
RESUME=""
[ -f "weights/$EXP/state_dict.pth" ] && RESUME="--resume"
requeue() {
  echo "time limit near: saving and requeueing job $SLURM_JOB_ID"
  kill -TERM "$SRUN_PID"
  wait "$SRUN_PID" || true
  scontrol requeue "$SLURM_JOB_ID"
}
trap requeue USR1
srun torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 8 \
  --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$HEAD:29500" \
  train.py --experiment_name $EXP $RESUME \
  --dataset I128_hdf5 --shuffle --num_workers 4 --batch_size 16 \
  --num_G_accumulations 4 --num_D_accumulations 4 \
  --num_D_steps 1 --G_lr 1e-4 --D_lr 4e-4 --D_B2 0.999 --G_B2 0.999 \
  --G_attn 64 --D_attn 64 --G_nl inplace_relu --D_nl inplace_relu \
  --SN_eps 1e-6 --BN_eps 1e-5 --adam_eps 1e-6 --G_ortho 0.0 --G_shared \
  --G_init ortho --D_init ortho --hier --dim_z 120 --shared_dim 128 --G_eval_mode \
  --G_ch 96 --D_ch 96 --ema --use_ema --ema_start 20000 \
  --test_every 2000 --save_every 1000 --num_best_copies 5 --num_save_copies 2 --seed 0 \
  --use_multiepoch_sampler "$@" &
SRUN_PID=$!
wait "$SRUN_PID"
