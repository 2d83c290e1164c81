"""Score any set of images against another: IS, FID, KID, precision/recall, density/coverage and
intra-class FID, all from one Inception pass per set (metrics.py).

Usage:
  python evaluate.py SOURCE [--ref REF] --metrics FID,KID,PR,DC,IS,IFID [--num_images N]
                     [--json OUT.json]
  python evaluate.py samples/EXP/samples.npz --ref I128_hdf5 --metrics IS,FID,KID --json k.json
  python evaluate.py weights/EXP --use_ema --G_eval_mode --truncation 0.5 \\
      --truncation_mode resample --ref Shapes --metrics FID,PR --num_images 10000
  torchrun --nproc_per_node 8 evaluate.py SOURCE --ref REF --metrics ...

SOURCE and REF are each one of:
  an image folder   with class subfolders (their sorted names are the classes, as --dataset PATH
                    reads them) or flat (no classes); images are cropped to their centre square
                    and resized to --resolution, by default the size of the folder's first image
  an .npz           x uint8 N x 3 x H x H and optional labels y (sample.py --sample_npz, the
                    original's sample.py); read in place when stored uncompressed
  an .hdf5          from make_hdf5.py (or the original's)
  a dataset name    a --dataset name: I128_hdf5, C10, Shapes (--resolution), ... under --data_root
  a weights folder  weights_root/EXP of train.py, the original or TFHub/converter.py: N images
                    sampled from G (G_ema with --use_ema) with sample.py's flags (--truncation,
                    --truncation_mode, --G_eval_mode, --accumulate_stats, --load_weights, --z_var);
                    the model is rebuilt from the folder's state_dict.pth. With IFID the classes
                    are drawn in turn (N / classes images each) instead of at random. A Glow
                    run's folder samples its flow at --temperature (default: its training's).
REF is needed by every metric but IS. SOURCE gives --num_images images (default: all of a data
source, --num_inception_images for a weights folder), REF --ref_num_images (default: all); fewer
than all are a random subset drawn with --seed (SOURCE's and REF's differ). The IS splits of
data sources are taken over a --seed order, as calculate_inception_moments.py does.

Prints a table, each number with the Inception network and resize policy behind it, and writes
--json: one object with the values of the metrics asked for (IS_mean, IS_std, FID, KID_mean,
KID_std, precision, recall, density, coverage, IFID and IFID_classes, the per-class FIDs) and
network, resize, N, N_ref, source, ref (and kid_subsets, kid_subset_size with KID).

REF's features and statistics are cached next to it (inside a folder, beside a file, under
--data_root for a dataset name; metrics.ReferenceCache), keyed by its content (path, size and
modification time of its files), the network and its weights, the resize policy and the number
of images, and reused by the next run; a dataset name's cache is the one that train.py reads.
With FID alone, a dataset name's moments file (calculate_inception_moments.py) serves as REF.

Under torchrun every rank reads (or samples) its share of the images; the statistics are
all-reduced and the features all-gathered, and rank 0 computes, prints and writes.
"""
import argparse
import functools
import json
import os
import zipfile

import numpy as np
import torch
import torch.utils.data as data

import checkpoints
import config as configuration
import datasets
import distributed
import errors
import Glow
import glow_fns
import inception_utils as iu
import metrics
import sample as sample_script
import sampling


def prepare_parser():
  parser = configuration.add_sample_parser(configuration.prepare_parser())
  parser.description = ('Score a set of images (folder, npz, HDF5, dataset or weights folder) '
                        'against a reference set.')
  add = parser.add_argument
  add('source',
      help='(new) The images to score: an image folder, .npz, .hdf5, dataset name or weights '
           'folder')
  add('--ref', type=str, default='',
      help='(new) The reference images, of the same kinds as SOURCE; needed by all metrics but '
           'IS')
  add('--num_images', type=int, default=0,
      help='(new) Images of SOURCE to use; 0: all of a data source, --num_inception_images for a '
           'weights folder')
  add('--ref_num_images', type=int, default=0,
      help='(new) Images of REF to use; 0: all')
  add('--json', type=str, default='',
      help='(new) Write the results as one JSON object to this file')
  return parser


def given_flags(argv=None):
  """The dests of the flags written on the command line (they stay over a weights folder's
  stored config, as with sample.py --config_from_name)."""
  parser = prepare_parser()
  for action in parser._actions:
    action.default = argparse.SUPPRESS
  return set(vars(parser.parse_args(argv)))


# ---------------------------------------------------------------------------------------------
# Image sources
# ---------------------------------------------------------------------------------------------


