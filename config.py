"""The configuration: every flag, the experiment name, what is derived from the flags, and every
check of them, in one place.

    parser = config.prepare_parser()         # train.py's flags (sample.py: add_sample_parser)
    cfg = config.prepare_config(vars(parser.parse_args()), training=True)
    name = cfg['experiment_name'] or config.name_from_config(cfg)

Every flag of the original BigGAN-PyTorch keeps its name, dest, default and place in the parser, so
users' launch scripts run unchanged; flags this project adds say "(new)" first in their help.
--help appends each default (HelpFormatter). Where a flag picks a plug-in (an init, a loss, a
metric, an augmentation, a truncation mode, ...), its choices come from that plug-in's registry in
its own module. Bad values are errors.UserError with a one-line message, raised before any work.
The config flows as in the original: argparse -> vars() -> dict -> **config; utils.py re-exports
the original's names (utils.prepare_parser, utils.name_from_config, ...).
"""
import hashlib
import math
import os
import sys

import torch.nn as nn

import augment
import datasets
import errors
import Glow
import inception_utils
import layers
import losses
import metrics
import models
import sampling
import train_fns
from errors import UserError

# ---------------------------------------------------------------------------------------------
# Lookups and registries of the flags' values
# ---------------------------------------------------------------------------------------------

# The original's name (its README and users' code refer to it): --G_nl / --D_nl.
activation_dict = {'inplace_relu': nn.ReLU(inplace=True),
                   'relu': nn.ReLU(inplace=False),
                   'ir': nn.ReLU(inplace=True)}
PBARS = ('mine', 'tqdm')
AMP_MODES = ('off', 'bf16', 'fp16')
OLD_FP16_FLAGS = ('G_fp16', 'D_fp16', 'G_mixed_precision', 'D_mixed_precision')


HelpFormatter = errors.HelpFormatter  # where the scripts that need no config find it too


def _names(registry):
  return ', '.join(registry)


# ---------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------


