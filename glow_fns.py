"""Glow's training, evaluation and sampling: what train.py and sample.py run for --model Glow.

    python train.py --model Glow --dataset Shapes --glow_depth 8 --glow_hidden 128 \\
        --batch_size 32 --num_iters 5000 --test_every 500 --save_every 500 --ema --use_ema
    python sample.py --model Glow --experiment_name EXP --config_from_name --temperature 0.7 \\
        --sample_sheets --sample_interps --encode --glow_manipulate red_circle,blue_circle

Training (Glow_training_function) maximises the likelihood: the loss is Glow.loss, bits per
dimension of the images quantised to --n_bits_x (plus --glow_weight_y class bits with
--glow_ycond), over batch_size x --num_G_accumulations images per process and step, with a
linear learning-rate warm-up over --glow_warmup iterations, Adam or Adamax (--glow_optimizer, the
flow's G.optim), gradient-norm clipping (--glow_grad_clip), --amp (the coupling networks in half
precision, the flow's path, log-determinants and priors in fp32; fp16 with G.scaler) and --ema
(Polyak averaging: G_ema). Actnorm initialises itself from the first whole batch (all ranks'
images under torchrun) and never again: a loaded flow is initialised. There is no D.

Evaluation: bits/dim of --glow_test_images held-out images (test_set: the test split of C10 and
C100, other Shapes images, a seeded tenth at most of a folder or HDF5 file, which training then
never sees) every --test_every iterations, with the same dequantisation noise each time; logged
as test_bpd, and best{n} copies keep the lowest.

Sampling (training's sheets and sample.py): samples at --temperature (sample_batch), class sheets
(a row per class with --glow_ycond), and interpolations: the endpoints, sampled or real, are
encoded (the flow's exact inverse, no dequantisation noise), each level's latent interpolated by
lerp or slerp and the result decoded, so the endpoints come back as they went in. Manipulation
adds alpha x (mean latent of images A - mean latent of images B) to real images' latents.
"""
import functools
import os
import re

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils import data

import datasets
import distributed
import Glow
import sampling
import train_fns
from errors import UserError

HELD_OUT_SEED = 1  # the held-out split's permutation, Shapes' held-out images, the test noise
SHEET_COLUMNS = 10
INTERP_MIDPOINTS = 8

# ---------------------------------------------------------------------------------------------
# Data: the held-out split
# ---------------------------------------------------------------------------------------------


class Part(datasets.ImageDataset):
  """Some of a dataset's images, as a dataset of their own (a split)."""

  def __init__(self, dataset, indices):
    self.dataset, self.indices = dataset, np.asarray(indices, np.int64)
    super(Part, self).__init__(dataset.labels[self.indices], dataset.class_names,
                               dataset.resolution, dataset.augment)
    self.kind = dataset.kind
    self.info = getattr(dataset, 'info', None)

  def read(self, index, rng=None):
    return self.dataset.read(int(self.indices[index]), rng)


class CIFAR10Test(datasets.CIFAR10):
  files = ['test_batch']


class CIFAR100Test(datasets.CIFAR100):
  files = ['test']