class FlatFolder(datasets.ImageDataset):
  """A folder of images without class subfolders: labels -1, read as datasets.ImageFolder."""
  kind = 'flat'

  def __init__(self, root, resolution):
    self.root, self.files = root, datasets._list_images(root)
    super().__init__(np.full(len(self.files), -1), None, resolution)

  def read(self, index, rng=None):
    return datasets.read_image(os.path.join(self.root, self.files[index]), self.resolution), -1


def _npz_array(path, name):
  """Array `name` of an .npz: memory-mapped when stored uncompressed (np.savez), else loaded."""
  with zipfile.ZipFile(path) as z:
    info = z.getinfo(name + '.npy')
    if info.compress_type != zipfile.ZIP_STORED:
      with np.load(path) as f:
        return f[name]
  with open(path, 'rb') as f:
    f.seek(info.header_offset)
    local = f.read(30)  # the local file header: its name and extra field precede the data
    f.seek(info.header_offset + 30 + int.from_bytes(local[26:28], 'little')
           + int.from_bytes(local[28:30], 'little'))
    version = np.lib.format.read_magic(f)
    shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                             else np.lib.format.read_array_header_2_0(f))
    offset = f.tell()
  return np.memmap(path, dtype, 'r', offset, shape, 'F' if fortran else 'C')


class NpzImages(data.Dataset):
  """x (uint8 N x 3 x H x H) and optional y of an .npz; each process maps the file itself."""
  kind = 'npz'

  def __init__(self, path):
    self.path = path
    try:
      with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
      x = _npz_array(path, 'x') if 'x.npy' in names else None
    except (OSError, zipfile.BadZipFile, ValueError) as e:
      raise errors.UserError('%s is not a readable .npz (%s); pass the file sample.py '
                             '--sample_npz writes' % (path, errors.reason(e)))
    if x is None or x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] != 3 \
        or x.shape[2] != x.shape[3] or len(x) == 0:
      raise errors.UserError('%s: expected x, uint8 N x 3 x H x H images (as sample.py '
                             '--sample_npz writes), found %s' % (
                                 path, 'no x' if x is None else '%s %s' % (x.dtype, x.shape)))
    self.labels = (np.asarray(_npz_array(path, 'y'), np.int64) if 'y.npy' in names else None)
    if self.labels is not None and self.labels.shape != (len(x),):
      raise errors.UserError('%s: y has shape %s for %d images; expected one label per image'
                             % (path, self.labels.shape, len(x)))
    self.resolution, self.count, self._x = x.shape[2], len(x), None

  def __len__(self):
    return self.count

  def __getitem__(self, index):
    if self._x is None:
      self._x = _npz_array(self.path, 'x')
    label = -1 if self.labels is None else int(self.labels[index])
    return torch.from_numpy(np.array(self._x[index])), label


class Source(object):
  """One SOURCE or REF: `what` it is in words, its resolution, the number of images used, their
  labels when known before the pass (None: none), class names, and sampler() for the pass.
  Data sources have `dataset` and `indices`; a weights folder has `draw` (sample.py's)."""

  def __init__(self, role, spec, what, resolution, num_images, labels=None, class_names=None,
               dataset=None, indices=None, draw=None, stamp=None, cache_path=None):
    self.role, self.spec, self.what, self.resolution = role, spec, what, resolution
    self.num_images, self.labels, self.class_names = num_images, labels, class_names
    self.dataset, self.indices, self.draw = dataset, indices, draw
    self.stamp, self.cache_path = stamp, cache_path

  def __str__(self):
    return '%s %s (%s, %d px, %d images)' % (self.role, self.spec, self.what, self.resolution,
                                             self.num_images)

  def sampler(self, config):
    """sample() -> (images, labels): this rank's share of the images, batch by batch."""
    if self.draw is not None:
      return self.draw
    start, stop = iu.rank_share(self.num_images)
    loader = data.DataLoader(data.Subset(self.dataset, self.indices[start:stop].tolist()),
                             batch_size=config['batch_size'], num_workers=config['num_workers'],
                             shuffle=False)
    batches = iter(loader)
    return lambda: next(batches)


def _is_weights_folder(path):
  names = os.listdir(path)
  return any(n.startswith('state_dict') and n.endswith('.pth') for n in names) and any(
      n.startswith('G') and n.endswith('.pth') for n in names)