def prepare_parser():
  """The parser shared by train.py, sample.py and the tools (the original's 90 flags + new ones)."""
  parser = errors.ArgumentParser(description='BigGAN training, sampling and evaluation.',
                                  formatter_class=HelpFormatter)
  add = parser.add_argument

  # --- Data -----------------------------------------------------------------------------------
  add('--dataset', type=str, default='I128_hdf5',
      help='Which data to train on: I32, I64, I128, I256, I512 (ImageNet class folders under '
           'data_root/ImageNet), the same with "_hdf5" (data_root/ILSVRC{res}.hdf5), C10, C100 '
           '(CIFAR under data_root/cifar), the built-in offline dataset "Shapes", or a PATH to '
           'an image folder with one subfolder per class or to an .hdf5 file made by make_hdf5.py')
  add('--resolution', type=int, default=0,
      help='(new) Image size for an image-folder PATH or the built-in dataset; 0 derives it from '
           'the dataset')
  add('--augment', action='store_true', default=False,
      help='Augment with random long-edge crops and horizontal flips')
  add('--num_workers', type=int, default=8,
      help='Number of data loader worker processes')
  add('--no_pin_memory', action='store_false', dest='pin_memory', default=True,
      help='Do not pin loaded batches in page-locked memory (default: pin)')
  add('--shuffle', action='store_true', default=False,
      help='Shuffle the data each epoch')
  add('--load_in_mem', action='store_true', default=False,
      help='Load the whole HDF5 dataset into RAM')
  add('--use_multiepoch_sampler', action='store_true', default=False,
      help='Use the multi-epoch sampler, which can restart mid-run at the exact data position')

  # --- Model ----------------------------------------------------------------------------------
  add('--model', type=str, default='BigGAN',
      help='Name of the model module: %s, or a module of your own next to train.py (see '
           'models.py)' % ' or '.join(models.FAMILIES))
  add('--G_param', type=str, default='SN',
      help='Parameterization of G\'s layers: SN (spectral norm) or anything else for plain '
           'layers')
  add('--D_param', type=str, default='SN',
      help='Parameterization of D\'s layers: SN (spectral norm) or anything else for plain '
           'layers')
  add('--G_ch', type=int, default=64,
      help='Channel multiplier of G')
  add('--D_ch', type=int, default=64,
      help='Channel multiplier of D')
  add('--G_depth', type=int, default=1,
      help='Residual blocks per stage in G (BigGANdeep)')
  add('--D_depth', type=int, default=1,
      help='Residual blocks per stage in D (BigGANdeep)')
  add('--D_thin', action='store_false', dest='D_wide', default=True,
      help='Use the SN-GAN "thin" D whose hidden width is the block input width (default: wide)')
  add('--G_shared', action='store_true', default=False,
      help='Use one shared class embedding in G, projected per BN layer')
  add('--shared_dim', type=int, default=0,
      help='Size of the shared embedding; 0 uses dim_z')
  add('--dim_z', type=int, default=128,
      help='Size of the noise vector z')
  add('--z_var', type=float, default=1.0,
      help='Standard deviation of z when sampling, z ~ N(0, z_var^2); the original\'s name, '
           'whose meaning it kept')
  add('--hier', action='store_true', default=False,
      help='Hierarchical z: split z into one chunk per G stage')
  add('--cross_replica', action='store_true', default=False,
      help='Batch-norm statistics over all processes in G (SyncBatchNorm semantics)')
  add('--mybn', action='store_true', default=False,
      help='Use the original\'s own BN with standing statistics in G')
  add('--G_nl', type=str, default='relu', choices=list(activation_dict),
      help='Activation in G (ir is inplace_relu)')
  add('--D_nl', type=str, default='relu', choices=list(activation_dict),
      help='Activation in D (ir is inplace_relu)')
  add('--G_attn', type=str, default='64',
      help='Resolutions with self-attention in G, underscore-separated; 0 for none')
  add('--D_attn', type=str, default='64',
      help='Resolutions with self-attention in D, underscore-separated; 0 for none')
  add('--norm_style', type=str, default='bn',
      help='Normalization in G\'s conditional BN: one of %s (bn batch, in instance, ln layer, gn '
           'group norm of 16 groups, also gn_grp_{groups} or gn_ch_{channels per group})'
           % _names(layers.NORM_STYLES))
  add('--G_tfhub', action='store_true', default=False,
      help='(new) BigGANdeep only: G as DeepMind\'s TF-Hub biggan-deep modules, whose weights '
           'TFHub/converter.py writes (output conv with G_ch channels of which the first 3 are '
           'RGB; BN statistics for 51 truncations, chosen by G.set_truncation)')
  add('--loss', type=str, default='hinge', choices=list(losses.LOSSES),
      help='(new) GAN loss: hinge (BigGAN) or dcgan (non-saturating)')

  # --- Initialization -------------------------------------------------------------------------
  add('--seed', type=int, default=0,
      help='Random seed for weights, noise and data order')
  add('--G_init', type=str, default='ortho', choices=layers.INIT_STYLES,
      help='Weight init of G\'s convs, linears and embeddings: orthogonal, N(0, 0.02) or '
           'Glorot (glorot and xavier are the same)')
  add('--D_init', type=str, default='ortho', choices=layers.INIT_STYLES,
      help='Weight init of D\'s convs, linears and embeddings: orthogonal, N(0, 0.02) or '
           'Glorot (glorot and xavier are the same)')
  add('--skip_init', action='store_true', default=False,
      help='Skip weight init, e.g. when the weights are loaded anyway')

  # --- Optimizers -----------------------------------------------------------------------------
  add('--G_lr', type=float, default=5e-5, help='Adam learning rate of G')
  add('--D_lr', type=float, default=2e-4, help='Adam learning rate of D')
  add('--G_B1', type=float, default=0.0, help='Adam beta1 of G')
  add('--D_B1', type=float, default=0.0, help='Adam beta1 of D')
  add('--G_B2', type=float, default=0.999, help='Adam beta2 of G')
  add('--D_B2', type=float, default=0.999, help='Adam beta2 of D')
  add('--adam_eps', type=float, default=1e-8, help='Adam epsilon')
  add('--fused_optim', action='store_true', default=False,
      help='(new) Adam\'s fused implementation (torch.optim.Adam(fused=True), CPU or CUDA): one '
           'kernel for all parameters instead of several per parameter tensor, which matters for '
           'small models; the same update up to float rounding. Also for --model Glow with '
           '--glow_optimizer adam')

  # --- Batches and steps ----------------------------------------------------------------------
  add('--batch_size', type=int, default=64,
      help='Batch size per D forward pass, per process')
  add('--G_batch_size', type=int, default=0,
      help='Batch size of G\'s step and of sampling: the larger of G_batch_size and batch_size, '
           'as in the original (so 0 and anything below batch_size give batch_size)')
  add('--num_G_accumulations', type=int, default=1,
      help='Gradient accumulations per G step')
  add('--num_D_steps', type=int, default=2,
      help='D steps per G step')
  add('--num_D_accumulations', type=int, default=1,
      help='Gradient accumulations per D step')
  add('--split_D', action='store_true', default=False,
      help='Run D separately on fake and real batches instead of on their concatenation')
  add('--reuse_fakes', action='store_true', default=False,
      help='(new) The G step scores the fakes of the last D step, generated once with '
           'gradients, instead of generating new ones: one G forward pass less per iteration, '
           'and G\'s graph is kept through that D step (more memory). Needs '
           '--num_D_accumulations 1 --num_G_accumulations 1, a G batch equal to --batch_size, '
           'and no --parallel (torchrun works). Adds "reuse" to the experiment name')
  add('--num_epochs', type=int, default=100,
      help='Number of epochs to train for')
  add('--num_iters', type=int, default=0,
      help='(new) Stop after this many iterations; 0 runs num_epochs')
  add('--max_minutes', type=float, default=0,
      help='(new) Stop cleanly after this many minutes of training iterations in this process '
           '(a checkpoint is saved, as on SIGTERM; --resume goes on), whichever of it, '
           '--num_iters and --num_epochs comes first: a fixed time budget, e.g. a demo or a '
           'cluster slot. 0: no limit')
  add('--parallel', action='store_true', default=False,
      help='Single-process multi-GPU with nn.DataParallel (kept for compatibility; prefer '
           'torchrun)')
  add('--G_fp16', action='store_true', default=False,
      help='Half precision in G; now mapped onto --amp fp16')
  add('--D_fp16', action='store_true', default=False,
      help='Half precision in D; now mapped onto --amp fp16')
  add('--G_mixed_precision', action='store_true', default=False,
      help='Mixed precision in G; now mapped onto --amp fp16')
  add('--D_mixed_precision', action='store_true', default=False,
      help='Mixed precision in D; now mapped onto --amp fp16')
  add('--accumulate_stats', action='store_true', default=False,
      help='Accumulate "standing" BN statistics before sampling/testing')
  add('--num_standing_accumulations', type=int, default=16,
      help='Forward passes used to accumulate standing statistics')

  # --- Bookkeeping ----------------------------------------------------------------------------
  add('--G_eval_mode', action='store_true', default=False,
      help='Sample and test with G in eval mode')
  add('--save_every', type=int, default=2000,
      help='Save a checkpoint every this many iterations')
  add('--num_save_copies', type=int, default=2,
      help='Rotating numbered checkpoint copies to keep')
  add('--num_best_copies', type=int, default=2,
      help='Rotating best-metric checkpoint copies to keep')
  add('--which_best', type=str, default='IS',
      help='Metric that decides "best" checkpoints: IS or FID, or (new) another of --metrics: '
           'KID, PR (its recall), DC (its coverage), IFID, or a value such as precision')
  add('--no_fid', action='store_true', default=False,
      help='Compute IS only, not FID')
  add('--test_every', type=int, default=5000,
      help='Compute IS/FID every this many iterations')
  add('--num_inception_images', type=int, default=50000,
      help='Number of generated images for IS/FID')
  add('--hashname', action='store_true', default=False,
      help='Name the experiment by a short deterministic hash of its config name')
  add('--base_root', type=str, default='',
      help='If set, root of data, weights, logs and samples, overriding the four roots')
  add('--data_root', type=str, default='data',
      help='Where the data lives')
  add('--weights_root', type=str, default='weights',
      help='Where checkpoints are written')
  add('--logs_root', type=str, default='logs',
      help='Where logs are written')
  add('--samples_root', type=str, default='samples',
      help='Where samples are written')
  add('--pbar', type=str, default='mine', choices=PBARS,
      help='Progress display: mine (compact, the original\'s) or tqdm')
  add('--name_suffix', type=str, default='',
      help='Suffix appended to the experiment name')
  add('--experiment_name', type=str, default='',
      help='Explicit experiment name instead of one derived from the config, e.g. to fine-tune '
           'into a new folder')
  add('--config_from_name', action='store_true', default=False,
      help='Take the config stored in the checkpoint instead of the flags')

  # --- EMA ------------------------------------------------------------------------------------
  add('--ema', action='store_true', default=False,
      help='Keep an exponential moving average of G (G_ema)')
  add('--ema_decay', type=float, default=0.9999,
      help='EMA decay')
  add('--use_ema', action='store_true', default=False,
      help='Sample and test with G_ema (needs --ema)')
  add('--ema_start', type=int, default=0,
      help='Iteration from which the EMA averages; before it G_ema copies G')

  # --- Numerics -------------------------------------------------------------------------------
  add('--BN_eps', type=float, default=1e-5, help='Batch-norm epsilon')
  add('--SN_eps', type=float, default=1e-8,
      help='Spectral-norm epsilon of the power iteration')
  add('--num_G_SVs', type=int, default=1,
      help='Singular values tracked per SN layer in G')
  add('--num_D_SVs', type=int, default=1,
      help='Singular values tracked per SN layer in D')
  add('--num_G_SV_itrs', type=int, default=1,
      help='Power iterations per forward pass in G')
  add('--num_D_SV_itrs', type=int, default=1,
      help='Power iterations per forward pass in D')

  # --- Orthogonal regularization --------------------------------------------------------------
  add('--G_ortho', type=float, default=0.0,
      help='Strength of BigGAN\'s off-diagonal ortho regularization in G; 1e-4 in the paper')
  add('--D_ortho', type=float, default=0.0,
      help='Strength of the off-diagonal ortho regularization in D')
  add('--toggle_grads', action='store_true', default=True,
      help='Freeze the network not being trained during each step (default: on; the original '
           'flag cannot turn it off, use --no_toggle_grads)')
  add('--no_toggle_grads', action='store_false', dest='toggle_grads',
      help='(new) Keep requires_grad on for both networks at every step')

  # --- Training function, resuming, runtime ---------------------------------------------------
  add('--which_train_fn', type=str, default='GAN',
      help='Training function: %s (dummy only moves the data, to time the loader), or '
           'module.function of your own with GAN_training_function\'s signature (see '
           'train_fns.py)' % _names(train_fns.TRAIN_FNS))
  add('--load_weights', type=str, default='',
      help='Checkpoint suffix to load, such as copy0 or best3; empty loads the plain files')
  add('--resume', action='store_true', default=False,
      help='Resume from the newest complete checkpoint of this experiment')
  add('--finetune_from', type=str, default='',
      help='(new) Start from the weights and optimizer states of experiment FINETUNE_FROM (under '
           'weights_root; its newest complete save, or --load_weights SUFFIX) at iteration 0, '
           'writing to this run\'s own experiment folder (name it with --experiment_name)')
  add('--device', type=str, default='auto',
      help='(new) Device: auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ...')
  add('--amp', type=str, default='off', choices=AMP_MODES,
      help='(new) Autocast precision for forward passes (weights, BN statistics, spectral norms '
           'and losses stay fp32); fp16 adds a GradScaler. On CPUs, bf16 is fast only with AMX '
           'or avx512_bf16 and emulated without them (train.py warns); README.md has the '
           'measured speeds')
  add('--channels_last', action='store_true', default=False,
      help='(new) Store the conv weights of G, D and G_ema in the channels_last memory format, '
           'so that GPU convolutions also run on channels_last activations (faster with --amp '
           'on tensor cores); on CPU the activations are channels_last anyway')
  add('--compile', action='store_true', default=False,
      help='(new) torch.compile the forward passes of G and D: faster iterations after minutes '
           'of compiling at the start (README.md has the measured speeds)')
  add('--inception_net', type=str, default='torchvision', choices=inception_utils.NETWORKS,
      help='(new) Network for IS/FID: torchvision (the original\'s monitor) or tf (the TF '
           '2015-12-05 graph used by the papers, ported)')
  add('--inception_weights', type=str, default='',
      help='(new) Weights file for the Inception network, for machines without internet')
  # Metrics (metrics.py): one Inception pass feeds all of them.
  add('--metrics', type=str, default=metrics.DEFAULT_METRICS,
      help='(new) Metrics, comma-separated, of %s: KID is the kernel inception distance, PR '
           'precision and recall, DC density and coverage, IFID the intra-class FID. train.py and '
           'sample.py always compute IS (the log\'s first keys) and drop FID with --no_fid; the '
           'metrics beyond IS and FID read a cache of the dataset\'s features that '
           'calculate_inception_moments.py --metrics makes' % _names(metrics.METRICS))
  add('--kid_subsets', type=int, default=100,
      help='(new) KID: number of random subset pairs averaged')
  add('--kid_subset_size', type=int, default=1000,
      help='(new) KID: images per subset, at most the images of each set')
  add('--inception_resize', type=str, default='auto',
      choices=('auto',) + inception_utils.RESIZE_POLICIES,
      help='(new) How images are resized to the 299 px Inception input: auto (the network\'s '
           'own: tf for --inception_net tf, torch for torchvision), tf (TF 1.x bilinear), torch '
           '(PyTorch bilinear, align_corners, the original monitor\'s) or clean (clean-fid\'s '
           'PIL bicubic on uint8 images)')
  add('--tensorboard', action='store_true', default=False,
      help='(new) Mirror scalars and samples to TensorBoard under logs_root/<exp>/tb')

  # --- Small data: augmentation and regularisation of D (augment.py) --------------------------
  add('--DiffAugment', type=str, default='',
      help='(new) DiffAugment policy: a comma list of %s, applied to every image D sees, real '
           'and fake (Zhao et al. 2020)' % _names(augment.POLICIES))
  add('--ada_target', type=float, default=0.0,
      help='(new) Adaptive augmentation (ADA, Karras et al. 2020): steer the probability p of '
           'its pipeline so that E[sign(D(real))] stays at this target, e.g. 0.6; 0 is off')
  add('--ada_p', type=float, default=0.0,
      help='(new) ADA\'s starting p; with --ada_target 0 a fixed p')
  add('--ada_interval', type=int, default=4,
      help='(new) Iterations between adjustments of ADA\'s p')
  add('--ada_kimg', type=float, default=500.0,
      help='(new) Speed of ADA\'s p: thousands of real images D sees for p to go from 0 to 1')
  add('--LeCam', type=float, default=0.0,
      help='(new) Weight of the LeCam regulariser of D (Tseng et al. 2021), e.g. 0.3; 0 is off')
  add('--LeCam_decay', type=float, default=0.99,
      help='(new) Decay of the moving averages of D\'s outputs that LeCam uses as anchors')
  add('--AC_weight', type=float, default=0.0,
      help='(new) Weight of an auxiliary classifier on D\'s features (AC-GAN, Odena et al. '
           '2017) beside the projection: D learns the classes of real images by cross-entropy, '
           'G to make its samples classified as their class; a direct class signal that '
           'teaches small models the classes faster; 0 is off')
  add('--AC_type', type=str, default='ac', choices=['ac', 'adc'],
      help='(new) The auxiliary classifier of --AC_weight: ac, the AC-GAN classifier of real '
           'images\' classes; adc, ADC-GAN\'s (Hou et al. 2022): 2 x n_classes outputs, D learns '
           'real class c as 2c and fakes of class c as 2c + 1, and G makes its fakes look like '
           'real ones of their class, so G cannot satisfy the classifier with features D knows '
           'as fake')

  # --- Logging --------------------------------------------------------------------------------
  add('--logstyle', type=str, default='%3.3e',
      help='Format of values in the per-metric .log files, e.g. %%3.3e or %%3.3f')
  add('--log_G_spectra', action='store_true', default=False,
      help='Log the singular values of G\'s SN layers')
  add('--log_D_spectra', action='store_true', default=False,
      help='Log the singular values of D\'s SN layers')
  add('--sv_log_interval', type=int, default=10,
      help='Iterations between singular-value logs')
  Glow.add_glow_flags(parser)  # --model Glow: glow_* flags, n_bits_x, temperature
  return parser


