"""Configuration: the flag parser, experiment names and the convenience lookups.

Every flag of the original BigGAN-PyTorch is here with its name, dest and default, so users'
launch scripts run unchanged; flags this project adds are marked "(new)" in their help text.
The config flows as in the original: argparse -> vars() -> dict -> **config.

    parser = utils.prepare_parser()
    config = utils.prepare_config(vars(parser.parse_args()))

Also here: the original's small helpers (seed_rng, toggle_grad, ortho, ema, progress,
count_parameters, print_grad_norms, query_gpu, Adam16, the long-edge crops, ...), and, re-exported
under their original utils.* names, the pieces that now live in their own modules (datasets,
sampling, checkpoints, logger).
"""
import datetime
import hashlib
import importlib
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn

import errors
from errors import UserError

# ---------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------


def prepare_parser():
  """The parser shared by train.py, sample.py and the tools (the original's 90 flags + new ones)."""
  parser = errors.ArgumentParser(description='BigGAN training, sampling and evaluation.')
  add = parser.add_argument

  # --- Data -----------------------------------------------------------------------------------
  add('--dataset', type=str, default='I128_hdf5',
      help='Which data to train on: I32, I64, I128, I256, I512 (ImageNet class folders under '
           'data_root/ImageNet), the same with "_hdf5" (data_root/ILSVRC{res}.hdf5), C10, C100 '
           '(CIFAR under data_root/cifar), the built-in offline dataset "Shapes", or a PATH to '
           'an image folder with one subfolder per class or to an .hdf5 file made by make_hdf5.py '
           '(default: %(default)s)')
  add('--resolution', type=int, default=0,
      help='(new) Image size for an image-folder PATH or the built-in dataset; 0 derives it from '
           'the dataset (default: %(default)s)')
  add('--augment', action='store_true', default=False,
      help='Augment with random long-edge crops and horizontal flips (default: %(default)s)')
  add('--num_workers', type=int, default=8,
      help='Number of data loader worker processes (default: %(default)s)')
  add('--no_pin_memory', action='store_false', dest='pin_memory', default=True,
      help='Do not pin loaded batches in page-locked memory (default: pin)')
  add('--shuffle', action='store_true', default=False,
      help='Shuffle the data each epoch (default: %(default)s)')
  add('--load_in_mem', action='store_true', default=False,
      help='Load the whole HDF5 dataset into RAM (default: %(default)s)')
  add('--use_multiepoch_sampler', action='store_true', default=False,
      help='Use the multi-epoch sampler, which can restart mid-run at the exact data position '
           '(default: %(default)s)')

  # --- Model ----------------------------------------------------------------------------------
  add('--model', type=str, default='BigGAN',
      help='Name of the model module: BigGAN or BigGANdeep (default: %(default)s)')
  add('--G_param', type=str, default='SN',
      help='Parameterization of G\'s layers: SN (spectral norm) or anything else for plain '
           'layers (default: %(default)s)')
  add('--D_param', type=str, default='SN',
      help='Parameterization of D\'s layers: SN (spectral norm) or anything else for plain '
           'layers (default: %(default)s)')
  add('--G_ch', type=int, default=64,
      help='Channel multiplier of G (default: %(default)s)')
  add('--D_ch', type=int, default=64,
      help='Channel multiplier of D (default: %(default)s)')
  add('--G_depth', type=int, default=1,
      help='Residual blocks per stage in G (BigGANdeep) (default: %(default)s)')
  add('--D_depth', type=int, default=1,
      help='Residual blocks per stage in D (BigGANdeep) (default: %(default)s)')
  add('--D_thin', action='store_false', dest='D_wide', default=True,
      help='Use the SN-GAN "thin" D whose hidden width is the block input width (default: wide)')
  add('--G_shared', action='store_true', default=False,
      help='Use one shared class embedding in G, projected per BN layer (default: %(default)s)')
  add('--shared_dim', type=int, default=0,
      help='Size of the shared embedding; 0 uses dim_z (default: %(default)s)')
  add('--dim_z', type=int, default=128,
      help='Size of the noise vector z (default: %(default)s)')
  add('--z_var', type=float, default=1.0,
      help='Variance of z when sampling (default: %(default)s)')
  add('--hier', action='store_true', default=False,
      help='Hierarchical z: split z into one chunk per G stage (default: %(default)s)')
  add('--cross_replica', action='store_true', default=False,
      help='Batch-norm statistics over all processes in G (SyncBatchNorm semantics) '
           '(default: %(default)s)')
  add('--mybn', action='store_true', default=False,
      help='Use the original\'s own BN with standing statistics in G (default: %(default)s)')
  add('--G_nl', type=str, default='relu',
      help='Activation in G: relu, inplace_relu or ir (default: %(default)s)')
  add('--D_nl', type=str, default='relu',
      help='Activation in D: relu, inplace_relu or ir (default: %(default)s)')
  add('--G_attn', type=str, default='64',
      help='Resolutions with self-attention in G, underscore-separated; 0 for none '
           '(default: %(default)s)')
  add('--D_attn', type=str, default='64',
      help='Resolutions with self-attention in D, underscore-separated; 0 for none '
           '(default: %(default)s)')
  add('--norm_style', type=str, default='bn',
      help='Normalization in G\'s conditional BN: bn, in (instance), ln (layer), gn (group, also '
           'gn_grp_{groups} or gn_ch_{channels}), nonorm (default: %(default)s)')
  add('--G_tfhub', action='store_true', default=False,
      help='(new) BigGANdeep only: G as DeepMind\'s TF-Hub biggan-deep modules, whose weights '
           'TFHub/converter.py writes (output conv with G_ch channels of which the first 3 are '
           'RGB; BN statistics for 51 truncations, chosen by G.set_truncation) '
           '(default: %(default)s)')
  add('--loss', type=str, default='hinge', choices=['hinge', 'dcgan'],
      help='(new) GAN loss: hinge (BigGAN) or dcgan (non-saturating) (default: %(default)s)')

  # --- Initialization -------------------------------------------------------------------------
  add('--seed', type=int, default=0,
      help='Random seed for weights, noise and data order (default: %(default)s)')
  add('--G_init', type=str, default='ortho',
      help='Weight init of G: ortho, N02, glorot or xavier (default: %(default)s)')
  add('--D_init', type=str, default='ortho',
      help='Weight init of D: ortho, N02, glorot or xavier (default: %(default)s)')
  add('--skip_init', action='store_true', default=False,
      help='Skip weight init, e.g. when the weights are loaded anyway (default: %(default)s)')

  # --- Optimizers -----------------------------------------------------------------------------
  add('--G_lr', type=float, default=5e-5, help='Adam learning rate of G (default: %(default)s)')
  add('--D_lr', type=float, default=2e-4, help='Adam learning rate of D (default: %(default)s)')
  add('--G_B1', type=float, default=0.0, help='Adam beta1 of G (default: %(default)s)')
  add('--D_B1', type=float, default=0.0, help='Adam beta1 of D (default: %(default)s)')
  add('--G_B2', type=float, default=0.999, help='Adam beta2 of G (default: %(default)s)')
  add('--D_B2', type=float, default=0.999, help='Adam beta2 of D (default: %(default)s)')
  add('--adam_eps', type=float, default=1e-8, help='Adam epsilon (default: %(default)s)')

  # --- Batches and steps ----------------------------------------------------------------------
  add('--batch_size', type=int, default=64,
      help='Batch size per D forward pass, per process (default: %(default)s)')
  add('--G_batch_size', type=int, default=0,
      help='Batch size per G forward pass; 0 uses batch_size (default: %(default)s)')
  add('--num_G_accumulations', type=int, default=1,
      help='Gradient accumulations per G step (default: %(default)s)')
  add('--num_D_steps', type=int, default=2,
      help='D steps per G step (default: %(default)s)')
  add('--num_D_accumulations', type=int, default=1,
      help='Gradient accumulations per D step (default: %(default)s)')
  add('--split_D', action='store_true', default=False,
      help='Run D separately on fake and real batches instead of on their concatenation '
           '(default: %(default)s)')
  add('--num_epochs', type=int, default=100,
      help='Number of epochs to train for (default: %(default)s)')
  add('--num_iters', type=int, default=0,
      help='(new) Stop after this many iterations; 0 runs num_epochs (default: %(default)s)')
  add('--parallel', action='store_true', default=False,
      help='Single-process multi-GPU with nn.DataParallel (kept for compatibility; prefer '
           'torchrun) (default: %(default)s)')
  add('--G_fp16', action='store_true', default=False,
      help='Half precision in G; now mapped onto --amp fp16 (default: %(default)s)')
  add('--D_fp16', action='store_true', default=False,
      help='Half precision in D; now mapped onto --amp fp16 (default: %(default)s)')
  add('--G_mixed_precision', action='store_true', default=False,
      help='Mixed precision in G; now mapped onto --amp fp16 (default: %(default)s)')
  add('--D_mixed_precision', action='store_true', default=False,
      help='Mixed precision in D; now mapped onto --amp fp16 (default: %(default)s)')
  add('--accumulate_stats', action='store_true', default=False,
      help='Accumulate "standing" BN statistics before sampling/testing (default: %(default)s)')
  add('--num_standing_accumulations', type=int, default=16,
      help='Forward passes used to accumulate standing statistics (default: %(default)s)')

  # --- Bookkeeping ----------------------------------------------------------------------------
  add('--G_eval_mode', action='store_true', default=False,
      help='Sample and test with G in eval mode (default: %(default)s)')
  add('--save_every', type=int, default=2000,
      help='Save a checkpoint every this many iterations (default: %(default)s)')
  add('--num_save_copies', type=int, default=2,
      help='Rotating numbered checkpoint copies to keep (default: %(default)s)')
  add('--num_best_copies', type=int, default=2,
      help='Rotating best-metric checkpoint copies to keep (default: %(default)s)')
  add('--which_best', type=str, default='IS',
      help='Metric that decides "best" checkpoints: IS or FID, or (new) another of --metrics: '
           'KID, PR (its recall), DC (its coverage), IFID, or a value such as precision '
           '(default: %(default)s)')
  add('--no_fid', action='store_true', default=False,
      help='Compute IS only, not FID (default: %(default)s)')
  add('--test_every', type=int, default=5000,
      help='Compute IS/FID every this many iterations (default: %(default)s)')
  add('--num_inception_images', type=int, default=50000,
      help='Number of generated images for IS/FID (default: %(default)s)')
  add('--hashname', action='store_true', default=False,
      help='Name the experiment by a short deterministic hash of its config name '
           '(default: %(default)s)')
  add('--base_root', type=str, default='',
      help='If set, root of data, weights, logs and samples, overriding the four roots '
           '(default: %(default)s)')
  add('--data_root', type=str, default='data',
      help='Where the data lives (default: %(default)s)')
  add('--weights_root', type=str, default='weights',
      help='Where checkpoints are written (default: %(default)s)')
  add('--logs_root', type=str, default='logs',
      help='Where logs are written (default: %(default)s)')
  add('--samples_root', type=str, default='samples',
      help='Where samples are written (default: %(default)s)')
  add('--pbar', type=str, default='mine',
      help='Progress display: mine (compact, the original\'s) or tqdm (default: %(default)s)')
  add('--name_suffix', type=str, default='',
      help='Suffix appended to the experiment name (default: %(default)s)')
  add('--experiment_name', type=str, default='',
      help='Explicit experiment name instead of one derived from the config, e.g. to fine-tune '
           'into a new folder (default: %(default)s)')
  add('--config_from_name', action='store_true', default=False,
      help='Take the config stored in the checkpoint instead of the flags (default: %(default)s)')

  # --- EMA ------------------------------------------------------------------------------------
  add('--ema', action='store_true', default=False,
      help='Keep an exponential moving average of G (G_ema) (default: %(default)s)')
  add('--ema_decay', type=float, default=0.9999,
      help='EMA decay (default: %(default)s)')
  add('--use_ema', action='store_true', default=False,
      help='Sample and test with G_ema (needs --ema) (default: %(default)s)')
  add('--ema_start', type=int, default=0,
      help='Iteration from which the EMA averages; before it G_ema copies G '
           '(default: %(default)s)')

  # --- Numerics -------------------------------------------------------------------------------
  add('--BN_eps', type=float, default=1e-5, help='Batch-norm epsilon (default: %(default)s)')
  add('--SN_eps', type=float, default=1e-8,
      help='Spectral-norm epsilon of the power iteration (default: %(default)s)')
  add('--num_G_SVs', type=int, default=1,
      help='Singular values tracked per SN layer in G (default: %(default)s)')
  add('--num_D_SVs', type=int, default=1,
      help='Singular values tracked per SN layer in D (default: %(default)s)')
  add('--num_G_SV_itrs', type=int, default=1,
      help='Power iterations per forward pass in G (default: %(default)s)')
  add('--num_D_SV_itrs', type=int, default=1,
      help='Power iterations per forward pass in D (default: %(default)s)')

  # --- Orthogonal regularization --------------------------------------------------------------
  add('--G_ortho', type=float, default=0.0,
      help='Strength of BigGAN\'s off-diagonal ortho regularization in G; 1e-4 in the paper '
           '(default: %(default)s)')
  add('--D_ortho', type=float, default=0.0,
      help='Strength of the off-diagonal ortho regularization in D (default: %(default)s)')
  add('--toggle_grads', action='store_true', default=True,
      help='Freeze the network not being trained during each step (default: on; the original '
           'flag cannot turn it off, use --no_toggle_grads)')
  add('--no_toggle_grads', action='store_false', dest='toggle_grads',
      help='(new) Keep requires_grad on for both networks at every step')

  # --- Training function, resuming, runtime ---------------------------------------------------
  add('--which_train_fn', type=str, default='GAN',
      help='Training function: GAN, or dummy for a loop that only moves the data '
           '(default: %(default)s)')
  add('--load_weights', type=str, default='',
      help='Checkpoint suffix to load, such as copy0 or best3; empty loads the plain files '
           '(default: %(default)s)')
  add('--resume', action='store_true', default=False,
      help='Resume from the newest complete checkpoint of this experiment (default: %(default)s)')
  add('--finetune_from', type=str, default='',
      help='(new) Start from the weights and optimizer states of experiment FINETUNE_FROM (under '
           'weights_root; its newest complete save, or --load_weights SUFFIX) at iteration 0, '
           'writing to this run\'s own experiment folder (name it with --experiment_name) '
           '(default: none)')
  add('--device', type=str, default='auto',
      help='(new) Device: auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ... '
           '(default: %(default)s)')
  add('--amp', type=str, default='off', choices=['off', 'bf16', 'fp16'],
      help='(new) Autocast precision for forward passes (weights, BN statistics, spectral norms '
           'and losses stay fp32); fp16 adds a GradScaler. bf16 trains about 2.7x faster than '
           'fp32 on CPUs with AMX / avx512_bf16, and many times slower on CPUs without them '
           '(emulated; train.py warns) (default: %(default)s)')
  add('--channels_last', action='store_true', default=False,
      help='(new) Store the conv weights of G, D and G_ema in the channels_last memory format, '
           'so that GPU convolutions also run on channels_last activations (faster with --amp '
           'on tensor cores); on CPU the activations are channels_last anyway '
           '(default: %(default)s)')
  add('--compile', action='store_true', default=False,
      help='(new) torch.compile the forward passes of G and D: on CPU about 5%% (fp32) to 20%% '
           '(--amp bf16) faster per iteration, after 1-2 minutes of compiling on 2 cores '
           '(default: %(default)s)')
  add('--inception_net', type=str, default='torchvision', choices=['torchvision', 'tf'],
      help='(new) Network for IS/FID: torchvision (the original\'s monitor) or tf (the TF '
           '2015-12-05 graph used by the papers, ported) (default: %(default)s)')
  add('--inception_weights', type=str, default='',
      help='(new) Weights file for the Inception network, for machines without internet '
           '(default: %(default)s)')
  # Metrics (metrics.py): one Inception pass feeds all of them.
  add('--metrics', type=str, default='IS,FID',
      help='(new) Metrics, comma-separated: IS, FID, KID (kernel inception distance), PR '
           '(precision, recall), DC (density, coverage), IFID (intra-class FID). train.py and '
           'sample.py always compute IS (the log\'s first keys) and drop FID with --no_fid; the '
           'metrics beyond IS and FID read a cache of the dataset\'s features that '
           'calculate_inception_moments.py --metrics makes (default: %(default)s)')
  add('--kid_subsets', type=int, default=100,
      help='(new) KID: number of random subset pairs averaged (default: %(default)s)')
  add('--kid_subset_size', type=int, default=1000,
      help='(new) KID: images per subset, at most the images of each set '
           '(default: %(default)s)')
  add('--inception_resize', type=str, default='auto', choices=['auto', 'tf', 'torch', 'clean'],
      help='(new) How images are resized to the 299 px Inception input: auto (the network\'s '
           'own: tf for --inception_net tf, torch for torchvision), tf (TF 1.x bilinear), torch '
           '(PyTorch bilinear, align_corners, the original monitor\'s) or clean (clean-fid\'s '
           'PIL bicubic on uint8 images) (default: %(default)s)')
  add('--tensorboard', action='store_true', default=False,
      help='(new) Mirror scalars and samples to TensorBoard under logs_root/<exp>/tb '
           '(default: %(default)s)')

  # --- Small data: augmentation and regularisation of D (augment.py) --------------------------
  add('--DiffAugment', type=str, default='',
      help='(new) DiffAugment policy: a comma list of translation, color, cutout, applied to '
           'every image D sees, real and fake (Zhao et al. 2020) (default: none)')
  add('--ada_target', type=float, default=0.0,
      help='(new) Adaptive augmentation (ADA, Karras et al. 2020): steer the probability p of '
           'its pipeline so that E[sign(D(real))] stays at this target, e.g. 0.6; 0 is off '
           '(default: %(default)s)')
  add('--ada_p', type=float, default=0.0,
      help='(new) ADA\'s starting p; with --ada_target 0 a fixed p (default: %(default)s)')
  add('--ada_interval', type=int, default=4,
      help='(new) Iterations between adjustments of ADA\'s p (default: %(default)s)')
  add('--ada_kimg', type=float, default=500.0,
      help='(new) Speed of ADA\'s p: thousands of real images D sees for p to go from 0 to 1 '
           '(default: %(default)s)')
  add('--LeCam', type=float, default=0.0,
      help='(new) Weight of the LeCam regulariser of D (Tseng et al. 2021), e.g. 0.3; 0 is off '
           '(default: %(default)s)')
  add('--LeCam_decay', type=float, default=0.99,
      help='(new) Decay of the moving averages of D\'s outputs that LeCam uses as anchors '
           '(default: %(default)s)')

  # --- Logging --------------------------------------------------------------------------------
  add('--logstyle', type=str, default='%3.3e',
      help='Format of values in the per-metric .log files, e.g. %%3.3e or %%3.3f '
           '(default: %(default)s)')
  add('--log_G_spectra', action='store_true', default=False,
      help='Log the singular values of G\'s SN layers (default: %(default)s)')
  add('--log_D_spectra', action='store_true', default=False,
      help='Log the singular values of D\'s SN layers (default: %(default)s)')
  add('--sv_log_interval', type=int, default=10,
      help='Iterations between singular-value logs (default: %(default)s)')
  return parser


