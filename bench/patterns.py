"""Patterns: procedurally drawn textures, a second kind of small dataset beside Shapes.

    python bench/patterns.py --out data/patterns1000 --num_images 1000 --resolution 32

Eight classes of two-colour patterns (horizontal, vertical and diagonal stripes, checkerboard,
dots, rings, grid, waves) with random colours, frequency, phase and orientation jitter: unlike
Shapes the class is the texture, not the colour, and it fills the whole image. Image i is drawn
from (seed, i), so a folder written with one seed and a classifier trained on another never share
an image. Written as an image folder with one subfolder per class (what train.py --dataset PATH
reads).
"""
import argparse
import colorsys
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import datasets  # noqa: E402
from errors import run_main  # noqa: E402

CLASSES = ('hstripes', 'vstripes', 'dstripes', 'checker', 'dots', 'rings', 'grid', 'waves')


class Patterns(datasets.ImageDataset):
  """Image i of class i % 8, drawn on demand from (seed, i); antialiased at any resolution."""
  kind = 'patterns'

  def __init__(self, resolution=32, num_images=1000, seed=0, **kwargs):
    super().__init__(np.arange(num_images) % len(CLASSES), list(CLASSES), resolution)
    self.seed = seed
    centres = (np.arange(resolution) + 0.5) / resolution
    self._x, self._y = np.meshgrid(centres, centres)

  @classmethod
  def read_class_names(cls, root):
    return list(CLASSES)

  def _field(self, name, r):
    """A signed field whose zero set is the pattern's edge, in units of one period."""
    f = r.uniform(2.5, 5.0)  # periods per image
    phase = r.uniform(0, 2 * np.pi)
    tilt = r.uniform(-0.15, 0.15)
    x, y = self._x - 0.5, self._y - 0.5
    x, y = x * np.cos(tilt) - y * np.sin(tilt), x * np.sin(tilt) + y * np.cos(tilt)
    wave = lambda t: np.sin(2 * np.pi * f * t + phase)  # noqa: E731
    if name == 'hstripes':
      return wave(y)
    if name == 'vstripes':
      return wave(x)
    if name == 'dstripes':
      return wave((x + y * r.choice([-1, 1])) / np.sqrt(2))
    if name == 'checker':
      return wave(x) * np.sin(2 * np.pi * f * y + phase)
    if name == 'dots':
      u, v = (f * x + phase) % 1 - 0.5, (f * y + phase) % 1 - 0.5
      return 0.45 - np.hypot(u, v) * 2
    if name == 'rings':
      cx, cy = r.uniform(-0.25, 0.25, size=2)
      return wave(np.hypot(x - cx, y - cy))
    if name == 'grid':
      u, v = (f * x + phase) % 1 - 0.5, (f * y + phase) % 1 - 0.5
      return np.maximum(0.12 - np.abs(u), 0.12 - np.abs(v)) * 4
    return wave(y + 0.08 * np.sin(2 * np.pi * 2 * x + phase))  # waves

  def read(self, index, rng=None):
    label = int(self.labels[index])
    r = np.random.default_rng([self.seed, index])
    field = self._field(CLASSES[label], r)
    alpha = np.clip(0.5 + field * self.resolution / 8, 0, 1)[None]  # a few pixels of soft edge
    hue = r.uniform(0, 1)
    ink = np.array(colorsys.hsv_to_rgb(hue, r.uniform(0.5, 1), r.uniform(0.6, 1)))
    paper = np.array(colorsys.hsv_to_rgb((hue + r.uniform(0.3, 0.7)) % 1, r.uniform(0, 0.5),
                                         r.uniform(0.1, 0.5)))
    pixels = paper[:, None, None] * (1 - alpha) + ink[:, None, None] * alpha
    pixels = pixels + r.normal(0, 0.02, pixels.shape)
    return np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8), label


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', required=True, help='Folder to write (one subfolder per class)')
  parser.add_argument('--num_images', type=int, default=1000, help='Images (default: 1000)')
  parser.add_argument('--resolution', type=int, default=32, help='Size in px (default: 32)')
  parser.add_argument('--seed', type=int, default=0, help='Seed of the images (default: 0)')
  args = parser.parse_args(argv)
  datasets.write_image_folder(Patterns(args.resolution, args.num_images, args.seed), args.out)
  print('Wrote %d images in %d classes to %s' % (args.num_images, len(CLASSES), args.out))


if __name__ == '__main__':
  run_main(main)