def _first_image_size(root):
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    for name in sorted(files):
      if name.lower().endswith(datasets.IMG_EXTENSIONS) and not name.startswith('.'):
        try:
          from PIL import Image
          with Image.open(os.path.join(folder, name)) as img:
            return min(img.size)
        except (OSError, ValueError) as e:
          raise errors.UserError('cannot read %s (%s); give the image size with --resolution'
                                 % (os.path.join(folder, name), errors.reason(e)))
  return 0


def _open_data(role, spec, config):
  """(dataset, what, stamp, cache_path) of a data source: folder, npz, hdf5 or dataset name."""
  network = config['inception_net']
  policy = iu.resize_policy(network, config['inception_resize'])
  if spec in datasets.dset_dict:
    dataset = datasets.open_dataset(spec, config['data_root'], config['resolution'])
    return (dataset, 'dataset', metrics.dataset_stamp(dataset.info, len(dataset)),
            lambda n: metrics.cache_path(None, network, policy, n, dataset.info['stats_name'],
                                         config['data_root']))
  path = spec
  if os.path.isdir(path):
    resolution = config['resolution'] or _first_image_size(path)
    subfolders = [d for d in os.listdir(path) if not d.startswith('.')
                  and os.path.isdir(os.path.join(path, d))]
    dataset = (datasets.ImageFolder(path, resolution) if subfolders and resolution
               else FlatFolder(path, resolution))
    if len(dataset) == 0:
      raise errors.UserError('%s %s is a folder with no images (%s); point it at the images'
                             % (role, path, ' '.join(datasets.IMG_EXTENSIONS)))
    what = 'image folder, %s' % ('%d classes' % len(dataset.class_names) if subfolders
                                 else 'no classes')
  elif os.path.isfile(path) and path.lower().endswith('.npz'):
    dataset, what = NpzImages(path), 'npz'
  elif os.path.isfile(path) and path.lower().endswith(('.hdf5', '.h5')):
    dataset, what = datasets.ILSVRC_HDF5(path), 'HDF5'
    if config['resolution'] and config['resolution'] != dataset.resolution:
      raise errors.UserError('%s %s holds %d px images but --resolution is %d; drop --resolution'
                             % (role, path, dataset.resolution, config['resolution']))
  elif os.path.exists(path):
    raise errors.UserError('%s %s is a file of an unknown kind; pass an image folder, .npz, '
                           '.hdf5, weights folder or dataset name' % (role, spec))
  else:
    raise errors.UserError('%s %s is no image folder, .npz, .hdf5, weights folder or dataset name '
                           '(%s); check the path'
                           % (role, spec, ', '.join(sorted(datasets.dset_dict))))
  return (dataset, what, dict(metrics.content_stamp(path), resolution=dataset.resolution),
          lambda n: metrics.cache_path(path, network, policy, n))


def open_source(role, spec, config, given, device, num_images, names):
  """The Source of a SOURCE or REF argument, opened cheaply (no image is read but one)."""
  if os.path.isdir(spec) and _is_weights_folder(spec):
    return open_weights(role, spec, config, given, device, num_images, names)
  dataset, what, stamp, cache_path = _open_data(role, spec, config)
  total = len(dataset)
  if num_images > total:
    raise errors.UserError('%s %s has %d images, fewer than the %d asked for; lower --%s'
                           % (role, spec, total, num_images,
                              'num_images' if role == 'SOURCE' else 'ref_num_images'))
  count = num_images or total
  indices = np.arange(total)
  if count < total:  # a random subset in the data's order, SOURCE's other than REF's
    seed = [config['seed'], ('SOURCE', 'REF').index(role)]
    indices = np.sort(np.random.default_rng(seed).permutation(total)[:count])
    stamp = dict(stamp, subset_seed=seed)
  labels = getattr(dataset, 'labels', None)
  labels = None if labels is None or (labels < 0).all() else np.asarray(labels)[indices]
  return Source(role, spec, what, dataset.resolution, count, labels,
                getattr(dataset, 'class_names', None), dataset, indices,
                stamp=stamp, cache_path=cache_path(count))


