"""Convert an image dataset into one HDF5 file for fast loading.

The file has the original's layout, so files made by either tool load in the other: 'imgs' uint8
N x 3 x H x W chunked (chunk_size, 3, H, W), 'labels' int64 N; plus attributes resolution,
n_classes, class_names, crop, stats_name, source and skipped. Images are long-edge centre crops,
resized; unreadable images are skipped and counted. The file is written under a temporary name
and renamed when complete, so an interrupted run (SIGTERM included) never leaves a file that looks
finished, nor a temporary one; an existing file is replaced only with --overwrite.

Usage:
  python make_hdf5.py --dataset I128 --data_root data        # data/ImageNet -> data/ILSVRC128.hdf5
  python make_hdf5.py --dataset ~/flowers --resolution 64    # -> ~/flowers64.hdf5
  python make_hdf5.py --dataset Shapes --resolution 32       # -> data/Shapes32.hdf5
then train with --dataset I128_hdf5, or --dataset PATH/TO/FILE.hdf5.
"""
import os

import h5py
import numpy as np
import torch.utils.data as data
from tqdm import tqdm

import config as configuration
import datasets
import errors


def prepare_parser():
  parser = errors.ArgumentParser(description='Convert an image dataset to an HDF5 file.')
  add = parser.add_argument
  add('--dataset', type=str, default='I128',
      help='What to convert: I32 ... I512 (data_root/ImageNet), C10, C100, Shapes, or a PATH to a '
           'folder with one subfolder per class')
  add('--data_root', type=str, default='data',
      help='Where the data lives and ILSVRC{res}.hdf5 is written')
  add('--resolution', type=int, default=0,
      help='(new) Image size for a folder PATH or Shapes; 0 derives it from the dataset')
  add('--out', type=str, default='',
      help='(new) Output file; default data_root/ILSVRC{res}.hdf5 for I*, PATH{res}.hdf5 next to a '
           'folder, data_root/{name}.hdf5 otherwise')
  add('--batch_size', type=int, default=256,
      help='Images read per step')
  add('--num_workers', type=int, default=16,
      help='Number of image decoding worker processes')
  add('--chunk_size', type=int, default=500,
      help='Images per HDF5 chunk')
  add('--compression', action='store_true', default=False,
      help='Compress with LZF: a little smaller, much slower to read')
  add('--overwrite', action='store_true', default=False,
      help='(new) Replace an existing --out file (without it an existing file is never touched)')
  return parser


def default_out(dataset, info, data_root):
  if dataset in datasets.dset_dict and dataset.startswith('I'):
    return os.path.join(data_root, 'ILSVRC%d.hdf5' % info['resolution'])
  if dataset in datasets.dset_dict:
    return os.path.join(data_root, '%s.hdf5' % info['tag'])
  return os.path.normpath(info['path']) + '%d.hdf5' % info['resolution']


class _Readable(data.Dataset):
  """Items as (uint8 pixels or None for an unreadable image, label)."""

  def __init__(self, dataset):
    self.dataset = dataset

  def __len__(self):
    return len(self.dataset)

  def __getitem__(self, index):
    try:
      return self.dataset.read(index)
    except datasets.BadImage as e:
      datasets.report_skip(e)
      return None, -1


def _collate(items):
  good = [(pixels, label) for pixels, label in items if pixels is not None]
  images = np.stack([p for p, _ in good]) if good else None
  return images, np.array([label for _, label in good], np.int64), len(items) - len(good)


class _Appender:
  """Appends to 'imgs' and 'labels' one whole chunk at a time: aligned writes bypass HDF5's chunk
  cache (nothing read back or recompressed) and memory stays at one chunk."""

  def __init__(self, f, chunk, compression):
    size = chunk[1:]
    self.imgs = f.create_dataset('imgs', (0,) + size, dtype='uint8', chunks=chunk,
                                 maxshape=(None,) + size, compression=compression)
    self.labels = f.create_dataset('labels', (0,), dtype='int64', chunks=chunk[:1],
                                   maxshape=(None,), compression=compression)
    self.buffer, self.buffer_labels = np.empty(chunk, np.uint8), np.empty(chunk[0], np.int64)
    self.filled = self.written = 0

  def add(self, images, labels):
    while len(images):
      take = min(len(images), len(self.buffer) - self.filled)
      self.buffer[self.filled:self.filled + take] = images[:take]
      self.buffer_labels[self.filled:self.filled + take] = labels[:take]
      self.filled += take
      images, labels = images[take:], labels[take:]
      if self.filled == len(self.buffer):
        self.flush()

  def flush(self):
    end = self.written + self.filled
    self.imgs.resize(end, axis=0)
    self.imgs[self.written:end] = self.buffer[:self.filled]
    self.labels.resize(end, axis=0)
    self.labels[self.written:end] = self.buffer_labels[:self.filled]
    self.written, self.filled = end, 0