def add_sample_parser(parser):
  """Flags of sample.py, added to the shared parser."""
  add = parser.add_argument
  add('--sample_npz', action='store_true', default=False,
      help='Sample sample_num_npz images into an .npz file of uint8 images')
  add('--sample_num_npz', type=int, default=50000,
      help='Number of images for --sample_npz')
  add('--sample_sheets', action='store_true', default=False,
      help='Write class-conditional sample sheets')
  add('--sample_interps', action='store_true', default=False,
      help='Write interpolation sheets')
  add('--sample_sheet_folder_num', type=int, default=-1,
      help='Folder number for the sheets; -1 uses the iteration')
  add('--sample_random', action='store_true', default=False,
      help='Write one sheet of random samples')
  add('--sample_trunc_curves', type=str, default='',
      help='Truncation sweep "start_step_end", e.g. 0.05_0.05_1.0: IS/FID per truncation')
  add('--sample_inception_metrics', action='store_true', default=False,
      help='Compute IS/FID of the loaded G')
  add('--sample_shapes_accuracy', action='store_true', default=False,
      help='(new) Class accuracy of the loaded G on the Shapes classes: the share of 100 samples '
           'per class that a small classifier, trained on real Shapes images and cached in '
           'data_root, labels with the class they were drawn for (shapes_classifier.py)')
  add('--truncation', type=float, default=None,
      help='(new) Truncation threshold t >= 0 of z for every sample.py mode, in the sense of '
           '--truncation_mode; a TF-Hub biggan-deep G also switches to its BN statistics for t '
           '(default: none, z ~ N(0, z_var^2))')
  add('--truncation_mode', type=str, default='z_var', choices=sampling.TRUNCATION_MODES,
      help='(new) Meaning of --truncation and of the --sample_trunc_curves values: z_var '
           '(z ~ N(0, t^2), what the original sweep did), resample (the BigGAN paper: N(0, 1) '
           'with every |z| > t redrawn) or tfhub (t * normal truncated to [-2, 2], TF-Hub\'s)')
  add('--interp_method', type=str, default='lerp', choices=sorted(sampling.INTERPOLATIONS),
      help='(new) How --sample_interps interpolates z and the class embedding: lerp (straight '
           'line, the original) or slerp (great circle)')
  Glow.add_glow_sample_flags(parser)  # --model Glow: --encode, --glow_manipulate, ...
  return parser




