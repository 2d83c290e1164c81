"""Sample from a trained BigGAN: an .npz of images, class and interpolation sheets, random samples,
IS/FID, and IS/FID against truncation. The original sample.py's flags and files, plus truncation
with explicit semantics.

    python sample.py [the run's train.py flags] --sample_npz --sample_sheets --sample_random
    python sample.py --experiment_name EXP --config_from_name --sample_interps --interp_method slerp
    python sample.py --experiment_name EXP --config_from_name --sample_trunc_curves 0.1_0.1_1.0 \\
        --truncation_mode resample --accumulate_stats     # IS/FID against truncation
    python sample.py --experiment_name biggan-deep-256 --config_from_name \\
        --truncation 0.4 --truncation_mode tfhub --sample_sheets    # a TFHub/converter.py folder
    bash scripts/sample_BigGAN_bs256x8.sh

Reads weights_root/<exp>/G{_suffix}.pth (G_ema with --use_ema; --load_weights SUFFIX) and
state_dict{_suffix}.pth, as train.py, the original or TFHub/converter.py wrote them. Writes to
samples_root/<exp>/:
  samples.npz                --sample_npz: x (N, 3, H, W) uint8 (rounded), y (N,) labels
  <folder>/samples{i}.jpg    --sample_sheets: a row per class, labelled with the class names
                             when the dataset has them
  <folder>/interp{ZY,Y,Z}0   --sample_interps (z and class, class only, z only), .jpg
  random_samples.jpg         --sample_random: G_batch_size images
  truncation_curve_<mode>    --sample_trunc_curves start_step_end: .csv with the header
                             truncation,IS_mean,IS_std,FID (FID empty with --no_fid), and .png
                             (skipped, with a notice up front, without matplotlib)
where <folder> is --sample_sheet_folder_num, or the checkpoint's iteration for -1. IS/FID
(--sample_inception_metrics, --sample_trunc_curves) are printed with what they were measured on;
only they need the Inception weights and (unless --no_fid) the dataset's moments file.

--truncation t draws z for every mode by --truncation_mode: z_var (N(0, t^2), the original sweep's
meaning and the default), resample (the BigGAN paper: N(0, 1) with |z| > t redrawn) or tfhub
(t * normal truncated to [-2, 2]). Standing statistics (--accumulate_stats) are accumulated with
the z they serve, per sweep value (the original used N(0, 1) for all). A G with statistics per
truncation (TF-Hub biggan-deep) is switched to those of t.

--config_from_name rebuilds G from the config in state_dict.pth. As in the original, z_var,
base_root, batch_size, G_batch_size, use_ema and G_eval_mode stay the command line's; so do now
the roots, experiment_name, load_weights and device (where this run looks and writes), sample.py's
own flags, and every flag given explicitly on the command line. A TF-Hub conversion samples with
G in eval mode even without --G_eval_mode (its BN statistics are the converted ones).

A Glow run (--model Glow, glow_fns.sample_modes) samples at --temperature instead of truncation;
--sample_interps also writes interp0.jpg (between samples) and, with --encode, interp_real0.jpg
(between real images of --encode_images), --glow_manipulate A,B writes manipulate_A_minus_B.jpg,
and with --sample_npz each of them also goes to an .npz next to samples.npz.
"""
import argparse
import csv
import functools
import math
import os

import numpy as np
import torch
from tqdm import trange

import checkpoints
import config as configuration
import distributed
import Glow
import glow_fns
import inception_utils
import metrics as image_metrics
import sampling
import shapes_classifier
from errors import UserError, run_main

# With --config_from_name these stay the command line's: the original's list ...
ORIGINAL_OWN = ('z_var', 'base_root', 'batch_size', 'G_batch_size', 'use_ema', 'G_eval_mode')
# ... and where this run finds the checkpoint and writes (the original took the stored roots,
# which fails for a moved or converted folder).
LOCATION = ('weights_root', 'logs_root', 'samples_root', 'data_root', 'experiment_name',
            'load_weights', 'config_from_name', 'device')