def add_sample_parser(parser):
  """Flags of sample.py, added to the shared parser."""
  from sampling import INTERPOLATIONS, TRUNCATION_MODES
  add = parser.add_argument
  add('--sample_npz', action='store_true', default=False,
      help='Sample sample_num_npz images into an .npz file of uint8 images (default: %(default)s)')
  add('--sample_num_npz', type=int, default=50000,
      help='Number of images for --sample_npz (default: %(default)s)')
  add('--sample_sheets', action='store_true', default=False,
      help='Write class-conditional sample sheets (default: %(default)s)')
  add('--sample_interps', action='store_true', default=False,
      help='Write interpolation sheets (default: %(default)s)')
  add('--sample_sheet_folder_num', type=int, default=-1,
      help='Folder number for the sheets; -1 uses the iteration (default: %(default)s)')
  add('--sample_random', action='store_true', default=False,
      help='Write one sheet of random samples (default: %(default)s)')
  add('--sample_trunc_curves', type=str, default='',
      help='Truncation sweep "start_step_end", e.g. 0.05_0.05_1.0: IS/FID per truncation '
           '(default: none)')
  add('--sample_inception_metrics', action='store_true', default=False,
      help='Compute IS/FID of the loaded G (default: %(default)s)')
  add('--sample_shapes_accuracy', action='store_true', default=False,
      help='(new) Class accuracy of the loaded G on the Shapes classes: the share of 100 samples '
           'per class that a small classifier, trained on real Shapes images and cached in '
           'data_root, labels with the class they were drawn for (shapes_classifier.py) '
           '(default: %(default)s)')
  add('--truncation', type=float, default=None,
      help='(new) Truncation threshold t >= 0 of z for every sample.py mode, in the sense of '
           '--truncation_mode; a TF-Hub biggan-deep G also switches to its BN statistics for t '
           '(default: none, z ~ N(0, z_var^2))')
  add('--truncation_mode', type=str, default='z_var', choices=list(TRUNCATION_MODES),
      help='(new) Meaning of --truncation and of the --sample_trunc_curves values: z_var '
           '(z ~ N(0, t^2), what the original sweep did), resample (the BigGAN paper: N(0, 1) '
           'with every |z| > t redrawn) or tfhub (t * normal truncated to [-2, 2], TF-Hub\'s) '
           '(default: %(default)s)')
  add('--interp_method', type=str, default='lerp', choices=sorted(INTERPOLATIONS),
      help='(new) How --sample_interps interpolates z and the class embedding: lerp (straight '
           'line, the original) or slerp (great circle) (default: %(default)s)')
  return parser