# ---------------------------------------------------------------------------------------------
# Experiment names
# ---------------------------------------------------------------------------------------------


def name_from_config(config):
  """The original's experiment name, e.g. BigGAN_I128_hdf5_seed0_Gch96_..._hier_ema."""
  def when(condition, text):
    return text if condition else None
  c = config
  if c['model'] == 'Glow':  # its own parts: levels, depth, hidden, ...
    name = '_'.join(Glow.name_parts(c))
    return hashname(name) if c['hashname'] else name
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
      when(c.get('AC_weight', 0) > 0, '%s%g' % ('ADC' if c.get('AC_type', 'ac') == 'adc' else 'AC',
                                                 c.get('AC_weight', 0))),
      when(c.get('reuse_fakes', False), 'reuse'),
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


def _check(condition, message):
  if not condition:
    raise UserError(message)


def check_reuse_fakes(config):
  """--reuse_fakes: the G step takes the last D step's one micro-batch of fakes."""
  if not config.get('reuse_fakes'):
    return
  for key in ('num_D_accumulations', 'num_G_accumulations'):
    _check(config[key] == 1, '--reuse_fakes needs --%s 1 (got %d): the G step reuses one batch '
           'of fakes; drop --reuse_fakes to accumulate' % (key, config[key]))
  _check(config['G_batch_size'] <= config['batch_size'], '--reuse_fakes needs G\'s batch to be '
         '--batch_size (got --G_batch_size %d > %d): drop --G_batch_size or --reuse_fakes'
         % (config['G_batch_size'], config['batch_size']))
  _check(not config['parallel'], '--reuse_fakes does not work with --parallel (nn.DataParallel '
         'keeps no fakes between the steps): use torchrun, or drop --reuse_fakes')