def open_weights(role, path, config, given, device, num_images, names):
  """A weights folder as sample.py --config_from_name loads it; N images drawn from its G."""
  root, experiment = os.path.split(os.path.normpath(os.path.abspath(path)))
  cfg = dict(config, weights_root=root, experiment_name=experiment, config_from_name=True)
  cfg = sample_script.config_from_checkpoint(cfg, given)
  glow = cfg['model'] == 'Glow'
  if not glow:  # the run's own metric flags do not concern sampling (nor may suit this command)
    cfg.update(metrics=metrics.DEFAULT_METRICS, which_best='IS', no_fid=False)
  cfg = configuration.prepare_config(cfg)
  G = sampling.build_generator(cfg, device, copy=True)
  _, weights = sample_script.load_G(G, cfg, experiment)
  count = num_images or config['num_inception_images']
  if glow:
    return open_flow(role, path, G, cfg, weights, config['seed'], count, names)
  sample_script.check_truncations(G, [] if cfg['truncation'] is None else [cfg['truncation']])
  z_, y_ = sampling.prepare_noise(cfg, G.dim_z, device)
  G.eval() if cfg['G_eval_mode'] else G.train()
  sample_script.use_truncation(G, z_, cfg['truncation'], cfg['truncation_mode'])
  torch.manual_seed(config['seed'] + 1000003 * iu.world_and_rank()[1])  # each rank its own z
  if cfg['accumulate_stats']:
    sampling.accumulate_standing_stats(G, z_, y_, cfg['n_classes'],
                                       cfg['num_standing_accumulations'])
  labels = None
  if 'IFID' in names:  # every class in turn: IFID needs images of each
    labels = np.arange(count) % cfg['n_classes']
    following = [iu.rank_share(count)[0]]

    def next_labels(generator=None):
      y_.copy_(torch.arange(following[0], following[0] + len(y_)) % cfg['n_classes'])
      following[0] += len(y_)
      return y_
    y_.sample_ = next_labels
  what = 'weights folder: %s, G in %s mode, %s' % (weights, 'eval' if cfg['G_eval_mode']
                                                    else 'training', z_.describe())
  classes = cfg['class_names'] if len(cfg['class_names'] or ()) == cfg['n_classes'] else None
  return Source(role, path, what, cfg['resolution'], count, labels, classes,
                draw=functools.partial(sampling.sample, G=G, z_=z_, y_=y_, config=cfg))


def open_flow(role, path, G, cfg, weights, seed, count, names):
  """A Glow run's folder: count images of its flow at --temperature, the classes in turn with
  IFID (else drawn at random)."""
  G.eval()
  batch_size, device = sampling.G_batch_size(cfg), glow_fns.device_of(G)
  torch.manual_seed(seed + 1000003 * iu.world_and_rank()[1])  # each rank its own images
  labels, following = None, [iu.rank_share(count)[0]]
  if 'IFID' in names and not G.ycond:
    raise errors.UserError('IFID needs class-conditional samples, but the Glow run %s has no '
                           'class-conditional prior (--glow_ycond): leave IFID out' % path)
  if 'IFID' in names:
    labels = np.arange(count) % cfg['n_classes']

  def draw():
    y = None
    if labels is not None:
      y = torch.arange(following[0], following[0] + batch_size, device=device) % cfg['n_classes']
      following[0] += batch_size
    with torch.no_grad():
      return glow_fns.sample_batch(G, batch_size, cfg, y=y)
  what = 'weights folder: %s, Glow at temperature %g' % (weights, Glow.temperature(cfg))
  classes = cfg['class_names'] if len(cfg['class_names'] or ()) == cfg['n_classes'] else None
  return Source(role, path, what, cfg['resolution'], count, labels, classes, draw=draw)


# ---------------------------------------------------------------------------------------------
# Checks before the slow work, the reference, the report
# ---------------------------------------------------------------------------------------------


def check(names, source, ref, config):
  policy = iu.resize_policy(config['inception_net'], config['inception_resize'])
  if ref is not None and source.resolution != ref.resolution:
    raise errors.UserError(
        'SOURCE %s is %d px but REF %s is %d px: both would be resized to 299 px (%s resize '
        'policy), so the scores would measure the resize as much as the images; compare images '
        'of one size (--resolution sets it for folders and Shapes)'
        % (source.spec, source.resolution, ref.spec, ref.resolution, policy))
  metrics.check_counts(names, source.num_images, ref.num_images if ref else None, config,
                       'SOURCE %s' % source.spec, 'REF %s' % (ref.spec if ref else ''))
  if 'IFID' in names:
    for side in (source, ref):
      if side.labels is None:
        raise errors.UserError('IFID needs classes, and %s %s has none (a flat folder, or an .npz '
                               'without y); give images with classes or drop IFID'
                               % (side.role, side.spec))
    metrics.check_class_counts(source.labels, ref.labels, 'SOURCE %s' % source.spec,
                               'REF %s' % ref.spec, ref.class_names)