# ---------------------------------------------------------------------------------------------
# Lookups
# ---------------------------------------------------------------------------------------------

# Kept by name: the original README and users' code refer to these.
activation_dict = {'inplace_relu': nn.ReLU(inplace=True),
                   'relu': nn.ReLU(inplace=False),
                   'ir': nn.ReLU(inplace=True)}


# ---------------------------------------------------------------------------------------------
# Experiment names
# ---------------------------------------------------------------------------------------------


def name_from_config(config):
  """The original's experiment name, e.g. BigGAN_I128_hdf5_seed0_Gch96_..._hier_ema."""
  def when(condition, text):
    return text if condition else None
  c = config
  parts = [
      'Big%s' % c['which_train_fn'],
      c.get('dataset_tag') or c['dataset'],
      when(c['model'] != 'BigGAN', c['model']),
      'seed%d' % c['seed'],
      'Gch%d' % c['G_ch'],
      'Dch%d' % c['D_ch'],
      when(c['G_depth'] > 1, 'Gd%d' % c['G_depth']),
      when(c['D_depth'] > 1, 'Dd%d' % c['D_depth']),
      'bs%d' % c['batch_size'],
      when(c['G_fp16'], 'Gfp16'),
      when(c['D_fp16'], 'Dfp16'),
      when(c['num_D_steps'] > 1, 'nDs%d' % c['num_D_steps']),
      when(c['num_D_accumulations'] > 1, 'nDa%d' % c['num_D_accumulations']),
      when(c['num_G_accumulations'] > 1, 'nGa%d' % c['num_G_accumulations']),
      'Glr%2.1e' % c['G_lr'],
      'Dlr%2.1e' % c['D_lr'],
      when(c['G_B1'] != 0.0, 'GB%3.3f' % c['G_B1']),
      when(c['G_B2'] != 0.999, 'GBB%3.3f' % c['G_B2']),
      when(c['D_B1'] != 0.0, 'DB%3.3f' % c['D_B1']),
      when(c['D_B2'] != 0.999, 'DBB%3.3f' % c['D_B2']),
      'Gnl%s' % c['G_nl'],
      'Dnl%s' % c['D_nl'],
      'Ginit%s' % c['G_init'],
      'Dinit%s' % c['D_init'],
      when(c['G_param'] != 'SN', 'G%s' % c['G_param']),
      when(c['D_param'] != 'SN', 'D%s' % c['D_param']),
      when(c['G_attn'] != '0', 'Gattn%s' % c['G_attn']),
      when(c['D_attn'] != '0', 'Dattn%s' % c['D_attn']),
      when(c['G_ortho'] > 0.0, 'Gortho%2.1e' % c['G_ortho']),
      when(c['D_ortho'] > 0.0, 'Dortho%2.1e' % c['D_ortho']),
      when(c['norm_style'] != 'bn', c['norm_style']),
      when(c['cross_replica'], 'cr'),
      when(c['G_shared'], 'Gshared'),
      when(c['hier'], 'hier'),
      when(c['ema'], 'ema'),
      when(bool(c.get('DiffAugment')), 'DA%s' % '-'.join(
          part.strip() for part in str(c.get('DiffAugment')).split(',') if part.strip())),
      when(c.get('ada_target', 0) > 0, 'ADA%g' % c.get('ada_target', 0)),
      when(c.get('ada_p', 0) > 0, 'ADAp%g' % c.get('ada_p', 0)),
      when(c.get('LeCam', 0) > 0, 'LeCam%g' % c.get('LeCam', 0)),
      when(bool(c['name_suffix']), c['name_suffix']),
  ]
  name = '_'.join(part for part in parts if part is not None)
  return hashname(name) if c['hashname'] else name