def check_config(config):
  """Refuse contradictory or impossible flags before any work starts."""
  Glow.check_flags(config)  # Glow's flags, and the flags of one family given to the other
  for key in ['batch_size', 'num_D_steps', 'num_D_accumulations', 'num_G_accumulations',
              'G_ch', 'D_ch', 'dim_z', 'num_G_SVs', 'num_D_SVs', 'num_G_SV_itrs',
              'num_D_SV_itrs', 'G_depth', 'D_depth']:
    _check(config[key] >= 1, '--%s must be at least 1 (got %s)' % (key, config[key]))
  for key in ['G_batch_size', 'num_workers', 'num_iters', 'ema_start', 'num_save_copies',
              'max_minutes']:
    _check(config[key] >= 0, '--%s must not be negative (got %s)' % (key, config[key]))
  for key in ['save_every', 'test_every']:
    _check(config[key] >= 1, '--%s must be at least 1 iteration (got %s)' % (key, config[key]))
  _check(config['num_best_copies'] >= 1, '--num_best_copies must be at least 1')
  check_reuse_fakes(config)
  check_optimizers(config)
  _check(not config['use_ema'] or config['ema'],
         '--use_ema samples with G_ema, which only exists with --ema: add --ema or drop --use_ema')
  for side in 'GD':
    _check(config[side + '_nl'] in activation_dict, '--%s_nl %s is unknown; use one of %s'
           % (side, config[side + '_nl'], _names(activation_dict)))
    _check(config[side + '_init'] in layers.INIT_STYLES, '--%s_init %s is unknown; use one of %s'
           % (side, config[side + '_init'], _names(layers.INIT_STYLES)))
    for res in str(config[side + '_attn']).split('_'):
      _check(res.isdigit(), '--%s_attn %s must be resolutions joined by _, e.g. 32_64, or 0'
             % (side, config[side + '_attn']))
  check_metrics(config)
  if config['which_train_fn'] not in train_fns.TRAIN_FNS:
    train_fns.training_function(config['which_train_fn'])  # module.function: a UserError if none
  _check(config['pbar'] in PBARS, '--pbar must be %s' % ' or '.join(PBARS))
  check_norm_style(config)
  _check(not config['hier'] or config['G_shared'],
         '--hier concatenates z chunks to the shared embedding: add --G_shared')
  _check(config['ema_decay'] >= 0 and config['ema_decay'] <= 1, '--ema_decay must be in [0, 1]')
  _check(not config.get('G_tfhub') or config['model'] == 'BigGANdeep',
         '--G_tfhub is the TF-Hub variant of BigGAN-deep: use it with --model BigGANdeep')
  _check(not config.get('G_tfhub') or not (config['cross_replica'] or config['mybn']
                                           or config['norm_style'] != 'bn'),
         '--G_tfhub keeps TF-Hub\'s BN statistics: it needs plain BN (drop --mybn, '
         '--cross_replica and --norm_style)')
  check_small_data(config)