CURVE_FIELDS = ('truncation', 'IS_mean', 'IS_std', 'FID')


def prepare_parser():
  return configuration.add_sample_parser(configuration.prepare_parser())


def given_flags(argv=None):
  """The dests of the flags written on the command line."""
  parser = prepare_parser()
  for action in parser._actions:
    action.default = argparse.SUPPRESS
  return set(vars(parser.parse_args(argv)))


def sample_flags():
  return set(vars(configuration.add_sample_parser(argparse.ArgumentParser()).parse_args([])))


# ---------------------------------------------------------------------------------------------
# Config and weights
# ---------------------------------------------------------------------------------------------


def config_from_checkpoint(config, given=()):
  """--config_from_name: replace the flags by the run's stored config (see the module doc)."""
  if not config['experiment_name']:
    raise UserError('--config_from_name reads the config of an existing run: name it with '
                    '--experiment_name (its folder under --weights_root)')
  state = {'config': None}
  saved = checkpoints.load_weights(None, None, state, config['weights_root'],
                                   config['experiment_name'], config['load_weights'] or None, None,
                                   strict=False, load_optim=False)
  if not isinstance(state['config'], dict):
    raise UserError('%s/%s has no config in its state_dict.pth; pass the flags of the run '
                    'instead of --config_from_name' % (config['weights_root'],
                                                       config['experiment_name']))
  own = set(ORIGINAL_OWN) | set(LOCATION) | sample_flags() | set(given)
  for key, value in state['config'].items():
    if key not in own:
      config[key] = value
  # A TF-Hub conversion's BN statistics are eval-mode statistics (per truncation for deep):
  # G in training mode would replace them by batch statistics, so eval mode is its default.
  if is_tfhub_conversion(saved, state['config']) and 'G_eval_mode' not in given:
    if not config['G_eval_mode']:
      print('Notice: %s/%s is a TF-Hub conversion; sampling with G in eval mode, on its '
            'converted BN statistics (as with --G_eval_mode).' % (config['weights_root'],
                                                                  config['experiment_name']))
    config['G_eval_mode'] = True
  return config


def is_tfhub_conversion(saved, stored_config):
  """Whether TFHub/converter.py wrote this state_dict.pth (it records tfhub_module; a G_tfhub
  config is one too)."""
  return bool(saved.get('tfhub_module') or stored_config.get('G_tfhub'))


def load_G(G, config, experiment_name):
  """Load G's weights (G_ema.pth with --use_ema, else G.pth; a folder holding only the other
  one, such as a TF-Hub conversion, serves with a notice). Returns (state_dict, file name)."""
  root = '%s/%s' % (config['weights_root'], experiment_name)
  suffix = config['load_weights'] or None
  checkpoints.recover(root)
  names = ['G_ema', 'G'] if config['use_ema'] else ['G', 'G_ema']
  found = [n for n in names if os.path.exists(checkpoints.file_path(root, n, suffix))]
  name = found[0] if found else names[0]
  if name != names[0]:
    print('Notice: %s has no %s; sampling with %s instead.' % (
        root, os.path.basename(checkpoints.file_path(root, names[0], suffix)), name))
  state_dict = checkpoints.initial_state(config)
  checkpoints.load_weights(G if name == 'G' else None, None, state_dict, config['weights_root'],
                           experiment_name, suffix, G if name == 'G_ema' else None, strict=False,
                           load_optim=False)
  return state_dict, os.path.basename(checkpoints.file_path(root, name, suffix))


# ---------------------------------------------------------------------------------------------
# Truncation
# ---------------------------------------------------------------------------------------------


def check_truncations(G, values):
  """Refuse truncations that cannot be used, before anything is written."""
  for t in values:
    if not 0 <= t < math.inf:
      raise UserError('truncation %s is %s; truncations are thresholds >= 0' % (
          t, 'negative' if t < 0 else 'not a finite number'))
  if not hasattr(G, 'set_truncation') or not values:
    return
  saved = {name: b.clone() for name, b in G.named_buffers()}
  try:
    for t in values:
      G.set_truncation(t)
  except ValueError as e:
    raise UserError('%s; choose truncations this G has statistics for' % e)
  finally:
    with torch.no_grad():
      for name, b in G.named_buffers():
        b.copy_(saved[name])


