"""Datasets, samplers and the training data loader.

Which data `--dataset` names (with `--data_root`, default "data"):
  I32, I64, I128, I256, I512   ImageNet class folders in data_root/ImageNet, cropped and resized
  I32_hdf5 ... I512_hdf5       data_root/ILSVRC{res}.hdf5, written by make_hdf5.py
  C10, C100                    CIFAR in data_root/cifar (downloaded when missing and online)
  Shapes                       built in, nothing on disk: 10 classes of drawn shapes (--resolution,
                               default 32)
  PATH                         a folder with one subfolder per class (needs --resolution) or an
                               .hdf5 file written by make_hdf5.py (or the original's)

Every dataset yields (x, y): x float32 3 x H x W in [-1, 1], y an int class index.

    loader = get_data_loaders(**config)[0]   # config = vars(utils.prepare_parser().parse_args())
    info = dataset_info('Shapes', resolution=64)   # resolution, n_classes, tag, stats_name, ...

Order and resuming: the order of epoch e is a permutation seeded by (seed, e), never by the global
torch RNG, and augmentation draws are seeded by (seed, epoch, index), so the data do not depend on
num_workers and a loader built with start_itr=k yields exactly what an uninterrupted one yields
from batch k on. See MultiEpochSampler and EpochSampler.
"""
import colorsys
import os
import pickle
import re
import sys
import zipfile

import h5py
import numpy as np
import torch
import torch.distributed as dist
import torch.utils.data as data
from PIL import Image
from tqdm import tqdm

import errors

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.webp', '.tif', '.tiff')

# ---------------------------------------------------------------------------------------------
# Pixels: one place for decoding, cropping, resizing and scaling to [-1, 1]
# ---------------------------------------------------------------------------------------------


class BadImage(Exception):
  """An image file that cannot be decoded: loaders skip it, never crash on it."""


def report_skip(error):
  print('warning: skipping unreadable image %s' % error, file=sys.stderr, flush=True)


_warned = set()


def warn_once(key, message):
  """A warning printed once per process for a whole class of events (not once per image)."""
  if key not in _warned:
    _warned.add(key)
    print('warning: %s' % message, file=sys.stderr, flush=True)


def to_rgb(img):
  """8-bit RGB from any PIL mode: 16-bit is scaled (PIL would clip it), transparency becomes
  white, grayscale, palette and CMYK are converted."""
  if img.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N'):
    array = np.asarray(img, dtype=np.float64).clip(0, 65535) / 257.0
    img = Image.fromarray(np.round(array).astype(np.uint8), 'L')
  if img.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or 'transparency' in img.info:
    rgba = img.convert('RGBA')
    background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    img = Image.alpha_composite(background, rgba)
  return img.convert('RGB')


def crop_long_edge(img, rng=None):
  """The largest centred square (as torchvision's center_crop rounds it), or a random one along
  the long edge when rng is given (the original's RandomCropLongEdge swapped the axes)."""
  width, height = img.size
  side = min(width, height)
  if rng is None:
    left, top = int(round((width - side) / 2.0)), int(round((height - side) / 2.0))
  else:
    left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
  return img.crop((left, top, left + side, top + side))


class CenterCropLongEdge(object):
  """Torchvision-style transform: the largest centred square of a PIL image."""

  def __call__(self, img):
    return crop_long_edge(img)

  def __repr__(self):
    return self.__class__.__name__


class RandomCropLongEdge(object):
  """Torchvision-style transform: a random square of side min(width, height). Drawn from `rng`
  (a numpy Generator) or else the global numpy stream, so checkpoints.seed_rng repeats it."""

  def __init__(self, rng=None):
    self.rng = rng

  def __call__(self, img):
    rng = self.rng if self.rng is not None else np.random.default_rng(np.random.randint(2 ** 31))
    return crop_long_edge(img, rng)

  def __repr__(self):
    return self.__class__.__name__


def read_image(path, resolution, rng=None):
  """A file as uint8 3 x res x res: long-edge crop, then bilinear resize as the original's
  transforms.Resize did on PIL images. Raises BadImage for unreadable files."""
  try:
    with Image.open(path) as img:
      img = to_rgb(img)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise BadImage('%s: %s' % (path, e))
  img = crop_long_edge(img, rng)
  if img.size[0] < resolution:
    warn_once(('small', resolution), 'some images are smaller than %d px (e.g. %s, %d px): they '
              'are upscaled' % (resolution, path, img.size[0]))
  if img.size[0] != resolution:
    img = img.resize((resolution, resolution), Image.BILINEAR)
  return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def to_float(pixels):
  """uint8 C x H x W -> float32 in [-1, 1] with the original's arithmetic ((x / 255) - 0.5) * 2,
  identical to its ToTensor + Normalize(0.5, 0.5). In numpy: torch would spread this small job
  over its threads, which only costs time here."""
  x = pixels.astype(np.float32)
  x /= 255
  x -= 0.5
  x *= 2
  return torch.from_numpy(x)


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