def split(dataset, count):
  """(training part, held-out part) of a dataset without a test split: min(count, a tenth) of
  its images, chosen by a fixed seeded permutation, are held out."""
  held = min(count, len(dataset) // 10)
  if held < 1:
    raise UserError('%s has %d images, too few to hold out a tenth for the test bits/dim; use at '
                    'least 10 images' % (dataset.info['tag'] if dataset.info else 'the dataset',
                                         len(dataset)))
  order = np.random.RandomState(HELD_OUT_SEED).permutation(len(dataset))
  return Part(dataset, np.sort(order[held:])), Part(dataset, np.sort(order[:held]))


def has_own_test_images(kind):
  return kind in ('shapes', 'cifar10', 'cifar100')


def training_set(dataset, config):
  """What Glow trains on: the dataset less the held-out split where it has no test split."""
  if has_own_test_images(dataset.kind):
    return dataset
  return split(dataset, config['glow_test_images'])[0]


def test_set(config):
  """The held-out images (module docstring), without augmentation."""
  info = datasets.dataset_info(config['dataset'], config['data_root'], config['resolution'])
  count = config['glow_test_images']
  if info['kind'] == 'shapes':
    return datasets.Shapes(info['resolution'], num_images=count, seed=HELD_OUT_SEED)
  if info['kind'] in ('cifar10', 'cifar100'):
    test = (CIFAR10Test if info['kind'] == 'cifar10' else CIFAR100Test)(info['path'])
    return Part(test, np.arange(min(count, len(test))))
  dataset = datasets.open_dataset(config['dataset'], config['data_root'], config['resolution'])
  return split(dataset, count)[1]


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def learning_rate(config, itr):
  """--glow_lr after a linear warm-up from 0 over --glow_warmup iterations (itr counts from 1)."""
  warmup = config['glow_warmup']
  return config['glow_lr'] * (min(1.0, itr / warmup) if warmup else 1.0)


def loader_options(config):
  """datasets.get_data_loaders' batch (images per process and iteration) and training part."""
  return {'batch_size': config['batch_size'] * config['num_G_accumulations'],
          'subset': functools.partial(training_set, config=config)}


def Glow_training_function(G, D, GD, z_, y_, ema, state_dict, config):
  """train(x, y) -> {'bpd', 'lr'} (+ 'bits_y' with --glow_ycond, 'grad_norm' with clipping) for
  one optimizer step of the flow G over x: batch_size x num_G_accumulations images. GD: the
  Glow.Objective of G (Glow.G_D), or its DDP replica; D, z_ and y_ are not used (the signature
  of train_fns.GAN_training_function)."""
  device = next(G.parameters()).device
  if not hasattr(G, 'scaler'):
    G.scaler = torch.amp.GradScaler(device.type, enabled=config.get('amp') == 'fp16')
  ddp = GD if isinstance(GD, nn.parallel.DistributedDataParallel) else None
  bs, accumulations = config['batch_size'], config['num_G_accumulations']
  clip = config['glow_grad_clip']
  initialized = [False]

  def train(x, y):
    if len(x) < bs * accumulations:
      raise UserError('the loader batch has %d images, but --batch_size %d x '
                      '--num_G_accumulations %d needs %d per iteration'
                      % (len(x), bs, accumulations, bs * accumulations))
    if not initialized[0]:  # actnorm from the whole first batch (a loaded flow is initialised)
      if not G.initialized():
        with torch.no_grad():
          G(x, y)
      initialized[0] = True
    lr = learning_rate(config, state_dict['itr'])
    for group in G.optim.param_groups:
      group['lr'] = lr
    G.optim.zero_grad(set_to_none=True)
    sums = 0
    pieces = zip(x[:bs * accumulations].split(bs), y[:bs * accumulations].split(bs))
    for i, (xi, yi) in enumerate(pieces):
      with train_fns._sync_unless(ddp, i == accumulations - 1):
        with train_fns.autocast(config, device):
          out = GD(xi, yi)
        G.scaler.scale(out['loss'] / accumulations).backward()
      sums = sums + torch.stack([out['bpd'], out['bits_y']]).detach()
    metrics = {'bpd': sums[0] / accumulations}
    if config['glow_ycond']:
      metrics['bits_y'] = sums[1] / accumulations
    if clip > 0:
      G.scaler.unscale_(G.optim)
      metrics['grad_norm'] = torch.nn.utils.clip_grad_norm_(G.parameters(), clip)
    G.scaler.step(G.optim)
    G.scaler.update()
    if ema is not None:
      ema.update(state_dict['itr'])
    metrics['lr'] = lr
    return metrics
  return train


# ---------------------------------------------------------------------------------------------
# Evaluation: held-out bits/dim
# ---------------------------------------------------------------------------------------------


def test_loader(config, ctx=None):
  """The held-out images, a shard per rank, in a fixed order."""
  dataset = test_set(config)
  rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
  return data.DataLoader(dataset, batch_size=config['batch_size'],
                         sampler=list(range(rank, len(dataset), world)), num_workers=0)


@torch.no_grad()
def test_bpd(net, loader, device):
  """Mean bits/dim of the loader's images (over every rank's shard), with the same
  dequantisation noise at every evaluation."""
  generator = torch.Generator(device).manual_seed(HELD_OUT_SEED)
  total = torch.zeros(2, dtype=torch.float64, device=device)
  for x, y in loader:
    objective = net(x.to(device), y.to(device), generator=generator)[1]
    total[0] += net.bits_per_dim(objective).double().sum()
    total[1] += len(x)
  if distributed.running():
    dist.all_reduce(total)
  return (total[0] / total[1]).item()


def initial_state():
  """The state_dict entry of the best held-out bits/dim (kept across resumes)."""
  return {'best_test_bpd': float('inf')}


def test(G, G_ema, state_dict, config, loader, test_log, sets):
  """Held-out bits/dim of the sampling flow (G_ema with --use_ema), logged to the jsonl as
  test_bpd (rank 0 passes test_log); a new lowest appends a best{n} set to `sets`. Returns
  {'test_bpd': value}."""
  net = train_fns.which_G(G, G_ema, config)
  value = test_bpd(net, loader, device_of(net))
  print('Itr %d: test bits/dim %.5f (%s, %d held-out images)'
        % (state_dict['itr'], value, 'G_ema' if net is G_ema else 'G', len(loader.dataset)))
  if value < float(state_dict['best_test_bpd']):
    print('test_bpd improved over previous best, saving checkpoint...')
    train_fns.add_best_set(state_dict, config, sets, 'best_test_bpd')
    state_dict['best_test_bpd'] = value
  if test_log is not None:
    test_log.log(itr=int(state_dict['itr']), test_bpd=value)
  return {'test_bpd': value}


def save_and_sample(G, G_ema, state_dict, config, experiment_name, is_main, generator, sets):
  """A save: its checkpoint sets appended to `sets` (train_fns.add_saved_sets), and on rank 0
  the samples (training_samples) of the sampling flow. Returns the fixed samples (or None)."""
  train_fns.add_saved_sets(state_dict, config, sets)
  if not is_main:
    return None
  return training_samples(train_fns.which_G(G, G_ema, config), state_dict, config,
                          experiment_name, generator)


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def device_of(net):
  return next(net.parameters()).device


@torch.no_grad()
def sample_batch(net, n, config, generator=None, y=None):
  """(n images at --temperature, their labels): labels drawn uniformly unless given (used by the
  class-conditional prior only)."""
  device = device_of(net)
  if y is None:
    y = torch.randint(0, config['n_classes'], (n,), device=device, generator=generator)
  images = net.reverse(None, y if net.ycond else None, Glow.temperature(config), batch_size=n,
                       generator=generator)
  return images, y


def sampler(net, config, batch_size):
  """sample() -> (images, labels), fresh each call: for the npz and the metrics."""
  return lambda: sample_batch(net, batch_size, config)


def fixed_samples(net, config, n):
  """The same n samples from every call (noise from a generator seeded by --seed)."""
  generator = torch.Generator(device_of(net)).manual_seed(config['seed'])
  y = torch.arange(n, device=device_of(net)) % config['n_classes']
  return sample_batch(net, n, config, generator, y)[0]


def sample_sheet(net, config, folder, generator=None, class_names=None):
  """folder/samples{i}.jpg: with a class-conditional prior, a labelled row of SHEET_COLUMNS
  samples per class, classes_per_sheet classes per sheet; else one sheet of SHEET_COLUMNS rows.
  Returns the paths."""
  device = device_of(net)
  if not net.ycond:
    images = sample_batch(net, SHEET_COLUMNS * SHEET_COLUMNS, config, generator)[0]
    path = os.path.join(folder, 'samples0.jpg')
    sampling.save_grid(images, path, nrow=SHEET_COLUMNS)
    return [path]
  per_sheet = config['classes_per_sheet']
  paths = []
  for i in range(max(1, config['n_classes'] // per_sheet)):
    classes = torch.arange(i * per_sheet, min((i + 1) * per_sheet, config['n_classes']),
                           device=device)
    y = classes.repeat_interleave(SHEET_COLUMNS)
    images = sample_batch(net, len(y), config, generator, y)[0]
    paths.append(os.path.join(folder, 'samples%d.jpg' % i))
    sampling.save_grid(images, paths[-1], nrow=SHEET_COLUMNS, row_labels=(
        [class_names[c] for c in classes.tolist()] if class_names else None))
  return paths


@torch.no_grad()
def encode(net, x, y=None):
  """The latents of images x (one tensor per level), exactly: no dequantisation noise, so
  net.reverse(encode(net, x)) gives x back to float rounding. They do not depend on the labels
  (only the class-conditional prior's density does): any will do."""
  device = device_of(net)
  y = torch.zeros(len(x), dtype=torch.long, device=device) if y is None else y.to(device)
  return net(x.to(device), y, dequantize=False)[0]


@torch.no_grad()
def interpolate(net, xa, xb, num_midpoints=INTERP_MIDPOINTS, method='lerp'):
  """Rows from image xa[i] to xb[i]: each level's latent interpolated (sampling.INTERPOLATIONS:
  lerp or slerp over the level's whole latent) at num_midpoints points between, then decoded;
  (len(xa) * (num_midpoints + 2)) images, row by row, the first and last of a row xa[i], xb[i]."""
  za, zb = encode(net, xa), encode(net, xb)
  n, steps = len(xa), num_midpoints + 2
  zs = [sampling.INTERPOLATIONS[method](a.reshape(n, 1, -1), b.reshape(n, 1, -1), num_midpoints)
        .reshape(n * steps, *a.shape[1:]) for a, b in zip(za, zb)]
  return net.reverse(zs)


def interp_sheet(net, config, path, generator=None, images=None, method='lerp'):
  """An interpolation sheet at `path`: between pairs of --temperature samples, or of `images`
  (2 x rows, the first half to the second). Returns the images."""
  if images is None:
    rows = config.get('encode_count', Glow.sample_defaults['encode_count'])
    images = sample_batch(net, 2 * rows, config, generator)[0]
  half = len(images) // 2
  out = interpolate(net, images[:half], images[half:2 * half], INTERP_MIDPOINTS, method)
  sampling.save_grid(out, path, nrow=INTERP_MIDPOINTS + 2)
  return out


def training_samples(net, state_dict, config, experiment_name, generator=None):
  """train.py's samples at a save: fixed_samples{itr}.jpg and, in the folder {itr}, the class
  sheets and an interpolation sheet between samples. Returns the fixed samples."""
  root = '%s/%s' % (config['samples_root'], experiment_name)
  itr = state_dict['itr']
  n = sampling.G_batch_size(config)
  fixed = fixed_samples(net, config, n)
  sampling.save_grid(fixed, '%s/fixed_samples%d.jpg' % (root, itr), nrow=int(n ** 0.5))
  folder = '%s/%d' % (root, itr)
  sample_sheet(net, config, folder, generator, config.get('class_names'))
  interp_sheet(net, config, '%s/interp0.jpg' % folder, generator)
  return fixed


# ---------------------------------------------------------------------------------------------
# Real images: encoding, interpolation, manipulation (sample.py --encode, --glow_manipulate)
# ---------------------------------------------------------------------------------------------


def open_images(source, config):
  """The dataset of a --dataset value at the flow's resolution (no augmentation)."""
  dataset = datasets.open_dataset(source, config['data_root'], config['resolution'])
  if len(dataset) < 1:
    raise UserError('%s holds no images to encode; point --encode_images at images' % source)
  return dataset


def pick(dataset, count, seed, label=None):
  """(x, y) of up to `count` images in a seeded order, only those of class `label` if given."""
  order = np.random.RandomState(seed).permutation(len(dataset))
  if label is not None:
    order = order[dataset.labels[order] == label]
  items = [dataset[int(i)] for i in order[:count]]
  return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


def class_index(dataset, name):
  """A class of the dataset by name or index; None if it is neither."""
  names = list(dataset.class_names or [])
  if name in names:
    return names.index(name)
  if name.isdigit() and int(name) < len(np.unique(dataset.labels)):
    return int(name)
  return None


class Encoding(object):
  """sample.py's real-image work, checked up front: the images to interpolate and manipulate
  (--encode_images, default --dataset; --encode_count rows) and the two sides A and B of
  --glow_manipulate (classes of those images, or --dataset values such as image folders)."""

  def __init__(self, config):
    self.config = config
    source = config['encode_images'] or config['dataset']
    self.dataset = open_images(source, config)
    self.source = source
    self.count = config['encode_count']
    if len(self.dataset) < 2:
      raise UserError('%s has %d image; --encode needs at least 2' % (source, len(self.dataset)))
    self.sides = None
    pair = Glow.manipulation(config)
    if pair:
      self.sides = [self.side(name) for name in pair]
      self.names = pair

  def side(self, name):
    """(dataset, class or None) of one side of --glow_manipulate."""
    label = class_index(self.dataset, name)
    if label is not None:
      if not (self.dataset.labels == label).any():
        raise UserError('--glow_manipulate: %s has no images of class %s; name classes that '
                        'have images' % (self.source, name))
      return self.dataset, label
    if os.path.exists(os.path.expanduser(name)) or os.path.exists(
        os.path.join(self.config['data_root'], name)):
      return open_images(name, self.config), None
    raise UserError('--glow_manipulate: %s is neither a class of %s (%s) nor an image folder; '
                    'name two classes or two folders' % (
                        name, self.source, ', '.join(self.dataset.class_names or [])
                        or 'classes 0 to %d' % (len(np.unique(self.dataset.labels)) - 1)))

  def images(self, count):
    return pick(self.dataset, count, self.config['seed'])

  @torch.no_grad()
  def direction(self, net):
    """mean latent of A - mean latent of B, per level (float64 means)."""
    means = []
    for dataset, label in self.sides:
      x, _ = pick(dataset, Glow.MANIPULATION_IMAGES, self.config['seed'], label)
      sums = None
      for xb in x.split(self.config['batch_size']):
        parts = [z.double().sum(0) for z in encode(net, xb)]
        sums = parts if sums is None else [s + p for s, p in zip(sums, parts)]
      means.append([s / len(x) for s in sums])
    return [(a - b).float() for a, b in zip(*means)]

  def sheet_name(self):
    parts = [re.sub(r'[^A-Za-z0-9.-]+', '_', os.path.basename(os.path.normpath(n))).strip('_')
             for n in self.names]
    return 'manipulate_%s_minus_%s' % tuple(parts)


@torch.no_grad()
def manipulate(net, x, direction, alphas):
  """Each image of x with alpha x direction added to its latents, for every alpha: len(x) x
  len(alphas) images, row by row (alpha 0 gives the image back)."""
  zs = encode(net, x)
  n = len(x)
  shifted = [torch.stack([z + a * d.to(z) for a in alphas], 1).reshape(n * len(alphas),
                                                                        *z.shape[1:])
             for z, d in zip(zs, direction)]
  return net.reverse(shifted)


# ---------------------------------------------------------------------------------------------
# sample.py's modes for a flow
# ---------------------------------------------------------------------------------------------


def check_sampling(config):
  """sample.py's Glow-only checks, before any work: the real images --encode and
  --glow_manipulate need (an Encoding, or None)."""
  manipulating = bool(Glow.manipulation(config))
  if config['encode'] and not (config['sample_interps'] or manipulating):
    raise UserError('--encode encodes real images for --sample_interps (interpolations between '
                    'them) and --glow_manipulate: add one of them, or drop --encode')
  return Encoding(config) if config['encode'] or manipulating else None


def sample_modes(G, config, sample, out, folder, names, encoding, write_npz):
  """--sample_npz, --sample_sheets, --sample_interps (with --encode also between real images),
  --glow_manipulate and --sample_random for a flow: sheets in out/folder, npz files in out (each
  mode's images, written by write_npz(sample, count, batch_size, path) as sample.sample_npz).
  Returns {output name: path}."""
  batch_size = sampling.G_batch_size(config)
  results = {}
  sheets = '%s/%d' % (out, folder)

  def npz(name, images, labels):
    if config['sample_npz']:
      results[name + '_npz'] = '%s/%s.npz' % (out, name)
      write_npz(lambda: (images, labels), len(images), len(images), results[name + '_npz'])
  if config['sample_npz']:
    print('Sampling %d images at temperature %g and saving them to npz...'
          % (config['sample_num_npz'], Glow.temperature(config)))
    results['npz'] = '%s/samples.npz' % out
    write_npz(sample, config['sample_num_npz'], batch_size, results['npz'])
  if config['sample_sheets']:
    print('Preparing sample sheets...')
    sample_sheet(G, config, sheets, class_names=names)
    results['sheets'] = sheets
  if config['sample_interps']:
    print('Preparing interpolation sheets...')
    interp_sheet(G, config, '%s/interp0.jpg' % sheets, method=config['interp_method'])
    results['interps'] = sheets
    if config['encode']:
      x, y = encoding.images(2 * encoding.count)
      half = len(x) // 2
      results['interp_real'] = '%s/interp_real0.jpg' % sheets
      images = interp_sheet(G, config, results['interp_real'], images=x[:2 * half],
                            method=config['interp_method'])
      npz('interp_real', images, y[:half].repeat_interleave(INTERP_MIDPOINTS + 2))
  if encoding is not None and encoding.sides:
    print('Preparing the manipulation sheet %s...' % encoding.sheet_name())
    x, y = encoding.images(encoding.count)
    alphas = Glow.alphas(config)
    images = manipulate(G, x, encoding.direction(G), alphas)
    results['manipulation'] = '%s/%s.jpg' % (sheets, encoding.sheet_name())
    sampling.save_grid(images, results['manipulation'], nrow=len(alphas))
    npz(encoding.sheet_name(), images, y.repeat_interleave(len(alphas)))
  if config['sample_random']:
    print('Preparing random sample sheet...')
    results['random'] = '%s/random_samples.jpg' % out
    sampling.save_grid(sample()[0], results['random'], nrow=int(batch_size ** 0.5))
  return results