def use_truncation(G, z_, truncation, mode):
  """Draw z with this truncation from now on (None: N(0, z_var^2)); a G with BN statistics per
  truncation (TF-Hub biggan-deep) switches to those of `truncation`."""
  z_.set_truncation(truncation, mode)
  if truncation is not None and hasattr(G, 'set_truncation') and G.set_truncation(truncation):
    if mode != 'tfhub':
      print('Notice: this G\'s statistics for truncation %g were measured with --truncation_mode '
            'tfhub; z is drawn by %s.' % (truncation, mode))


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


def sample_npz(sample, num_images, batch_size, path):
  """num_images images and labels from sample() -> path (keys x, y), written whole before it
  replaces an older file."""
  x, y, done = None, np.empty(num_images, np.int64), 0
  for _ in trange(int(math.ceil(num_images / float(batch_size)))):
    images, labels = sample()
    n = min(len(images), num_images - done)
    batch = sampling.to_uint8(images[:n]).cpu().numpy()
    if x is None:
      x = np.empty((num_images,) + batch.shape[1:], np.uint8)
    x[done:done + n], y[done:done + n] = batch, labels[:n].cpu().numpy()
    done += n
  print('Images shape: %s, Labels shape: %s' % (x.shape, y.shape))
  print('Saving npz to %s...' % path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'wb') as f:
    np.savez(f, x=x, y=y)
  os.replace(path + '.tmp', path)


def describe(config, z_, batch_size, weights, itr, network):
  """What IS/FID were measured on (the original's description, plus truncation and network)."""
  parts = ['weights %s' % weights,
           'G in %s mode' % ('eval' if config['G_eval_mode'] else 'training'),
           z_.describe() if z_ is not None else 'temperature %g' % Glow.temperature(config),
           '%d images' % config['num_inception_images']]
  if config['accumulate_stats'] or not config['G_eval_mode']:
    parts.append('batch size %d' % batch_size)
  if config['accumulate_stats']:
    parts.append('%d standing stat accumulations' % config['num_standing_accumulations'])
  return ', '.join(parts) + ', %s Inception network, itr %d' % (network, itr)


def trunc_curve(G, z_, y_, config, metrics, values, path, plot=True):
  """IS/FID at each truncation -> CSV (truncation,IS_mean,IS_std,FID; FID empty without it; then
  the values of the other --metrics, metrics.fields), written row by row, then (with plot) its
  plot next to it. Returns the rows."""
  mode = config['truncation_mode']
  print('Getting truncation values (%s) for %s...' % (mode, ', '.join('%g' % t for t in values)))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rows = []
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(getattr(metrics, 'fields', CURVE_FIELDS))
    for t in values:
      use_truncation(G, z_, t, mode)
      if config['accumulate_stats']:
        sampling.accumulate_standing_stats(G, z_, y_, config['n_classes'],
                                           config['num_standing_accumulations'])
      scores = metrics()
      rows.append((t,) + tuple(scores))
      writer.writerow([t] + ['' if v is None else v for v in scores])
      f.flush()
  if plot:
    from logs import plot_truncation
    print('Wrote %s and %s' % (path, plot_truncation.plot_truncation_curve(path)))
  else:
    print('Wrote %s (no plot: matplotlib is not installed)' % path)
  return rows


def can_plot_curve(csv_path):
  """Check for matplotlib before a sweep (which can take hours), not after it: without it the
  CSV is still written, and a notice says how to plot it later."""
  from logs import logtools
  if logtools.have_matplotlib():
    return True
  print('Notice: matplotlib is not installed, so %s will have no plot (.png); the CSV is still '
        'written. Plot it later with: pip install matplotlib; python logs/plot_truncation.py %s'
        % (os.path.basename(csv_path), csv_path))
  return False


# ---------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------