def check_optimizers(config):
  """Adam's own limits, said before it is built."""
  for side in 'GD':
    _check(config[side + '_lr'] >= 0, '--%s_lr must be a number >= 0 (got %s)'
           % (side, config[side + '_lr']))
    for beta in ('B1', 'B2'):
      value = config[side + '_' + beta]
      _check(0 <= value < 1, '--%s_%s is an Adam beta and must be in [0, 1) (got %s)'
             % (side, beta, value))
  _check(config['adam_eps'] >= 0, '--adam_eps must be a number >= 0 (got %s)' % config['adam_eps'])


def check_norm_style(config):
  """--norm_style: a name of layers.NORM_STYLES, or gn_grp_N / gn_ch_N."""
  style = config['norm_style']
  _check(style.split('_')[0] in layers.NORM_STYLES, '--norm_style %s is unknown; use %s'
         % (style, _names(layers.NORM_STYLES)))
  if style.startswith('gn_'):
    kind, _, number = style[3:].partition('_')
    _check(kind in ('grp', 'ch') and number.isdigit() and int(number) >= 1,
           '--norm_style %s is not a group norm style; use gn, gn_grp_GROUPS or gn_ch_CHANNELS '
           'with a whole number >= 1, e.g. gn_grp_8' % style)


def check_metrics(config):
  """--metrics, --which_best (any metric, in its direction), KID sizes, --inception_resize."""
  names = metrics.monitored(config)
  _check(config['which_best'] != 'FID' or not config['no_fid'],
         '--which_best FID needs FID: drop --no_fid or use --which_best IS')
  if config['which_best'] == 'test_bpd':  # Glow's held-out bits/dim (Glow.check_flags)
    check_metric_options(config)
    return names
  key = metrics.best_metric(config['which_best'])[0]
  _check(key in metrics.value_keys(names), '--which_best %s needs %s among --metrics %s: add it, '
         'or choose --which_best among %s' % (config['which_best'], key, config.get('metrics'),
                                               _names(names)))
  check_metric_options(config)
  return names