class ImageDataset(data.Dataset):
  """Base of all datasets: subclasses read uint8 pixels; this adds flips, scaling and skipping.

  An item key is an index, or (index, draw_key) from a sampler with draw_keys set: the random
  augmentation of that item is then seeded by (*draw_key, index) and so is reproducible."""

  def __init__(self, labels, class_names, resolution, augment=False):
    self.labels = np.asarray(labels, dtype=np.int64)
    self.class_names = class_names
    self.resolution = resolution
    self.augment = augment
    self.num_skipped = 0  # unreadable images replaced by a neighbour in this process
    self._rng = np.random.default_rng(0)  # for plain integer keys

  @classmethod
  def read_class_names(cls, root):
    """Class names known without scanning the data (None if unknown)."""
    return None

  def __len__(self):
    return len(self.labels)

  def read(self, index, rng=None):
    """(uint8 3 x H x W, label); rng is set when augmenting. May raise BadImage."""
    raise NotImplementedError

  def sample(self, index, rng=None):
    """read(), but an unreadable image is replaced by the next readable one (and counted)."""
    attempts = min(len(self), 100)
    for attempt in range(attempts):
      try:
        return self.read((index + attempt) % len(self), rng)
      except BadImage as e:
        self.num_skipped += 1
        report_skip(e)
    raise errors.UserError('%d unreadable images in a row from item %d; check the data'
                           % (attempts, index))

  def __getitem__(self, key):
    if isinstance(key, tuple):
      index, draw_key = key
      rng = np.random.default_rng([*draw_key, index]) if self.augment else None
    else:
      index, rng = key, (self._rng if self.augment else None)
    pixels, label = self.sample(index, rng)
    if rng is not None and rng.random() < 0.5:
      pixels = pixels[:, :, ::-1]
    return to_float(pixels), label


def _list_images(folder, stamps=None):
  """Image files below folder (recursively), sorted, relative to it. With a list `stamps`, appends
  (directory, st_mtime_ns) for every directory the walk reads, each stamped before it is
  listed: an image added or removed anywhere below changes one of them."""
  found = []
  if stamps is not None:
    stamps.append((folder, os.stat(folder).st_mtime_ns))
  for root, dirs, files in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    if stamps is not None:  # os.walk lists a directory only when it descends into it
      stamps += [(os.path.join(root, d), os.stat(os.path.join(root, d)).st_mtime_ns)
                 for d in dirs if not os.path.islink(os.path.join(root, d))]
    found += [os.path.relpath(os.path.join(root, name), folder) for name in sorted(files)
              if name.lower().endswith(IMG_EXTENSIONS) and not name.startswith('.')]
  return found


SPLIT_NAMES = ('train', 'training', 'val', 'valid', 'validation', 'test', 'testing')


def find_classes(root):
  """Class subfolder names of an image folder (sorted, hidden ones ignored), checked."""
  if not os.path.isdir(root):
    raise errors.UserError('image folder %s does not exist; check --dataset / --data_root' % root)
  entries = sorted(os.listdir(root))
  classes = [d for d in entries if not d.startswith('.') and os.path.isdir(os.path.join(root, d))]
  if not classes:
    if any(name.lower().endswith(IMG_EXTENSIONS) for name in entries):
      raise errors.UserError('%s holds images but no class subfolders; put the images in one '
                             'subfolder per class (a single subfolder for unlabelled data)' % root)
    raise errors.UserError('%s has no class subfolders with images; point --dataset at a folder '
                           'with one subfolder per class' % root)
  if len(classes) > 1 and all(c.lower() in SPLIT_NAMES for c in classes):
    train = [c for c in classes if c.lower().startswith('train')] or classes
    warn_once(('splits', root), '%s has the subfolders %s, which look like dataset splits, not '
              'classes, yet become %d classes; if each holds one subfolder per class, point '
              '--dataset at %s' % (root, ', '.join(classes), len(classes),
                                   os.path.join(root, train[0])))
  return classes