def run(config, given=()):
  """Sample as the flags say; returns {output name: path} and the metrics computed."""
  config, values = prepare(config, given)
  # Glow's real images for --encode / --glow_manipulate, found before any work.
  encoding = glow_fns.check_sampling(config) if config['model'] == 'Glow' else None
  device = distributed.pick_device(config['device'])
  shapes_labels = None
  if config['sample_shapes_accuracy']:  # a run on other classes fails now
    shapes_labels = shapes_classifier.shapes_labels(config['class_names'], config['n_classes'])
  checkpoints.seed_rng(config['seed'])
  torch.backends.cudnn.benchmark = True
  experiment_name = config['experiment_name'] or configuration.name_from_config(config)
  print('Experiment name is %s' % experiment_name)
  G = sampling.build_generator(config, device)
  print('Number of params in G: %d' % sum(p.numel() for p in G.parameters()))
  state_dict, weights = load_G(G, config, experiment_name)
  check_truncations(G, values + ([] if config['truncation'] is None else [config['truncation']]))
  s = Sampling(config, experiment_name, G, state_dict, weights, device)
  s.encoding = encoding
  s.curve_path = '%s/truncation_curve_%s.csv' % (s.out, config['truncation_mode'])
  plot_curve = can_plot_curve(s.curve_path) if values else False
  # Only IS/FID need the Inception network and the moments (the original always loaded them).
  if config['sample_inception_metrics'] or values:
    s.get_inception_metrics = image_metrics.prepare_metrics(config, device)  # IS, FID, --metrics
  s.start()
  results = {'experiment_name': experiment_name}
  results.update(write_images(s))
  results.update(measure(s, values, plot_curve))
  if shapes_labels is not None:
    results['shapes_accuracy'] = shapes_accuracy(s, shapes_labels)
  return results


def prepare(config, given):
  """The config to sample with (the stored one with --config_from_name) and the sweep values,
  checked before any work."""
  config = configuration.update_config_roots(config)
  if config['config_from_name']:
    config = config_from_checkpoint(config, given)
  config = configuration.prepare_config(config)
  config['skip_init'], config['no_optim'] = True, True
  return config, configuration.check_sampling(config)


class Sampling(object):
  """A loaded G with its noise and sample(), and where its outputs go."""

  def __init__(self, config, experiment_name, G, state_dict, weights, device):
    self.config, self.experiment_name, self.G = config, experiment_name, G
    self.state_dict, self.weights, self.device = state_dict, weights, device
    self.out = '%s/%s' % (config['samples_root'], experiment_name)
    self.get_inception_metrics = None
    names = config['class_names']
    self.names = names if len(names or ()) == config['n_classes'] else None
    self.folder = (state_dict['itr'] if config['sample_sheet_folder_num'] == -1
                   else config['sample_sheet_folder_num'])

  def start(self):
    """z_, y_ (with --truncation), G's mode, sample(), standing statistics."""
    config, G = self.config, self.G
    self.G_batch_size = sampling.G_batch_size(config)
    if config['model'] == 'Glow':  # samples at --temperature: no z_, truncation or BN
      self.z_ = self.y_ = None
      self.sample = glow_fns.sampler(G, config, self.G_batch_size)
      return
    self.z_, self.y_ = sampling.prepare_noise(config, G.dim_z, self.device)
    if config['G_eval_mode']:
      print('Putting G in eval mode..')
      G.eval()
    else:
      print('G is in training mode...')
      G.train()
    use_truncation(G, self.z_, config['truncation'], config['truncation_mode'])
    self.sample = functools.partial(sampling.sample, G=G, z_=self.z_, y_=self.y_, config=config)
    if config['accumulate_stats']:
      print('Accumulating standing stats across %d accumulations...'
            % config['num_standing_accumulations'])
      sampling.accumulate_standing_stats(G, self.z_, self.y_, config['n_classes'],
                                         config['num_standing_accumulations'])


