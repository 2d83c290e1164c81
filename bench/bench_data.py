"""Data pipeline speed, measured in one run on the same images.

Draws Shapes images at --source_size into PNG and JPEG class folders in a temporary directory,
converts the PNG folder with make_hdf5.py at --resolution, then reads shuffled epochs with each
loader (best of two). Prints images/s and ratios against the folder loaders (goal: lazy HDF5 >= 5x
the folder loader at num_workers=0), and make_hdf5's images/s and peak RSS for the dataset and for
4x and 12x as many images (goal: flat memory). torch runs single-threaded, as in DataLoader
workers, so the numbers measure the loaders rather than thread contention on a busy machine. Each
batch goes to --device as in train.py (pinned memory and non-blocking copies on CUDA; the clock
waits for the copies, bench/devices.py).

Usage:
  python bench/bench_data.py                       # 1000 images, 256 px sources, 128 px output
  python bench/bench_data.py --images 4000 --num_workers 2 --device cuda
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import torch

import devices  # puts the project root on sys.path

import datasets  # noqa: E402
import errors  # noqa: E402

ROOT = devices.ROOT


def prepare_parser():
  parser = argparse.ArgumentParser(description='Benchmark the data loaders and make_hdf5.py.',
                                   formatter_class=errors.HelpFormatter)
  add = parser.add_argument
  add('--images', type=int, default=1000, help='Images in the dataset')
  add('--source_size', type=int, default=256,
      help='Size of the drawn source images')
  add('--resolution', type=int, default=128,
      help='Resolution loaded and written to HDF5')
  add('--batch_size', type=int, default=64, help='Loader batch size')
  add('--num_workers', type=int, default=0,
      help='Loader and make_hdf5 worker processes')
  devices.add_device_flag(parser)
  return parser


def images_per_second(dataset, config, **kwargs):
  """The best of two shuffled epochs (the first also warms the OS file cache), every batch moved
  to the device."""
  device = config['device']
  loader = datasets.get_data_loaders(dataset, batch_size=config['batch_size'],
                                     num_workers=config['num_workers'], shuffle=True, **kwargs)[0]
  speeds = []
  for _ in range(2):
    start, count = devices.clock(device), 0
    for x, y in loader:
      x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
      count += len(x)
    speeds.append(count / (devices.clock(device) - start))
  return max(speeds)


def make_hdf5_run(folder, out, config):
  """(images/s, peak RSS in MB) of make_hdf5.py in a fresh process."""
  code = ('import resource, sys, time; sys.path.insert(0, %r); import make_hdf5; '
          'base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; '
          't = time.perf_counter(); make_hdf5.main(sys.argv[1:]); '
          'print(time.perf_counter() - t, base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)'
          % ROOT)
  result = subprocess.run(
      [sys.executable, '-c', code, '--dataset', folder, '--resolution', str(config['resolution']),
       '--out', out, '--num_workers', str(config['num_workers'])],
      capture_output=True, text=True, check=True)
  seconds, base_kb, peak_kb = result.stdout.split()[-3:]
  n = len(datasets.ILSVRC_HDF5(out))
  return n / float(seconds), int(base_kb) / 1024, int(peak_kb) / 1024


def main():
  config = vars(prepare_parser().parse_args())
  torch.set_num_threads(1)
  config['device'] = devices.pick(config['device'])
  print('torch %s; %s' % (torch.__version__, devices.describe(config['device'])))
  res = config['resolution']
  with tempfile.TemporaryDirectory() as tmp:
    print('Drawing %d images of %d px...' % (config['images'], config['source_size']))
    source = datasets.Shapes(config['source_size'], num_images=config['images'])
    png, jpeg = os.path.join(tmp, 'png'), os.path.join(tmp, 'jpeg')
    datasets.write_image_folder(source, png)
    datasets.write_image_folder(source, jpeg, ext='.jpg', quality=90)
    factors = (1, 4, 12)
    runs = [make_hdf5_run(png, os.path.join(tmp, 'png%d.hdf5' % res), config)]
    for factor in factors[1:]:  # the same files hard-linked `factor` times: more images, no work
      big = os.path.join(tmp, 'x%d' % factor)
      for copy in range(factor):
        for name in datasets.find_classes(png):
          os.makedirs(os.path.join(big, name), exist_ok=True)
          for f in os.listdir(os.path.join(png, name)):
            os.link(os.path.join(png, name, f), os.path.join(big, name, '%d_%s' % (copy, f)))
      runs.append(make_hdf5_run(big, os.path.join(tmp, 'x%d.hdf5' % factor), config))
      shutil.rmtree(big)
      os.remove(os.path.join(tmp, 'x%d.hdf5' % factor))
    hdf5 = os.path.join(tmp, 'png%d.hdf5' % res)
    for folder in (png, jpeg):  # index once, outside the timings
      datasets.open_dataset(folder, resolution=res)

    speeds = {
        'hdf5 lazy': images_per_second(hdf5, config),
        'hdf5 in memory': images_per_second(hdf5, config, load_in_mem=True),
        'folder png': images_per_second(png, config, resolution=res),
        'folder jpeg': images_per_second(jpeg, config, resolution=res),
    }
  print('\nLoaders, %d images %d px -> %d px, batch %d, num_workers %d:'
        % (config['images'], config['source_size'], res, config['batch_size'],
           config['num_workers']))
  for name, speed in speeds.items():
    print('  %-16s %9.0f images/s   %6.1fx folder png   %6.1fx folder jpeg'
          % (name, speed, speed / speeds['folder png'], speed / speeds['folder jpeg']))
  print('  lazy HDF5 / slowest folder loader = %.1fx, / fastest = %.1fx (goal >= 5x)'
        % (speeds['hdf5 lazy'] / min(speeds['folder png'], speeds['folder jpeg']),
           speeds['hdf5 lazy'] / max(speeds['folder png'], speeds['folder jpeg'])))
  print('make_hdf5 at %d px, num_workers %d (RSS after imports, peak RSS):'
        % (res, config['num_workers']))
  for factor, (speed, base, peak) in zip(factors, runs):
    print('  %6d images: %7.0f images/s, RSS %5.0f MB -> peak %5.0f MB (+%.0f MB)'
          % (factor * config['images'], speed, base, peak, peak - base))
  growth = [peak - base for _, base, peak in runs]
  print('  peak growth at %dx / %dx the data = %.2f (the written data grew by %.0f MB)'
        % (factors[-1], factors[1], growth[-1] / growth[1],
           (factors[-1] - factors[1]) * config['images'] * 3 * res * res / 2 ** 20))

if __name__ == '__main__':
  main()