class ImageFolder(ImageDataset):
  """root/<class>/**/<image>: long-edge crop (centred, or random with augment) + resize + flips.

  The file list is cached in root/.biggan_index_{resolution}.npz, keyed by the absolute root and
  the modification times of every directory the listing read (class folders and their
  subfolders), so adding or removing an image at any depth refreshes it; checking costs one stat
  per directory. With load_in_mem the centre crops are kept in RAM, so augment only flips."""
  kind = 'folder'

  def __init__(self, root, resolution, augment=False, load_in_mem=False, **kwargs):
    self.root = root
    classes, files, labels = self._index(root, resolution)
    super().__init__(labels, classes, resolution, augment)
    self.files = files
    self.memory = None
    if load_in_mem:
      print('Loading %d images of %s into memory...' % (len(files), root))
      memory = np.empty((len(files), 3, resolution, resolution), np.uint8)
      for i in tqdm(range(len(files))):
        memory[i], self.labels[i] = self.sample(i)
      self.memory = memory

  @classmethod
  def read_class_names(cls, root):
    return find_classes(root) if os.path.isdir(root) else None

  @staticmethod
  def _cached_index(cache, root, classes):
    """(files, labels) of a cache that still describes root, else None."""
    try:
      with np.load(cache) as saved:
        if str(saved['root']) != os.path.abspath(root) or list(saved['classes']) != classes:
          return None
        for folder, stamp in zip(saved['dirs'], saved['stamps']):
          if os.stat(os.path.join(root, os.fsdecode(folder))).st_mtime_ns != stamp:
            return None
        return saved['files'], saved['labels']
    except (OSError, KeyError, ValueError):  # missing, older format, or a folder gone
      return None
    except (zipfile.BadZipFile, EOFError) as e:  # cut short (a full disk, a killed run)
      print('warning: the file index %s is damaged (%s); indexing %s again'
            % (cache, errors.reason(e), root), file=sys.stderr, flush=True)
      return None

  @staticmethod
  def _index(root, resolution):
    classes = find_classes(root)
    cache = os.path.join(root, '.biggan_index_%d.npz' % resolution)
    cached = ImageFolder._cached_index(cache, root, classes)
    if cached is not None:
      return (classes,) + cached
    files, labels, stamps = [], [], []
    for label, name in enumerate(tqdm(classes, desc='Indexing %s' % root, leave=False)):
      found = _list_images(os.path.join(root, name), stamps)
      if not found:
        raise errors.UserError('class folder %s has no images (%s); add images or remove the '
                               'folder' % (os.path.join(root, name), ' '.join(IMG_EXTENSIONS)))
      files += [os.path.join(name, f) for f in found]
      labels += [label] * len(found)
    # Bytes, not str: 4x smaller, and one buffer that forked workers share without copying.
    files, labels = np.array([os.fsencode(f) for f in files]), np.array(labels, dtype=np.int64)
    dirs = np.array([os.fsencode(os.path.relpath(d, root)) for d, _ in stamps])
    stamps = np.array([t for _, t in stamps], dtype=np.int64)
    temporary = '%s.%d.tmp.npz' % (cache[:-4], os.getpid())
    try:  # written whole or not at all: several processes may index at once
      np.savez(temporary, root=os.path.abspath(root), classes=np.array(classes), dirs=dirs,
               stamps=stamps, files=files, labels=labels)
      os.replace(temporary, cache)
    except OSError:
      pass  # read-only data: index again next time
    return classes, files, labels

  def path(self, index):
    return os.path.join(self.root, os.fsdecode(self.files[index]))

  def read(self, index, rng=None):
    if self.memory is not None:
      return self.memory[index], int(self.labels[index])
    return read_image(self.path(index), self.resolution, rng), int(self.labels[index])


