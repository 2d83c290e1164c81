"""The original's utils.py, kept as a compatibility surface: users' scripts and notebooks that call
utils.prepare_parser, utils.name_from_config, utils.ema, utils.sample_sheet, ... keep working.

Each name now lives where its concept does, and this project's own code imports it from there:

  config.py       prepare_parser, add_sample_parser, name_from_config, hashname,
                  update_config_roots, prepare_root, activation_dict
  datasets.py     get_data_loaders, MultiEpochSampler, CenterCropLongEdge, RandomCropLongEdge and
                  the lookups imsize_dict, nclass_dict, classes_per_sheet_dict, root_dict, dset_dict
  train_fns.py    ema, ortho, default_ortho, toggle_grad
  checkpoints.py  seed_rng, save_weights, load_weights, join_strings
  logger.py       MetricsLogger, MyLogger, write_metadata, progress
  sampling.py     prepare_z_y, Distribution, sample, sample_1hot, sample_sheet, interp,
                  interp_sheet, accumulate_standing_stats
  layers.py       initiate_standing_stats (layers.begin_standing_stats)

Only the original's small helpers with no better home are defined here: count_parameters,
query_gpu, print_grad_norms and Adam16. Nothing in the project imports this module.
"""
import torch

from checkpoints import join_strings, load_weights, save_weights, seed_rng
from config import (activation_dict, add_sample_parser, hashname, name_from_config,
                    prepare_parser, prepare_root, update_config_roots)
from datasets import (CenterCropLongEdge, MultiEpochSampler, RandomCropLongEdge,
                      classes_per_sheet_dict, dset_dict, get_data_loaders, imsize_dict,
                      nclass_dict, root_dict)
from errors import UserError
from layers import begin_standing_stats as initiate_standing_stats
from logger import MetricsLogger, MyLogger, progress, write_metadata
from sampling import (Distribution, accumulate_standing_stats, interp, interp_sheet, prepare_z_y,
                      sample, sample_1hot, sample_sheet)
from train_fns import default_ortho, ema, ortho, toggle_grad

__all__ = [
    'prepare_parser', 'add_sample_parser', 'name_from_config', 'hashname', 'update_config_roots',
    'prepare_root', 'activation_dict',
    'get_data_loaders', 'MultiEpochSampler', 'CenterCropLongEdge', 'RandomCropLongEdge',
    'imsize_dict', 'nclass_dict', 'classes_per_sheet_dict', 'root_dict', 'dset_dict',
    'ema', 'ortho', 'default_ortho', 'toggle_grad',
    'seed_rng', 'save_weights', 'load_weights', 'join_strings',
    'MetricsLogger', 'MyLogger', 'write_metadata', 'progress',
    'prepare_z_y', 'Distribution', 'sample', 'sample_1hot', 'sample_sheet', 'interp',
    'interp_sheet', 'accumulate_standing_stats', 'initiate_standing_stats',
    'count_parameters', 'query_gpu', 'print_grad_norms', 'Adam16',
]


# ---------------------------------------------------------------------------------------------
# The original's small helpers
# ---------------------------------------------------------------------------------------------


def count_parameters(module):
  """Print and return the number of parameters (the original only printed it)."""
  count = sum(p.numel() for p in module.parameters())
  print('Number of parameters: {}'.format(count))
  return count


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