def write_images(s):
  """--sample_npz, --sample_sheets, --sample_interps, --sample_random (and Glow's modes)."""
  config, results = s.config, {}
  if config['model'] == 'Glow':
    return glow_fns.sample_modes(s.G, config, s.sample, s.out, s.folder, s.names, s.encoding,
                                 sample_npz)
  if config['sample_npz']:
    print('Sampling %d images and saving them to npz...' % config['sample_num_npz'])
    results['npz'] = '%s/samples.npz' % s.out
    sample_npz(s.sample, config['sample_num_npz'], s.G_batch_size, results['npz'])
  if config['sample_sheets']:
    print('Preparing conditional sample sheets...')
    sampling.write_sheets(s.G, config, s.experiment_name, s.folder, z_=s.z_,
                          class_names=s.names)
    results['sheets'] = '%s/%d' % (s.out, s.folder)
  if config['sample_interps']:
    print('Preparing interp sheets...')
    sampling.write_interps(s.G, config, s.experiment_name, s.folder, z_=s.z_, device=s.device,
                           method=config['interp_method'])
    results['interps'] = '%s/%d' % (s.out, s.folder)
  if config['sample_random']:
    print('Preparing random sample sheet...')
    images, _ = s.sample()
    results['random'] = '%s/random_samples.jpg' % s.out
    sampling.save_grid(images, results['random'], nrow=int(s.G_batch_size ** 0.5))
  return results


def measure(s, values, plot_curve):
  """--sample_inception_metrics and --sample_trunc_curves."""
  results = {}
  if s.get_inception_metrics is None:
    return results
  fields = CURVE_FIELDS + tuple(k for k in image_metrics.value_keys(s.get_inception_metrics.names)
                                if k not in CURVE_FIELDS)
  metrics = functools.partial(scores, s, fields)
  metrics.fields = fields
  if s.config['sample_inception_metrics']:
    print('Calculating Inception metrics...')
    results['metrics'] = metrics()
  if values:
    results['trunc_curve'] = s.curve_path
    results['trunc_rows'] = trunc_curve(s.G, s.z_, s.y_, s.config, metrics, values,
                                        s.curve_path, plot=plot_curve)
  return results


def scores(s, fields):
  """(IS_mean, IS_std, FID or None, then the values of the other `fields`), printed with what
  they were measured on."""
  config, get = s.config, s.get_inception_metrics
  result = get(s.sample, config['num_inception_images'], prints=False)
  IS_mean, IS_std, FID = result['IS_mean'], result['IS_std'], result['FID']
  extra = [(k, result[k]) for k in fields[len(CURVE_FIELDS):]]
  print('%s: Inception Score is %3.3f +/- %3.3f, FID is %s%s%s' % (
      describe(config, s.z_, s.G_batch_size, s.weights, s.state_dict['itr'], get.network),
      IS_mean, IS_std, 'not computed (%s)' % ('--no_fid' if config['no_fid'] else
                                              'not in --metrics')
      if FID is None else '%5.4f' % FID, ''.join(', %s is %.5g' % kv for kv in extra),
      '' if get.resize == inception_utils.NATIVE_RESIZE[get.network] else
      ' (%s resize)' % get.resize))
  return (IS_mean, IS_std, FID) + tuple(v for _, v in extra)


def shapes_accuracy(s, labels):
  """--sample_shapes_accuracy: the share of each class's samples a Shapes classifier labels
  with it."""
  config, G, z_ = s.config, s.G, s.z_
  classifier = shapes_classifier.load_or_train(config['resolution'], config['data_root'],
                                               s.device)
  accuracy = shapes_classifier.class_accuracy(
      G, classifier, labels, draw=lambda n, gen: z_.draw(n, G.dim_z, generator=gen),
      seed=config['seed'])
  print('Shapes %s: %s, G in %s mode, %s, itr %d' % (
      shapes_classifier.describe(accuracy, s.names or config['class_names']), s.weights,
      'eval' if config['G_eval_mode'] else 'training', z_.describe(), s.state_dict['itr']))
  return accuracy


def main(argv=None):
  parser = prepare_parser()
  config = vars(parser.parse_args(argv))
  print(config)
  return run(config, given_flags(argv))


if __name__ == '__main__':
  run_main(main)