def check_out(out, overwrite=False):
  """An existing --out is replaced only when asked (the original wrote over anything there)."""
  if os.path.isfile(out) and not overwrite:
    try:
      what = 'an HDF5 dataset of %d images' % datasets.inspect_hdf5(out, need_labels=False)['n']
    except errors.UserError:
      what = 'not an HDF5 dataset'
    raise errors.UserError('--out %s already exists (%s); choose another --out, or pass '
                           '--overwrite to replace it' % (out, what))


def write_hdf5(dataset, out, batch_size=256, num_workers=16, chunk_size=500, compression=False,
               source=''):
  """Writes `dataset` (an ImageDataset with .info) to `out` in order; returns (written, skipped).
  Memory stays at a few batches and one chunk, whatever the dataset size."""
  info, size, n = dataset.info, dataset.resolution, len(dataset)
  if chunk_size < 1 or batch_size < 1 or num_workers < 0:
    raise errors.UserError('--chunk_size %d --batch_size %d --num_workers %d: sizes must be at '
                           'least 1 and workers at least 0 (0 reads in this process)'
                           % (chunk_size, batch_size, num_workers))
  if os.path.isdir(out):
    raise errors.UserError('--out %s is a folder; give a file name, e.g. %s'
                           % (out, os.path.join(out, '%s.hdf5' % info['tag'])))
  folder = os.path.dirname(os.path.abspath(out))
  configuration.check_writable_folder(folder, 'the folder of --out %s' % out, '--out')
  os.makedirs(folder, exist_ok=True)
  temporary = '%s.incomplete-%d' % (out, os.getpid())
  loader = data.DataLoader(_Readable(dataset), batch_size=batch_size, shuffle=False,
                           num_workers=num_workers, collate_fn=_collate)
  skipped = 0
  try:
    with h5py.File(temporary, 'w') as f:
      appender = _Appender(f, (min(chunk_size, n), 3, size, size), 'lzf' if compression else None)
      for images, labels, bad in tqdm(loader, desc='Writing %s' % out, unit='batch'):
        skipped += bad
        if images is not None:
          appender.add(images, labels)
      appender.flush()
      if appender.written == 0:
        raise errors.UserError('no readable image in %s (see the warnings above); nothing '
                               'written: fix or replace the images' % source)
      f.attrs['resolution'] = size
      f.attrs['n_classes'] = info['n_classes']
      if info['class_names'] is not None:
        f.attrs['class_names'] = np.array(info['class_names'], dtype=h5py.string_dtype())
      f.attrs['crop'] = 'center_long_edge' if info['kind'] == 'folder' else 'none'
      f.attrs['stats_name'] = info['stats_name']
      f.attrs['source'] = source
      f.attrs['skipped'] = skipped
    os.replace(temporary, out)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)
  return appender.written, skipped


def run(config):
  dataset = config['dataset']
  if dataset.endswith('_hdf5'):
    raise errors.UserError('--dataset %s is already HDF5; give the image dataset it is made from, '
                           '%s' % (dataset, dataset[:-len('_hdf5')]))
  info = datasets.dataset_info(dataset, config['data_root'], config['resolution'])
  if info['kind'] == 'hdf5':
    raise errors.UserError('--dataset %s is already an HDF5 file' % dataset)
  out = config['out'] or default_out(dataset, info, config['data_root'])
  check_out(out, config['overwrite'])  # before the folder is indexed
  source = datasets.open_dataset(dataset, config['data_root'], config['resolution'])
  print('Writing %d images of %s at %d px to %s (chunks of %d, compression %s)...'
        % (len(source), dataset, source.resolution, out, config['chunk_size'],
           'lzf' if config['compression'] else 'none'))
  written, skipped = write_hdf5(source, out, config['batch_size'], config['num_workers'],
                                config['chunk_size'], config['compression'], source=dataset)
  print('Wrote %d images to %s%s' % (written, out,
                                      ', skipped %d unreadable' % skipped if skipped else ''))
  return out


def main(argv=None):
  config = vars(prepare_parser().parse_args(argv))
  with errors.sigterm_exits('make_hdf5.py: stopped by SIGTERM; the output was not written'):
    return run(config)


if __name__ == '__main__':
  errors.run_main(main)