_ADJECTIVES = ('amber', 'brave', 'calm', 'dusty', 'eager', 'fuzzy', 'gentle', 'hasty', 'icy',
               'jolly', 'keen', 'lucky', 'misty', 'noble', 'odd', 'plain', 'quiet', 'rapid',
               'shy', 'tidy', 'urban', 'vivid', 'witty', 'young', 'zesty', 'bold', 'crisp',
               'dark', 'fair', 'grand', 'humble', 'lofty')
_ANIMALS = ('aardvark', 'badger', 'camel', 'dingo', 'eagle', 'ferret', 'gecko', 'heron', 'ibis',
            'jackal', 'koala', 'lemur', 'marmot', 'newt', 'otter', 'puffin', 'quail', 'raven',
            'stoat', 'tapir', 'urchin', 'vole', 'walrus', 'yak', 'zebra', 'bison', 'crane',
            'dugong', 'egret', 'finch', 'gibbon', 'hyena')


def hashname(name):
  """A short readable name that depends only on `name` (the original used Python's salted hash,
  so the same config got a different name in every process)."""
  digest = int(hashlib.sha256(name.encode('utf-8')).hexdigest(), 16)
  adjective = _ADJECTIVES[digest % len(_ADJECTIVES)]
  animal = _ANIMALS[(digest // len(_ADJECTIVES)) % len(_ANIMALS)]
  return '%s_%s_%04d' % (adjective, animal, (digest // 1024) % 10000)


def update_config_roots(config):
  """--base_root overrides the four roots (data, weights, logs, samples) as in the original."""
  if config.get('base_root'):
    for key in ['weights', 'logs', 'samples', 'data']:
      config['%s_root' % key] = os.path.join(config['base_root'], key)
  return config


def prepare_root(config):
  """Create the output roots (the original's name); an unusable one is a UserError."""
  for key in ['weights_root', 'logs_root', 'samples_root']:
    what, instead = '--%s %s' % (key, config[key]), '--%s or --base_root' % key
    check_writable_folder(config[key], what, instead)
    if not os.path.exists(config[key]):
      print('Making directory %s for %s...' % (config[key], key))
    try:
      os.makedirs(config[key], exist_ok=True)
    except OSError as e:
      raise UserError('%s is not a writable folder (%s); choose another %s'
                      % (what, e.strerror or e, instead))


def check_writable_folder(folder, what, instead):
  """Refuse an output folder that cannot be created or written (a path under a regular file, a
  read-only disk) before any work whose output would go there. Creates nothing."""
  existing = os.path.abspath(folder or '.')
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
    raise UserError('%s is not a writable folder (%s is %s); choose another %s' % (
        what, existing, 'a file' if not os.path.isdir(existing) else 'read-only', instead))


# ---------------------------------------------------------------------------------------------
# Deriving and checking the config
# ---------------------------------------------------------------------------------------------


def load_model_module(name):
  """--model names a module next to train.py (BigGAN, BigGANdeep, or the user's own file)."""
  try:
    return importlib.import_module(name)
  except ModuleNotFoundError as e:
    if e.name != name:
      raise
    if name.endswith('.py'):
      raise UserError('--model %s: give the module name without .py, e.g. --model %s'
                      % (name, name[:-3]))
    raise UserError('unknown --model %s: there is no %s.py; use BigGAN or BigGANdeep' % (name, name))


def _check(condition, message):
  if not condition:
    raise UserError(message)


def check_config(config):
  """Refuse contradictory or impossible flags before any work starts."""
  for key in ['batch_size', 'num_D_steps', 'num_D_accumulations', 'num_G_accumulations',
              'G_ch', 'D_ch', 'dim_z', 'num_G_SVs', 'num_D_SVs', 'num_G_SV_itrs',
              'num_D_SV_itrs', 'G_depth', 'D_depth']:
    _check(config[key] >= 1, '--%s must be at least 1 (got %s)' % (key, config[key]))
  for key in ['G_batch_size', 'num_workers', 'num_iters', 'ema_start', 'num_save_copies']:
    _check(config[key] >= 0, '--%s must not be negative (got %s)' % (key, config[key]))
  for key in ['save_every', 'test_every']:
    _check(config[key] >= 1, '--%s must be at least 1 iteration (got %s)' % (key, config[key]))
  _check(config['num_best_copies'] >= 1, '--num_best_copies must be at least 1')
  for side in 'GD':  # Adam's own limits, said before it is built
    _check(config[side + '_lr'] >= 0, '--%s_lr must be a number >= 0 (got %s)'
           % (side, config[side + '_lr']))
    for beta in ('B1', 'B2'):
      value = config[side + '_' + beta]
      _check(0 <= value < 1, '--%s_%s is an Adam beta and must be in [0, 1) (got %s)'
             % (side, beta, value))
  _check(config['adam_eps'] >= 0, '--adam_eps must be a number >= 0 (got %s)' % config['adam_eps'])
  _check(not config['use_ema'] or config['ema'],
         '--use_ema samples with G_ema, which only exists with --ema: add --ema or drop --use_ema')
  for side in 'GD':
    _check(config[side + '_nl'] in activation_dict, '--%s_nl %s is unknown; use one of %s'
           % (side, config[side + '_nl'], ', '.join(activation_dict)))
    _check(config[side + '_init'] in ('ortho', 'N02', 'glorot', 'xavier'),
           '--%s_init %s is unknown; use ortho, N02, glorot or xavier'
           % (side, config[side + '_init']))
    for res in str(config[side + '_attn']).split('_'):
      _check(res.isdigit(), '--%s_attn %s must be resolutions joined by _, e.g. 32_64, or 0'
             % (side, config[side + '_attn']))
  import metrics
  metrics.check_config(config)  # --metrics, --which_best (any metric, its direction), KID sizes
  if config['which_train_fn'] != 'dummy':
    import train_fns
    train_fns.training_function(config['which_train_fn'])  # a UserError if there is none
  _check(config['pbar'] in ('mine', 'tqdm'), '--pbar must be mine or tqdm')
  _check(config['norm_style'].split('_')[0] in ('bn', 'in', 'ln', 'gn', 'nonorm'),
         '--norm_style %s is unknown; use bn, in, ln, gn or nonorm' % config['norm_style'])
  if config['norm_style'].startswith('gn_'):
    kind, _, number = config['norm_style'][3:].partition('_')
    _check(kind in ('grp', 'ch') and number.isdigit() and int(number) >= 1,
           '--norm_style %s is not a group norm style; use gn, gn_grp_GROUPS or gn_ch_CHANNELS '
           'with a whole number >= 1, e.g. gn_grp_8' % config['norm_style'])
  _check(not config['hier'] or config['G_shared'],
         '--hier concatenates z chunks to the shared embedding: add --G_shared')
  _check(config['ema_decay'] >= 0 and config['ema_decay'] <= 1, '--ema_decay must be in [0, 1]')
  _check(not config.get('G_tfhub') or config['model'] == 'BigGANdeep',
         '--G_tfhub is the TF-Hub variant of BigGAN-deep: use it with --model BigGANdeep')
  import augment
  augment.parse_policy(config.get('DiffAugment') or '')  # a UserError for an unknown op
  for key in ('ada_target', 'ada_p'):
    _check(0 <= config.get(key, 0) <= 1, '--%s must be in [0, 1] (got %s)' % (key, config.get(key)))
  _check(config.get('ada_interval', 1) >= 1, '--ada_interval must be at least 1 iteration')
  _check(config.get('ada_kimg', 1) > 0, '--ada_kimg must be positive (thousands of images)')
  _check(config.get('LeCam', 0) >= 0, '--LeCam must not be negative (0 is off)')
  _check(0 <= config.get('LeCam_decay', 0) < 1, '--LeCam_decay must be in [0, 1)')


def check_architecture(config, side, arch, training=False):
  """Flags the architecture table of G or D cannot honour: too short a hierarchical z, group
  counts that do not divide the channels, and in training attention at a resolution with no block
  (dropped without a word, though the experiment name says it: refused for a new run, a warning
  on --resume)."""
  stage = arch(config[side + '_ch'], config[side + '_attn'])[config['resolution']]
  labels = sorted(set(stage['resolution']))
  missing = [r for r in str(config[side + '_attn']).split('_') if r != '0'
             and int(r) not in labels]
  if missing and training:
    message = ('--%s_attn %s: %s at %d px has no block at %s px, so that attention would not '
               'exist though the experiment name says it; use some of %s joined by _, or 0'
               % (side, config[side + '_attn'], side, config['resolution'], ', '.join(missing),
                  ', '.join(str(r) for r in labels)))
    _check(config.get('resume'), message)
    print('warning: %s' % message, file=sys.stderr, flush=True)
  if side != 'G':
    return
  if config['hier'] and config['model'] == 'BigGAN':
    slots = len(stage['in_channels']) + 1
    _check(config['dim_z'] >= slots, '--hier splits z into %d chunks (the linear layer and %d '
           'blocks) at %d px, so --dim_z must be at least %d (got %d)'
           % (slots, slots - 1, config['resolution'], slots, config['dim_z']))
  style = config['norm_style']
  if style.startswith('gn'):
    channels = set(stage['in_channels'] + stage['out_channels'])
    if config['model'] == 'BigGANdeep':  # its blocks' bottlenecks
      channels |= {c // 4 for c in stage['in_channels']}
    number = int(style.split('_')[-1]) if style != 'gn' else 16
    groups = {c: (max(c // number, 1) if '_ch_' in style else number) for c in channels}
    bad = sorted(c for c in channels if c % groups[c])
    _check(not bad, '--norm_style %s: G\'s normalised layers of %s channels cannot be split into '
           '%s; use gn_grp_N or gn_ch_N with an N that divides %s' % (
               style, ', '.join(str(c) for c in bad),
               ('groups of %d channels' if '_ch_' in style else '%d groups') % number,
               ', '.join(str(c) for c in sorted(channels))))


def check_training(config):
  """train.py's own checks, before any work: flags that would fail only after training, or that
  would do nothing."""
  _check(config['num_epochs'] >= 1, '--num_epochs %d trains nothing (--num_iters stops at '
         'whichever comes first); give --num_epochs 1 or more' % config['num_epochs'])
  _check(not config['load_weights'] or config['resume'] or config['finetune_from'],
         '--load_weights %s loads a checkpoint only with --resume (or --finetune_from); add '
         '--resume to continue from it' % config['load_weights'])
  if config['resume'] and config['finetune_from']:
    print('Notice: --finetune_from %s is not used with --resume: this run continues from its own '
          'checkpoint' % config['finetune_from'])
  evaluates = not config['num_iters'] or config['num_iters'] >= config['test_every']
  if evaluates:
    check_inception_images(config, '; this run evaluates every --test_every %d iterations: raise '
                           'it, or set --test_every beyond --num_iters' % config['test_every'])


def check_inception_images(config, advice=''):
  """IS needs 2 images at least (and 0 gave a KeyError only once the images were drawn)."""
  _check(config['num_inception_images'] >= 2, '--num_inception_images must be at least 2 for '
         'IS/FID (got %d)%s' % (config['num_inception_images'], advice))


def prepare_config(config, training=False):
  """Everything train.py and sample.py derive from the flags, as the original's run() did:
  roots, resolution, n_classes, activations; then checks (with training, train.py's too). Returns
  the same dict."""
  import datasets
  config = update_config_roots(config)
  try:
    info = datasets.dataset_info(config['dataset'], config['data_root'],
                                 config.get('resolution', 0))
  except UserError:
    # A stored run's config (sample.py --config_from_name) describes its data: no need to have it.
    if not all(config.get(k) for k in ('n_classes', 'resolution', 'dataset_tag')):
      raise
    info = {'resolution': config['resolution'], 'n_classes': config['n_classes'],
            'tag': config['dataset_tag'], 'class_names': config.get('class_names'),
            'classes_per_sheet': config.get('classes_per_sheet') or min(config['n_classes'], 20)}
  config['resolution'] = info['resolution']
  config['n_classes'] = info['n_classes']
  config['dataset_tag'] = info['tag']
  config['class_names'] = info['class_names']
  config['classes_per_sheet'] = info['classes_per_sheet']
  config['G_activation'] = activation_dict.get(config['G_nl'])
  config['D_activation'] = activation_dict.get(config['D_nl'])
  check_config(config)
  model = load_model_module(config['model'])
  for arch, side in [(getattr(model, 'G_arch', None), 'G'), (getattr(model, 'D_arch', None), 'D')]:
    if arch is not None:
      _check(config['resolution'] in arch(), '%s has no %s architecture for resolution %d; '
             'available: %s' % (config['model'], side, config['resolution'],
                                ', '.join(str(r) for r in sorted(arch()))))
      check_architecture(config, side, arch, training)
  if training:
    check_training(config)
  old_fp16 = [f for f in ['G_fp16', 'D_fp16', 'G_mixed_precision', 'D_mixed_precision']
              if config.get(f)]
  if old_fp16 and config.get('amp', 'off') == 'off':
    print('Notice: --%s now means --amp fp16 (autocast with fp32 weights and a GradScaler); the '
          'original\'s pure-fp16 training collapsed.' % ' --'.join(old_fp16))
    config['amp'] = 'fp16'
  elif old_fp16 and config['amp'] != 'fp16':
    # Said out loud: a launch script that sets both would otherwise not train as it reads.
    print('Notice: --%s would mean --amp fp16, but --amp %s is given and decides: training in %s '
          'autocast.' % (' --'.join(old_fp16), config['amp'], config['amp']))
  if config.get('resume'):
    config['skip_init'] = True  # the weights are loaded anyway
  return config


# ---------------------------------------------------------------------------------------------
# Training helpers (the original's names and signatures)
# ---------------------------------------------------------------------------------------------


def seed_rng(seed):
  """Seed Python, numpy and torch (every device)."""
  random.seed(seed)
  np.random.seed(seed)
  torch.manual_seed(seed)


def toggle_grad(model, on_or_off):
  for param in model.parameters():
    param.requires_grad = on_or_off


def _ortho_grads(model, strength, blacklist, off_diagonal):
  with torch.no_grad():
    for param in model.parameters():
      if len(param.shape) < 2 or param.grad is None or any(param is b for b in blacklist):
        continue
      w = param.reshape(param.shape[0], -1)
      eye = torch.eye(w.shape[0], device=w.device, dtype=w.dtype)
      gram = torch.mm(w, w.t())
      gram = gram * (1. - eye) if off_diagonal else gram - eye
      param.grad.add_(strength * 2 * torch.mm(gram, w).reshape(param.shape))


def ortho(model, strength=1e-4, blacklist=[]):
  """BigGAN's ortho reg: add the gradient of (strength/2) ||W W^T * (1 - I)||_F^2 to every weight
  of 2+ dimensions (each flattened to (out, -1)) not in blacklist."""
  _ortho_grads(model, strength, blacklist, off_diagonal=True)


def default_ortho(model, strength=1e-4, blacklist=[]):
  """The classic ortho reg: the gradient of (strength/2) ||W W^T - I||_F^2."""
  _ortho_grads(model, strength, blacklist, off_diagonal=False)


class ema(object):
  """target = decay * target + (1 - decay) * source over every state_dict entry (weights and
  buffers), in one fused update per dtype; before start_itr the decay is 0 (a plain copy)."""

  def __init__(self, source, target, decay=0.9999, start_itr=0):
    self.source, self.target = source, target
    self.decay, self.start_itr = decay, start_itr
    self.source_dict = self.source.state_dict()
    self.target_dict = self.target.state_dict()
    print('Initializing EMA parameters to be source parameters...')
    with torch.no_grad():
      for key in self.source_dict:
        self.target_dict[key].copy_(self.source_dict[key])
    # Groups of (target, source) tensors that one foreach call can update.
    self.groups = {}
    for key in self.source_dict:
      t, s = self.target_dict[key], self.source_dict[key]
      self.groups.setdefault((t.dtype, t.device, t.is_floating_point()), ([], []))
      self.groups[(t.dtype, t.device, t.is_floating_point())][0].append(t)
      self.groups[(t.dtype, t.device, t.is_floating_point())][1].append(s)

  def update(self, itr=None):
    decay = 0.0 if (itr and itr < self.start_itr) else self.decay
    with torch.no_grad():
      for (_, _, floating), (targets, sources) in self.groups.items():
        if not floating or decay == 0.0:  # counters are copied, not averaged
          torch._foreach_copy_(targets, sources)
        else:
          torch._foreach_mul_(targets, decay)
          torch._foreach_add_(targets, sources, alpha=1 - decay)


def get_SVs(net, prefix):
  """{'<prefix>_<module_path>_sv<i>': value} of every SN layer's logged singular values."""
  return {('%s_%s' % (prefix, key)).replace('.', '_'): float(value.item())
          for key, value in net.state_dict().items() if key.split('.')[-1].startswith('sv')}


def write_metadata(logs_root, experiment_name, config, state_dict):
  """logs_root/<exp>/metalog.txt: when, with which config, from which state."""
  os.makedirs('%s/%s' % (logs_root, experiment_name), exist_ok=True)
  with open('%s/%s/metalog.txt' % (logs_root, experiment_name), 'w') as writefile:
    writefile.write('datetime: %s\n' % str(datetime.datetime.now()))
    writefile.write('config: %s\n' % str(config))
    writefile.write('state: %s\n' % str({k: v for k, v in state_dict.items() if k != 'config'}))


# ---------------------------------------------------------------------------------------------
# The original's small utilities, kept under their names for users' scripts
# ---------------------------------------------------------------------------------------------


def progress(items, desc='', total=None, min_delay=0.1, displaytype='s1k'):
  """The original's progress display for loops outside training (sampling, moments): yields the
  items and rewrites one line with the count, the elapsed time and either the time per 1000 items
  (displaytype 's1k') or the time left ('eta')."""
  from logger import format_seconds
  total = total if total is not None else len(items)
  start = last = time.time()
  done = 0
  for done, item in enumerate(items, 1):
    now = time.time()
    if now - last >= min_delay or done == 1:
      last = now
      elapsed = now - start
      per_item = elapsed / (done - 1) if done > 1 else 0.0
      shown = per_item * 1000 if displaytype == 's1k' else per_item * (total - done + 1)
      sys.stdout.write('\r%s%d/%d (%6.2f%%) (TE/%s: %s / %s)' % (
          desc, done, total, 100.0 * done / max(total, 1), 'ET1k' if displaytype == 's1k'
          else 'ETA', format_seconds(elapsed), format_seconds(shown)))
      sys.stdout.flush()
    yield item
  print('\r%s%d/%d (%6.2f%%) (TE: %s)' % (desc, done, total, 100.0 * done / max(total, 1),
                                          format_seconds(time.time() - start)))


def count_parameters(module):
  """Print and return the number of parameters (the original only printed it)."""
  count = sum(p.numel() for p in module.parameters())
  print('Number of parameters: {}'.format(count))
  return count


def initiate_standing_stats(net):
  """Reset every BN layer's statistics so that the following train-mode passes average theirs
  (sampling.accumulate_standing_stats does the whole procedure)."""
  import layers
  layers.begin_standing_stats(net)


def query_gpu(indices=None):
  """Print the free memory of the visible GPUs (the original shelled out to nvidia-smi, which
  fails without one); returns {index: (free_bytes, total_bytes)}, {} on a machine without CUDA."""
  if not torch.cuda.is_available():
    print('No CUDA GPU is visible; running on the CPU.')
    return {}
  if indices is None:
    indices = range(torch.cuda.device_count())
  elif isinstance(indices, int):
    indices = [indices]
  info = {}
  for index in indices:
    free, total = torch.cuda.mem_get_info(index)
    info[index] = (free, total)
    print('GPU %d (%s): %d MiB free of %d MiB' % (index, torch.cuda.get_device_name(index),
                                                 free // 2 ** 20, total // 2 ** 20))
  return info


def print_grad_norms(net):
  """Print '<grad norm>,<weight norm>, <name> <shape>' for each parameter with a gradient, in
  increasing gradient norm, to spot vanishing or exploding layers; returns the lines."""
  rows = [(float(p.grad.norm()), float(p.detach().norm()), name, tuple(p.shape))
          for name, p in net.named_parameters() if p.grad is not None]
  lines = ['%3.3e,%3.3e, %s %s' % row for row in sorted(rows, key=lambda row: row[0])]
  print(lines)
  return lines


class Adam16(torch.optim.Adam):
  """The original's Adam for pure-fp16 weights, which kept fp32 master copies of them. Weights
  are fp32 now (--G_fp16 / --D_fp16 mean --amp fp16), so this is plain Adam with the original's
  signature; fp16 parameters are refused, since Adam's small updates vanish in fp16."""

  def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
    super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if any(p.dtype == torch.float16 for group in self.param_groups for p in group['params']):
      raise UserError('Adam16 no longer trains fp16 weights: keep the model in fp32 and use '
                      '--amp fp16 (autocast with a GradScaler) instead')


class CenterCropLongEdge(object):
  """Torchvision-style transform: the largest centred square of a PIL image."""

  def __call__(self, img):
    return crop_long_edge(img)

  def __repr__(self):
    return self.__class__.__name__


class RandomCropLongEdge(object):
  """Torchvision-style transform: a random square of side min(width, height). Drawn from `rng`
  (a numpy Generator) or else the global numpy stream, so utils.seed_rng repeats it."""

  def __init__(self, rng=None):
    self.rng = rng

  def __call__(self, img):
    rng = self.rng if self.rng is not None else np.random.default_rng(np.random.randint(2 ** 31))
    return crop_long_edge(img, rng)

  def __repr__(self):
    return self.__class__.__name__


# The original exposed these from utils.py; they now live in their own modules.
from datasets import (MultiEpochSampler, classes_per_sheet_dict, crop_long_edge,  # noqa: E402,F401,E501
                      dset_dict, get_data_loaders, imsize_dict, nclass_dict, root_dict)
from sampling import (Distribution, accumulate_standing_stats, interp, interp_sheet,  # noqa: E402,F401,E501
                      prepare_z_y, sample, sample_1hot, sample_sheet)
from checkpoints import join_strings, load_weights, save_weights  # noqa: E402,F401
from logger import MetricsLogger, MyLogger  # noqa: E402,F401