def check_metric_options(config):
  """--kid_subsets, --kid_subset_size and --inception_resize."""
  for flag, least in (('kid_subsets', 1), ('kid_subset_size', 2)):
    _check(config.get(flag, least) >= least, '--%s must be at least %d (got %d)'
           % (flag, least, config.get(flag, least)))
  inception_utils.resize_policy(config.get('inception_net', 'torchvision'),
                                config.get('inception_resize', 'auto'))


def check_small_data(config):
  """--DiffAugment, ADA and LeCam (augment.py)."""
  augment.parse_policy(config.get('DiffAugment') or '')  # a UserError for an unknown op
  for key in ('ada_target', 'ada_p'):
    _check(0 <= config.get(key, 0) <= 1, '--%s must be in [0, 1] (got %s)' % (key, config.get(key)))
  _check(config.get('ada_interval', 1) >= 1, '--ada_interval must be at least 1 iteration')
  _check(config.get('ada_kimg', 1) > 0, '--ada_kimg must be positive (thousands of images)')
  _check(config.get('LeCam', 0) >= 0, '--LeCam must not be negative (0 is off)')
  _check(0 <= config.get('LeCam_decay', 0) < 1, '--LeCam_decay must be in [0, 1)')
  _check(config.get('AC_weight', 0) >= 0, '--AC_weight must not be negative (0 is off)')
  _check(config.get('AC_type', 'ac') == 'ac' or config.get('AC_weight', 0) > 0,
         '--AC_type %s sets the auxiliary classifier of --AC_weight, which is 0 (off): add '
         '--AC_weight 1' % config.get('AC_type'))


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


def check_distributed(config, ctx):
  """Flags that torchrun (DDP) cannot honour; --parallel gives way to DDP with a notice."""
  if not ctx.distributed:
    return
  if config['parallel']:
    print('Notice: --parallel (nn.DataParallel) is off under torchrun; DDP is used instead.')
    config['parallel'] = False
  _check(not config['split_D'], '--split_D runs D twice per backward pass, which DDP cannot '
         'synchronise; drop --split_D under torchrun')


SAMPLE_MODES = ('sample_npz', 'sample_sheets', 'sample_interps', 'sample_random',
                'sample_inception_metrics', 'sample_trunc_curves', 'sample_shapes_accuracy')
# The modes that write under --samples_root.
SAMPLE_WRITERS = ('sample_npz', 'sample_sheets', 'sample_interps', 'sample_random',
                  'sample_trunc_curves')
MAX_TRUNCATIONS = 1000  # each one a full IS/FID evaluation


def check_sampling(config):
  """sample.py's own checks, before G is built; returns the --sample_trunc_curves values."""
  if not any(config[k] for k in SAMPLE_MODES):
    print('warning: no sampling mode was given, so sample.py only loads G; add one or more of --%s'
          % ', --'.join(SAMPLE_MODES), file=sys.stderr, flush=True)
  _check(not config['sample_npz'] or config['sample_num_npz'] >= 1,
         '--sample_num_npz must be at least 1 (got %d)' % config['sample_num_npz'])
  values = truncation_values(config['sample_trunc_curves']) if config['sample_trunc_curves'] else []
  if config['sample_inception_metrics'] or values:
    check_inception_images(config)
  if any(config[k] for k in SAMPLE_WRITERS):  # an unusable folder fails now, not later
    root = config['samples_root']
    check_writable_folder(root, '--samples_root %s' % root, '--samples_root or --base_root')
  return values