def inspect_hdf5(path, need_labels=True):
  """Checks an .hdf5 file in the original layout ('imgs' uint8 N x 3 x H x H, 'labels' int N)
  and returns what it knows: n, resolution, labels (or None), n_classes, class_names,
  stats_name. Raises UserError for a foreign or truncated file."""
  redo = 'remake it with make_hdf5.py'
  try:
    with h5py.File(path, 'r') as f:
      if 'imgs' not in f or 'labels' not in f:
        raise errors.UserError('%s has no "imgs" and "labels" datasets, so it is not a dataset '
                               'file; %s' % (path, redo))
      imgs, labels = f['imgs'], f['labels']
      groups = [name for name in ('imgs', 'labels') if not isinstance(f[name], h5py.Dataset)]
      if groups:
        raise errors.UserError('%s: "%s" is an HDF5 group, not a dataset; %s'
                               % (path, '" and "'.join(groups), redo))
      if (imgs.ndim != 4 or imgs.shape[1] != 3 or imgs.shape[2] != imgs.shape[3]
          or imgs.dtype != np.uint8 or labels.ndim != 1 or labels.dtype.kind not in 'iu'
          or len(labels) != len(imgs) or len(imgs) == 0):
        raise errors.UserError('%s: expected "imgs" uint8 N x 3 x H x H and N integer "labels", '
                               'found %s %s and %s %s; %s' % (path, imgs.dtype, imgs.shape,
                                                              labels.dtype, labels.shape, redo))
      imgs[len(imgs) - 1]  # a truncated file fails here
      attrs = dict(f.attrs)
      label_values = labels[:].astype(np.int64) if need_labels or 'n_classes' not in attrs else None
      n, resolution = len(imgs), imgs.shape[-1]  # the data, whatever the attributes say
  except OSError as e:
    raise errors.UserError('%s is not a readable HDF5 file (%s); %s' % (path, e, redo))
  if label_values is not None and label_values.min() < 0:
    raise errors.UserError('%s has negative labels; %s' % (path, redo))
  names = attrs.get('class_names')
  n_classes = int(attrs['n_classes']) if 'n_classes' in attrs else int(label_values.max()) + 1
  if label_values is not None and label_values.max() >= n_classes:
    raise errors.UserError('%s has labels up to %d but n_classes=%d; %s'
                           % (path, label_values.max(), n_classes, redo))
  return {'n': n, 'resolution': int(resolution), 'labels': label_values,
          'n_classes': n_classes, 'class_names': None if names is None else [str(c) for c in names],
          'stats_name': str(attrs['stats_name']) if 'stats_name' in attrs else None}


class ILSVRC_HDF5(ImageDataset):
  """An .hdf5 file from make_hdf5.py. The file is opened lazily once per process, so workers
  each get their own handle; load_in_mem reads all images at start. Augment flips."""
  kind = 'hdf5'

  def __init__(self, root, augment=False, load_in_mem=False, **kwargs):
    meta = inspect_hdf5(root)
    super().__init__(meta['labels'], meta['class_names'], meta['resolution'], augment)
    self.root = root
    self._file, self._imgs, self._pid = None, None, None
    if load_in_mem:
      print('Loading %s into memory...' % root)
      with h5py.File(root, 'r') as f:
        self._imgs = f['imgs'][:]

  @classmethod
  def read_class_names(cls, root):
    return inspect_hdf5(root, need_labels=False)['class_names'] if os.path.isfile(root) else None

  def __getstate__(self):  # h5py handles cannot cross processes
    state = dict(self.__dict__)
    if state['_file'] is not None:
      state['_file'], state['_imgs'], state['_pid'] = None, None, None
    return state

  def read(self, index, rng=None):
    if self._imgs is None or (self._file is not None and self._pid != os.getpid()):
      self._file, self._pid = h5py.File(self.root, 'r'), os.getpid()
      self._imgs = self._file['imgs']
    return self._imgs[index], int(self.labels[index])


class CIFAR10(ImageDataset):
  """CIFAR-10 from root/cifar-10-batches-py (the python pickles), downloaded with torchvision
  when missing. Augment: 4-pixel zero padding, random 32 px crop, flip (as the original)."""
  kind = 'cifar10'
  folder, files, meta, label_key, names_key = (
      'cifar-10-batches-py', ['data_batch_%d' % i for i in range(1, 6)], 'batches.meta',
      'labels', 'label_names')
  url, archive, md5 = ('https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
                       'cifar-10-python.tar.gz', 'c58f30108f718f92721af3b95e74349a')

  def __init__(self, root, augment=False, download=True, **kwargs):
    paths = [os.path.join(root, self.folder, f) for f in self.files]
    if download and not all(map(os.path.exists, paths)):
      self.download(root)
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
      raise errors.UserError('%s needs %s (from %s); download it on a machine with internet and '
                             'extract it into %s' % (type(self).__name__, ', '.join(missing),
                                                     self.url, root))
    images, labels = [], []
    for path in paths:
      with open(path, 'rb') as f:
        entry = pickle.load(f, encoding='latin1')
      images.append(np.asarray(entry['data'], np.uint8).reshape(-1, 3, 32, 32))
      labels += list(entry[self.label_key])
    super().__init__(labels, self.read_class_names(root), 32, augment)
    self.images = np.concatenate(images)

  @classmethod
  def read_class_names(cls, root):
    path = os.path.join(root, cls.folder, cls.meta)
    if not os.path.exists(path):
      return None
    with open(path, 'rb') as f:
      return list(pickle.load(f, encoding='latin1')[cls.names_key])

  @classmethod
  def download(cls, root):
    from torchvision.datasets.utils import download_and_extract_archive
    try:
      download_and_extract_archive(cls.url, root, filename=cls.archive, md5=cls.md5)
    except Exception as e:  # offline, proxy, bad checksum: the caller names the files needed
      print('warning: could not download %s (%s)' % (cls.url, e), file=sys.stderr, flush=True)

  def read(self, index, rng=None):
    pixels = self.images[index]
    if rng is not None:
      padded = np.pad(pixels, ((0, 0), (4, 4), (4, 4)))
      top, left = rng.integers(0, 9, size=2)
      pixels = padded[:, top:top + 32, left:left + 32]
    return pixels, int(self.labels[index])