def reference(ref, names, net, config):
  """REF's metrics.Reference on rank 0 (None elsewhere): the moments file of a dataset name
  (FID alone, all images), else the cache, else a pass over REF's images (then cached)."""
  needs = metrics.consumes(names, ref=True)
  if not needs:
    return None
  rank = iu.world_and_rank()[1]
  if ref.dataset is not None and ref.spec in datasets.dset_dict and needs == {'moments'} \
      and ref.num_images == len(ref.dataset):
    try:
      mu, sigma, path = iu.load_moments(dict(config, dataset=ref.spec))
      if rank == 0:
        print('Using the moments file of %s: %s' % (ref, path))
      return metrics.Reference(ref.spec, ref.num_images, (mu, sigma))
    except errors.UserError:
      pass  # no moments file: the pass below
  cache = None
  if ref.stamp is not None:
    cache = metrics.ReferenceCache(ref.cache_path, metrics.cache_key(ref.stamp, config,
                                                                     ref.num_images))
  current = metrics.broadcast(cache is not None and cache.current() if rank == 0 else None)
  if current and rank == 0:
    print('Using the cached features of %s: %s' % (ref, cache.path))
    return metrics.Reference(ref.spec, ref.num_images, cache=cache, class_names=ref.class_names)
  if current:
    return None
  collection = metrics.collect(ref.sampler(config), net, ref.num_images,
                               {'logits', 'moments', 'features', 'labels'},
                               shuffle_seed=config['seed'] if ref.draw is None else None,
                               progress=rank == 0, description='REF')
  if rank != 0:
    return None
  result = metrics.Reference.from_collection(ref.spec, collection, cache, ref.class_names)
  result.prepare(names)
  if cache is not None:
    print('Cached the features of %s in %s' % (ref, cache.path))
  return result


def report(names, results, source, ref, config):
  """Print the table and return the JSON object."""
  network = config['inception_net']
  policy = iu.resize_policy(network, config['inception_resize'])
  out = {'source': str(source), 'ref': str(ref) if ref else None, 'network': network,
         'resize': policy, 'N': source.num_images, 'N_ref': ref.num_images if ref else None}
  if 'KID' in names:
    out.update(kid_subsets=config['kid_subsets'], kid_subset_size=config['kid_subset_size'])
  print('%s\n%s' % (source, ref or 'no REF'))
  for name in names:
    keys = metrics.METRICS[name].keys
    values = ('%.6g +/- %.3g' % tuple(results[k] for k in keys) if name in ('IS', 'KID') else
              '%.6g' % results[keys[0]] if len(keys) == 1 else
              ', '.join('%s %.6g' % (k, results[k]) for k in keys))
    if name == 'IFID':
      values += ' (mean over %d classes; each in the JSON)' % len(results['IFID_classes'])
    counted = ('%d images' % source.num_images if name == 'IS' else
               '%d vs %d images' % (source.num_images, ref.num_images))
    print('  %-5s %-48s [%s network, %s resize, %s]' % (name, values, network, policy, counted))
  out.update((k, results[k]) for k in metrics.value_keys(names))
  if 'IFID' in names:
    out['IFID_classes'] = results['IFID_classes']
  return out


def write_json(path, obj):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, sort_keys=False)
    f.write('\n')
  os.replace(tmp, path)
  print('Wrote %s' % path)


def run(config, given=()):
  """Scores SOURCE against REF as the flags say; returns the JSON object (on every rank)."""
  config = configuration.update_config_roots(dict(config))
  names = configuration.check_evaluation(config)
  ctx = distributed.setup(config['device'])
  checkpoints.seed_rng(config['seed'])
  source = open_source('SOURCE', config['source'], config, given, ctx.device,
                       config['num_images'], names)
  ref = (open_source('REF', config['ref'], config, given, ctx.device, config['ref_num_images'],
                     names) if config['ref'] else None)
  check(names, source, ref, config)
  net = iu.load_inception_net(config['parallel'], config['inception_net'],
                              config['inception_weights'], ctx.device, config['inception_resize'])
  reference_stats = reference(ref, names, net, config) if ref else None
  results = metrics.measure(names, source.sampler(config), net, source.num_images,
                            reference_stats, config,
                            shuffle_seed=config['seed'] if source.draw is None else None,
                            progress=ctx.is_main, description='SOURCE')
  out = report(names, results, source, ref, config) if ctx.is_main else None
  if ctx.is_main and config['json']:
    write_json(config['json'], out)
  distributed.cleanup(ctx)
  return out


def main(argv=None):
  config = vars(prepare_parser().parse_args(argv))
  return run(config, given_flags(argv))


if __name__ == '__main__':
  errors.run_main(main)