def truncation_values(spec):
  """'start_step_end' -> [start, start + step, ..., end] (the original's np.arange(start,
  end + step, step), without its float drift such as 0.6000000000000001); at most
  MAX_TRUNCATIONS values, all finite."""
  try:
    start, step, end = [float(v) for v in spec.split('_')]
  except ValueError:
    raise UserError('--sample_trunc_curves %s must be start_step_end, e.g. 0.05_0.05_1.0' % spec)
  _check(all(math.isfinite(v) for v in (start, step, end)), '--sample_trunc_curves %s: start, '
         'step and end must be finite numbers, e.g. 0.05_0.05_1.0' % spec)
  _check(step > 0 and end >= start, '--sample_trunc_curves %s: step must be positive and end >= '
         'start, e.g. 0.05_0.05_1.0' % spec)
  count = int(math.floor((end - start) / step + 1e-9)) + 1
  _check(count <= MAX_TRUNCATIONS, '--sample_trunc_curves %s gives %d truncations, each a full '
         'IS/FID evaluation; at most %d: use a larger step' % (spec, count, MAX_TRUNCATIONS))
  return [round(start + i * step, 10) for i in range(count)]


def check_evaluation(config):
  """evaluate.py's own checks, before any image is read; returns the metric names."""
  names = metrics.parse_metrics(config['metrics'])
  check_metric_options(config)
  for flag in ('num_images', 'ref_num_images'):
    _check(config[flag] >= 0, '--%s must not be negative (got %d)' % (flag, config[flag]))
  _check(config['ref'] or not metrics.consumes(names, ref=True), '%s compare SOURCE with '
         'reference images: add --ref REF (a folder, .npz, .hdf5, dataset name or weights '
         'folder), or ask for IS alone' % ','.join(n for n in names if n != 'IS'))
  if config['json']:
    check_writable_folder(os.path.dirname(config['json']) or '.', '--json %s' % config['json'],
                          '--json')
  return names


# ---------------------------------------------------------------------------------------------
# Deriving the config
# ---------------------------------------------------------------------------------------------


def prepare_config(config, training=False):
  """Everything train.py and sample.py derive from the flags, as the original's run() did:
  roots, resolution, n_classes, activations; then checks (with training, train.py's too). Returns
  the same dict."""
  config = update_config_roots(config)
  config.update(data_facts(config))
  config['G_activation'] = activation_dict.get(config['G_nl'])
  config['D_activation'] = activation_dict.get(config['D_nl'])
  check_config(config)
  model = models.load_model_module(config['model'])
  for arch, side in [(getattr(model, 'G_arch', None), 'G'), (getattr(model, 'D_arch', None), 'D')]:
    if arch is not None:
      _check(config['resolution'] in arch(), '%s has no %s architecture for resolution %d; '
             'available: %s' % (config['model'], side, config['resolution'],
                                ', '.join(str(r) for r in sorted(arch()))))
      check_architecture(config, side, arch, training)
  if training:
    check_training(config)
  map_old_fp16_flags(config)
  if config.get('resume'):
    config['skip_init'] = True  # the weights are loaded anyway
  return config


def data_facts(config):
  """resolution, n_classes, dataset_tag, class_names and classes_per_sheet of --dataset."""
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
  return {'resolution': info['resolution'], 'n_classes': info['n_classes'],
          'dataset_tag': info['tag'], 'class_names': info['class_names'],
          'classes_per_sheet': info['classes_per_sheet']}


def map_old_fp16_flags(config):
  """The original's --G_fp16 / --D_fp16 / --*_mixed_precision mean --amp fp16 now, said aloud."""
  old_fp16 = [f for f in OLD_FP16_FLAGS if config.get(f)]
  if old_fp16 and config.get('amp', 'off') == 'off':
    print('Notice: --%s now means --amp fp16 (autocast with fp32 weights and a GradScaler); the '
          'original\'s pure-fp16 training collapsed.' % ' --'.join(old_fp16))
    config['amp'] = 'fp16'
  elif old_fp16 and config['amp'] != 'fp16':
    # Said out loud: a launch script that sets both would otherwise not train as it reads.
    print('Notice: --%s would mean --amp fp16, but --amp %s is given and decides: training in %s '
          'autocast.' % (' --'.join(old_fp16), config['amp'], config['amp']))