class CIFAR100(CIFAR10):
  kind = 'cifar100'
  folder, files, meta, label_key, names_key = (
      'cifar-100-python', ['train'], 'meta', 'fine_labels', 'fine_label_names')
  url, archive, md5 = ('https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz',
                       'cifar-100-python.tar.gz', 'eb9058c3a382ffc7106e4002c42a8d85')


class Shapes(ImageDataset):
  """Built-in data that needs no download: class c is a {red, blue}[c // 5] {circle, square,
  triangle, plus, ring}[c % 5] with random size, position, rotation, hue jitter and a random
  gradient background. Image i is drawn on demand from (seed, i), so the set is identical
  everywhere, costs nothing to "make" and is antialiased at any resolution."""
  kind = 'shapes'
  shapes = ('circle', 'square', 'triangle', 'plus', 'ring')
  colours = (('red', 0.0), ('blue', 0.62))

  def __init__(self, resolution=32, augment=False, num_images=10000, seed=0, load_in_mem=False,
               **kwargs):
    names = self.read_class_names(None)
    super().__init__(np.arange(num_images) % len(names), names, resolution, augment)
    self.seed = seed
    # Drawing an image costs about as much as a small model's step spends on it: with load_in_mem
    # each is drawn once, on first use (the same pixels, so the same run), and then kept.
    self._kept = {} if load_in_mem else None
    centres = (np.arange(resolution) + 0.5) / resolution
    self._x, self._y = np.meshgrid(centres, centres)

  @classmethod
  def read_class_names(cls, root):
    return ['%s_%s' % (colour, shape) for colour, _ in cls.colours for shape in cls.shapes]

  def _distance(self, shape, u, v):
    """Signed distance to the shape outline in units of its radius (negative inside)."""
    if shape == 'circle':
      return np.hypot(u, v) - 1
    if shape == 'square':
      return np.maximum(abs(u), abs(v)) - 0.8
    if shape == 'triangle':
      angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
      return np.max([u * np.cos(a) + v * np.sin(a) for a in angles], axis=0) - 0.6
    if shape == 'plus':
      return np.minimum(np.maximum(abs(u) - 1, abs(v) - 0.33),
                        np.maximum(abs(u) - 0.33, abs(v) - 1))
    return abs(np.hypot(u, v) - 0.72) - 0.28  # ring

  def read(self, index, rng=None):
    if self._kept is None:
      return self._draw(index)
    if index not in self._kept:
      self._kept[index] = self._draw(index)
    return self._kept[index]

  def _draw(self, index):
    label = int(self.labels[index])
    r = np.random.default_rng([self.seed, index])
    radius = r.uniform(0.18, 0.38)
    cx, cy = r.uniform(radius, 1 - radius, size=2)
    angle = r.uniform(0, 2 * np.pi)
    du, dv = self._x - cx, self._y - cy
    u = (du * np.cos(angle) + dv * np.sin(angle)) / radius
    v = (dv * np.cos(angle) - du * np.sin(angle)) / radius
    distance = self._distance(self.shapes[label % 5], u, v) * radius * self.resolution  # pixels
    alpha = np.clip(0.5 - distance, 0, 1)[None]
    hue = self.colours[label // 5][1] + r.uniform(-0.04, 0.04)
    colour = np.array(colorsys.hsv_to_rgb(hue % 1, r.uniform(0.75, 1), r.uniform(0.65, 1)))
    hsv = r.uniform((0, 0, 0.15), (1, 0.2, 0.95), size=(2, 3))  # two greyish ends of a gradient
    start, end = [np.array(colorsys.hsv_to_rgb(*c))[:, None, None] for c in hsv]
    g = r.uniform(0, 2 * np.pi)
    ramp = np.clip((self._x - 0.5) * np.cos(g) + (self._y - 0.5) * np.sin(g) + 0.5, 0, 1)[None]
    background = start * (1 - ramp) + end * ramp
    pixels = background * (1 - alpha) + colour[:, None, None] * alpha
    return np.round(pixels * 255).astype(np.uint8), label


def write_image_folder(dataset, root, indices=None, ext='.png', quality=95):
  """Writes dataset images as root/<class name>/<index><ext>, e.g. Shapes as user-style data."""
  names = dataset.class_names or [str(c) for c in range(int(dataset.labels.max()) + 1)]
  for i in range(len(dataset)) if indices is None else indices:
    pixels, label = dataset.read(i)
    folder = os.path.join(root, names[label])
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(pixels.transpose(1, 2, 0)).save(os.path.join(folder, '%06d%s' % (i, ext)),
                                                      quality=quality)


# ---------------------------------------------------------------------------------------------
# Names: the original lookups, and any dataset described by dataset_info()
# ---------------------------------------------------------------------------------------------

_IMAGENET = (32, 64, 128, 256, 512)
dset_dict = {**{'I%d' % r: ImageFolder for r in _IMAGENET},
             **{'I%d_hdf5' % r: ILSVRC_HDF5 for r in _IMAGENET},
             'C10': CIFAR10, 'C100': CIFAR100, 'Shapes': Shapes}
imsize_dict = {**{'I%d%s' % (r, s): r for r in _IMAGENET for s in ('', '_hdf5')},
               'C10': 32, 'C100': 32, 'Shapes': 32}
root_dict = {**{'I%d' % r: 'ImageNet' for r in _IMAGENET},
             **{'I%d_hdf5' % r: 'ILSVRC%d.hdf5' % r for r in _IMAGENET},
             'C10': 'cifar', 'C100': 'cifar', 'Shapes': ''}  # Shapes: nothing on disk
nclass_dict = {**{'I%d%s' % (r, s): 1000 for r in _IMAGENET for s in ('', '_hdf5')},
               'C10': 10, 'C100': 100, 'Shapes': 10}
classes_per_sheet_dict = {**{'I%d%s' % (r, s): 50 if r <= 64 else 20
                             for r in _IMAGENET for s in ('', '_hdf5')},
                          'C10': 10, 'C100': 100, 'Shapes': 10}


def _safe(name):
  return re.sub(r'[^A-Za-z0-9.-]+', '_', name).strip('_.') or 'data'


def _find_path(dataset, data_root):
  for path in (os.path.expanduser(dataset), os.path.join(data_root, dataset)):
    if os.path.exists(path):
      return path
  raise errors.UserError('unknown --dataset %r: use one of %s, or the path of an image folder '
                         '(one subfolder per class) or of an .hdf5 file from make_hdf5.py'
                         % (dataset, ', '.join(sorted(dset_dict))))


def dataset_info(dataset, data_root='data', resolution=0):
  """What the rest of the program needs to know about a dataset, cheaply (no image is read).

  Returns resolution, n_classes, tag (its part of the experiment name), stats_name (its
  Inception-moments name: I128 for I128 and I128_hdf5), class_names (or None),
  classes_per_sheet, kind ('folder', 'hdf5', 'cifar10', 'cifar100', 'shapes') and path."""
  data_root = data_root or 'data'
  if not dataset:
    raise errors.UserError('--dataset is empty; name a dataset (e.g. Shapes) or a path')
  if dataset in dset_dict:
    fixed = dataset != 'Shapes'
    size = imsize_dict[dataset] if fixed or not resolution else resolution
    if resolution and resolution != size:
      raise errors.UserError('--dataset %s is %d px but --resolution is %d; drop --resolution or '
                             'use Shapes or a PATH dataset' % (dataset, size, resolution))
    kind = dset_dict[dataset].kind
    path = os.path.join(data_root, root_dict[dataset]) if fixed else None
    names = dset_dict[dataset].read_class_names(path)
    tag = dataset if fixed else 'Shapes%d' % size
    stats_name = dataset[:-len('_hdf5')] if dataset.endswith('_hdf5') else tag
    return {'resolution': size, 'n_classes': nclass_dict[dataset], 'tag': tag,
            'stats_name': stats_name, 'class_names': names,
            'classes_per_sheet': classes_per_sheet_dict[dataset], 'kind': kind, 'path': path}

  path = _find_path(dataset, data_root)
  stem = os.path.basename(os.path.normpath(path))
  if os.path.isdir(path):
    if resolution <= 0:
      raise errors.UserError('--dataset %s is an image folder: give the image size with '
                             '--resolution, e.g. --resolution 64' % dataset)
    kind, names = 'folder', find_classes(path)
    tag = stats_name = '%s%d' % (_safe(stem), resolution)
  else:
    meta = inspect_hdf5(path, need_labels=False)
    if resolution and resolution != meta['resolution']:
      raise errors.UserError('%s holds %d px images but --resolution is %d; drop --resolution or '
                             'remake the file' % (path, meta['resolution'], resolution))
    kind, names, resolution = 'hdf5', meta['class_names'], meta['resolution']
    stem = _safe(os.path.splitext(stem)[0])
    tag = stem if stem.endswith(str(resolution)) else '%s%d' % (stem, resolution)
    stats_name = meta['stats_name'] or tag
  n_classes = len(names) if kind == 'folder' else meta['n_classes']
  per_sheet = min(n_classes, 50 if resolution <= 64 else 20)
  return {'resolution': resolution, 'n_classes': n_classes, 'tag': tag, 'stats_name': stats_name,
          'class_names': names, 'classes_per_sheet': per_sheet, 'kind': kind, 'path': path}


def open_dataset(dataset, data_root='data', resolution=0, augment=False, load_in_mem=False):
  """The dataset object of a --dataset value; its dataset_info() is attached as .info."""
  info = dataset_info(dataset, data_root, resolution)
  kind, path, size = info['kind'], info['path'], info['resolution']
  if kind == 'folder':
    result = ImageFolder(path, size, augment=augment, load_in_mem=load_in_mem)
  elif kind == 'hdf5':
    if not os.path.exists(path):
      raise errors.UserError('%s does not exist; make it with `python make_hdf5.py --dataset %s '
                             '--data_root %s`' % (path, dataset[:-len('_hdf5')], data_root))
    result = ILSVRC_HDF5(path, augment=augment, load_in_mem=load_in_mem)
  elif kind == 'shapes':
    result = Shapes(size, augment=augment, load_in_mem=load_in_mem)
  else:
    result = dset_dict[dataset](path, augment=augment)
  result.info = info
  return result


# ---------------------------------------------------------------------------------------------
# Samplers: the order of the data, sharded over processes, restartable at any batch
# ---------------------------------------------------------------------------------------------


def _rank_and_world(rank, world_size):
  if rank is None or world_size is None:
    if dist.is_available() and dist.is_initialized():
      return dist.get_rank(), dist.get_world_size()
    return 0, 1
  if not 0 <= rank < world_size:
    raise ValueError('rank %d outside world_size %d' % (rank, world_size))
  return rank, world_size


class _Shards(data.Sampler):
  """The data as a stream of epochs, seen from one process.

  Epoch e is a permutation of the dataset seeded by (seed, e) (the identity without shuffle);
  of W processes, global rank r takes every W-th element starting at r, cut to len // W so that
  all ranks take the same number of steps. Position p of the stream is element p % m of epoch
  p // m (m = epoch_length). With draw_keys, items are (index, (seed, epoch)) so datasets can
  seed augmentation per draw.

  Not the original's sequence: its MultiEpochSampler drew torch.randperm(n) for every epoch from
  the global torch RNG when iteration began (and DataLoader(shuffle=True) seeded RandomSampler
  from it too), so its order depended on everything drawn before (model init, samples) and came
  out different after a resume, which saved no RNG state. No seed reproduces it; an order that
  is a function of (seed, epoch) is what makes resuming exact."""

  def __init__(self, data_source, batch_size, seed=0, shuffle=True, rank=None, world_size=None):
    self.rank, self.world_size = _rank_and_world(rank, world_size)
    self.num_samples = len(data_source)
    self.epoch_length = self.num_samples // self.world_size
    if self.epoch_length == 0:
      raise errors.UserError('%d images are too few for %d processes' % (self.num_samples,
                                                                         self.world_size))
    self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
    self.draw_keys = False
    self._cached = (None, None)

  def order(self, epoch):
    """The indices this rank visits in epoch `epoch`, in order."""
    if self._cached[0] != epoch:
      if self.shuffle:
        full = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
      else:
        full = np.arange(self.num_samples)
      self._cached = (epoch, full[self.rank::self.world_size][:self.epoch_length])
    return self._cached[1]

  def _stream(self, start, stop):
    m = self.epoch_length
    for epoch in range(start // m, (stop + m - 1) // m):
      chunk = self.order(epoch)[max(start - epoch * m, 0):min(stop - epoch * m, m)].tolist()
      if self.draw_keys:
        key = (self.seed, epoch)
        chunk = [(index, key) for index in chunk]
      yield from chunk


class MultiEpochSampler(_Shards):
  """The whole run in one pass: num_epochs epochs as one stream cut into full batches (batches may
  straddle epochs), starting at batch start_itr. Iterating it again repeats the same pass; len()
  is the number of samples left (never negative). The original's arguments come first."""

  def __init__(self, data_source, num_epochs, start_itr=0, batch_size=128, seed=0, rank=None,
               world_size=None):
    super().__init__(data_source, batch_size, seed, True, rank, world_size)
    self.num_epochs = num_epochs
    self.stop = num_epochs * self.epoch_length // batch_size * batch_size
    self.start = min(start_itr * batch_size, self.stop)

  @property
  def num_batches(self):
    """Batches in the whole run, from itr 0."""
    return self.stop // self.batch_size

  def epoch_of(self, itr):
    """The epoch that batch `itr` (counted from 0 over the run) starts in."""
    return itr * self.batch_size // self.epoch_length

  def __iter__(self):
    return self._stream(self.start, self.stop)

  def __len__(self):
    return self.stop - self.start


class EpochSampler(_Shards):
  """One epoch per pass: each pass serves the next epoch (0, 1, 2, ...), so `for epoch: for x in
  loader` sees a fresh order every epoch. start_itr (batches done over all epochs) makes the first
  pass resume mid-epoch at exactly the same sample; set_epoch(epoch, start_batch) picks the next
  pass by hand. len() is the size of the next pass."""

  def __init__(self, data_source, batch_size, shuffle=True, drop_last=True, seed=0, start_itr=0,
               rank=None, world_size=None):
    super().__init__(data_source, batch_size, seed, shuffle, rank, world_size)
    m = self.epoch_length
    self.batches_per_epoch = m // batch_size if drop_last else -(-m // batch_size)
    if self.batches_per_epoch == 0:
      raise errors.UserError('%d images per process are fewer than one batch of %d (train.py\'s '
                             'batch is one iteration\'s images: --batch_size x --num_D_steps x '
                             '--num_D_accumulations); lower those or use more data'
                             % (m, batch_size))
    self.used = min(self.batches_per_epoch * batch_size, m)  # samples per epoch
    self.set_epoch(*divmod(start_itr, self.batches_per_epoch))

  def set_epoch(self, epoch, start_batch=0):
    """The next pass serves epoch `epoch` from its batch `start_batch` on."""
    self.epoch, self.start_batch = epoch, start_batch

  def epoch_of(self, itr):
    return itr // self.batches_per_epoch

  def __iter__(self):
    begin = self.epoch * self.epoch_length
    stream = self._stream(begin + min(self.start_batch * self.batch_size, self.used),
                          begin + self.used)
    self.set_epoch(self.epoch + 1)
    return stream

  def __len__(self):
    return max(self.used - self.start_batch * self.batch_size, 0)


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


def get_data_loaders(dataset, data_root=None, augment=False, batch_size=64, num_workers=8,
                     shuffle=True, load_in_mem=False, hdf5=False, pin_memory=True, drop_last=True,
                     start_itr=0, num_epochs=500, use_multiepoch_sampler=False, resolution=0,
                     seed=0, subset=None, **kwargs):
  """[train_loader] yielding (x float32 B x 3 x H x W in [-1, 1], y int64 B); call it with the
  whole config (unknown keys are ignored). batch_size is per process; under torch.distributed
  each global rank reads its own shard.

  With use_multiepoch_sampler, one pass over the loader is the whole run (MultiEpochSampler);
  otherwise one pass is one epoch and passes advance the epoch (EpochSampler). In both, start_itr
  = batches already trained resumes exactly; loader.sampler.epoch_of(itr) gives the epoch.
  subset(dataset) -> the part to train on, e.g. without a held-out split (glow_fns.training_set)."""
  train_set = open_dataset(dataset, data_root or 'data', resolution, augment, load_in_mem)
  if subset is not None:
    train_set = subset(train_set)
  if use_multiepoch_sampler:
    sampler = MultiEpochSampler(train_set, num_epochs, start_itr, batch_size, seed=seed)
  else:
    sampler = EpochSampler(train_set, batch_size, shuffle, drop_last, seed, start_itr)
  sampler.draw_keys = augment
  print('Data: %s, %d images, %d classes, %d px, %d batches of %d to go (%s, rank %d of %d)'
        % (train_set.info['tag'], len(train_set), train_set.info['n_classes'],
           train_set.info['resolution'], -(-len(sampler) // batch_size), batch_size,
           'whole run' if use_multiepoch_sampler else 'this epoch', sampler.rank,
           sampler.world_size))
  loader = data.DataLoader(
      train_set, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
      pin_memory=pin_memory and torch.cuda.is_available(), drop_last=drop_last,
      generator=torch.Generator().manual_seed(seed),  # worker seeds: not from the global RNG
      persistent_workers=num_workers > 0 and not use_multiepoch_sampler)
  return [loader]
