"""Class accuracy of a G's samples on the built-in Shapes classes: a small CNN, trained on real
Shapes images in seconds, labels samples drawn for each class; the accuracy is the fraction that
it labels with the class they were drawn for (1.0: every row of a sheet shows the right colour
and shape; 0.1: chance).

    python shapes_classifier.py --resolution 32                 # train (or load) and report it
    python sample.py [the run's flags] --sample_shapes_accuracy  # score a trained G
    python sample.py --experiment_name EXP --config_from_name --sample_shapes_accuracy

The classifier is trained on Shapes images that training never sees (their own seed), at the
run's resolution, and cached as <data_root>/Shapes<res>_classifier.pth (about 10-20 s to train on
2 CPU cores, then reused). A run can be scored when its classes are the Shapes classes by name:
--dataset Shapes, or an image folder written from Shapes (datasets.write_image_folder: subfolders
red_circle, ..., blue_ring, in any order, or a subset of them).

The same network also gives features for a Frechet distance on data without Inception weights
(`SmallClassifier.features`); bench/bench_small_data.py uses it that way.
"""
import argparse
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import checkpoints
import datasets
import errors
import layers
from errors import UserError, run_main

TRAIN_SEED, HELD_OUT_SEED = 1, 2  # Shapes image seeds; --dataset Shapes is seed 0


# ---------------------------------------------------------------------------------------------
# The network and its training
# ---------------------------------------------------------------------------------------------


def first_stride(resolution):
  """Images under 32 px keep their resolution in the first stage: halved at once, 16 px Shapes
  lose the corners that tell a square from a circle (held-out accuracy 0.963 against 0.995)."""
  return 2 if resolution >= 32 else 1


class SmallClassifier(nn.Module):
  """Five conv-BN-ReLU stages, all but the second with stride 2 (the first too from 32 px up;
  any resolution of 16 px or more), global average pooling and a linear layer: about 100k
  weights. Small and strided because this CPU spends most of a small network's time per layer,
  not per multiply."""

  def __init__(self, n_classes, width=16, resolution=32):
    super(SmallClassifier, self).__init__()
    widths = [3, width, 2 * width, 4 * width, 4 * width, 4 * width]
    strides = [first_stride(resolution), 1, 2, 2, 2]
    self.stages = nn.Sequential(*[
        nn.Sequential(nn.Conv2d(a, b, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(b),
                      nn.ReLU()) for a, b, s in zip(widths[:-1], widths[1:], strides)])
    self.linear = nn.Linear(widths[-1], n_classes)

  def features(self, x):
    """(N, 64) pooled features of images in [-1, 1]."""
    return self.stages(x).mean([2, 3])

  def forward(self, x):
    return self.linear(self.features(x))


def fit(images, labels, n_classes, epochs=8, batch_size=64, lr=1e-2, seed=0, noise=0.05,
        log=print):
  """Train a SmallClassifier on float images in [-1, 1] (N, 3, H, W) and int labels (N,), on
  one thread (its small layers run slower on two: measured 4x the CPU time on 2 cores).
  Gaussian pixel noise of std `noise` makes it tolerant of a G's grain."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    return _fit(images, labels, n_classes, epochs, batch_size, lr, seed, noise, log)
  finally:
    torch.set_num_threads(threads)


def _fit(images, labels, n_classes, epochs, batch_size, lr, seed, noise, log):
  gen = torch.Generator().manual_seed(seed)
  with torch.random.fork_rng():
    torch.manual_seed(seed)
    model = SmallClassifier(n_classes, resolution=images.shape[-1])
  optim = torch.optim.Adam(model.parameters(), lr=lr)
  steps = epochs * (len(images) // batch_size)
  schedule = torch.optim.lr_scheduler.OneCycleLR(optim, lr, total_steps=steps)
  model.train()
  step = 0
  for epoch in range(epochs):
    order = torch.randperm(len(images), generator=gen)
    for start in range(0, len(images) - batch_size + 1, batch_size):
      index = order[start:start + batch_size]
      x = images[index]
      x = x + noise * torch.randn(x.shape, generator=gen)
      if torch.rand((), generator=gen) < 0.5:
        x = x.flip(3)  # every Shapes class is symmetric under a flip
      loss = F.cross_entropy(model(x), labels[index])
      optim.zero_grad(set_to_none=True)
      loss.backward()
      optim.step()
      schedule.step()
      step += 1
    log('  classifier epoch %d/%d: loss %.3f' % (epoch + 1, epochs, float(loss.detach())))
  return model.eval()


@torch.no_grad()
def predict(model, images, batch_size=500):
  """Labels of images in [-1, 1], in batches, on the model's device."""
  device = next(model.parameters()).device
  return torch.cat([model(images[i:i + batch_size].to(device)).argmax(1).cpu()
                    for i in range(0, len(images), batch_size)])


def dataset_images(dataset):
  """(images float32 in [-1, 1], labels) of every image of a dataset with read(i)."""
  pixels = np.stack([dataset.read(i)[0] for i in range(len(dataset))])
  return datasets.to_float(pixels), torch.from_numpy(dataset.labels.copy())


def shapes_images(resolution, count, seed):
  """(images, labels) of `count` Shapes images drawn with `seed`."""
  return dataset_images(datasets.Shapes(resolution, num_images=count, seed=seed))


# ---------------------------------------------------------------------------------------------
# The cached Shapes classifier
# ---------------------------------------------------------------------------------------------


def cache_path(resolution, data_root='data'):
  return os.path.join(data_root or 'data', 'Shapes%d_classifier.pth' % resolution)


def train_shapes_classifier(resolution, num_images=3000, log=print):
  """(model, held-out accuracy): trained on num_images Shapes images, tested on 1000 others."""
  start = time.time()
  images, labels = shapes_images(resolution, num_images, TRAIN_SEED)
  model = fit(images, labels, len(datasets.Shapes.read_class_names(None)), log=log)
  test_images, test_labels = shapes_images(resolution, 1000, HELD_OUT_SEED)
  accuracy = float((predict(model, test_images) == test_labels).float().mean())
  log('Trained the Shapes %d px classifier in %.1f s: held-out accuracy %.3f'
      % (resolution, time.time() - start, accuracy))
  return model, accuracy


def save_cache(model, accuracy, resolution, data_root='data'):
  """Write the cache file load_or_train reads (whole under a temporary name, then renamed); the
  first stage's stride tells a cache of the older network apart."""
  path = cache_path(resolution, data_root)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  torch.save({'model': model.state_dict(), 'accuracy': accuracy, 'resolution': resolution,
              'first_stride': first_stride(resolution)}, path + '.tmp')
  os.replace(path + '.tmp', path)


def load_or_train(resolution, data_root='data', device='cpu', log=print):
  """The Shapes classifier for `resolution` from its cache file, trained and cached if missing."""
  if resolution < 16:
    raise UserError('the Shapes classifier needs images of 16 px or more (got %d)' % resolution)
  path = cache_path(resolution, data_root)
  n_classes = len(datasets.Shapes.read_class_names(None))
  model = SmallClassifier(n_classes, resolution=resolution)
  saved = checkpoints.safe_load(path) if os.path.exists(path) else None
  if saved is not None and saved.get('first_stride', 2) != first_stride(resolution):
    log('Shapes classifier: %s is of an older network; training a new one' % path)
    saved = None
  if saved is not None:
    model.load_state_dict(saved['model'])
    log('Shapes classifier: %s (held-out accuracy %.3f)' % (path, saved['accuracy']))
  else:
    trained, accuracy = train_shapes_classifier(resolution, log=log)
    model.load_state_dict(trained.state_dict())
    try:
      save_cache(model, accuracy, resolution, data_root)
      log('Cached it in %s' % path)
    except OSError as e:
      log('Notice: could not cache the classifier in %s (%s); it is retrained next time'
          % (path, e.strerror or e))
  return model.to(device).eval()


def shapes_labels(class_names, n_classes):
  """The Shapes label of each of a run's classes, matched by name; a UserError when the run's
  classes are not Shapes classes (checked before any slow work)."""
  shapes = datasets.Shapes.read_class_names(None)
  names = list(class_names or [])
  if len(names) != n_classes or not set(names) <= set(shapes):
    raise UserError('class accuracy needs the Shapes classes (%s); this run\'s classes are %s: '
                    'use --dataset Shapes or a folder written from Shapes'
                    % (', '.join(shapes), ', '.join(map(str, names)) or 'unnamed'))
  return torch.tensor([shapes.index(name) for name in names])


# ---------------------------------------------------------------------------------------------
# Scoring a G
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_classes(G, n_classes, per_class, draw=None, seed=0, batch_size=100):
  """(images on the CPU, the class each was drawn for): per_class samples of every class, from
  G as it is (train or eval mode), with z from draw(n, generator) (default N(0, 1)) and a
  generator of its own (the global random stream is untouched)."""
  device = next(G.parameters()).device
  gen = torch.Generator(device).manual_seed(seed)
  if draw is None:
    def draw(n, generator):
      return torch.randn(n, G.dim_z, device=device, generator=generator)
  y = torch.arange(n_classes, device=device).repeat_interleave(per_class)
  images = []
  with layers.local_batch_statistics():
    for start in range(0, len(y), batch_size):
      part = y[start:start + batch_size]
      images.append(G(draw(len(part), gen), G.shared(part)).float().cpu())
  return torch.cat(images), y.cpu()


def class_accuracy(G, classifier, labels, per_class=100, draw=None, seed=0):
  """{'accuracy': overall, 'per_class': [per class]} of G's samples: labels[c] is the Shapes
  label that class c of the run must be given."""
  images, y = sample_classes(G, len(labels), per_class, draw, seed)
  hits = (predict(classifier, images) == labels[y]).float()
  per = hits.view(len(labels), per_class).mean(1)
  return {'accuracy': float(hits.mean()), 'per_class': [float(a) for a in per]}


def describe(result, class_names):
  """One line: the accuracy and its worst classes."""
  worst = sorted(zip(result['per_class'], class_names))[:3]
  return 'class accuracy %.3f (lowest: %s)' % (
      result['accuracy'], ', '.join('%s %.2f' % (name, a) for a, name in worst))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=errors.DocHelpFormatter)
  parser.add_argument('--resolution', type=int, default=32,
                      help='Image size of the Shapes classifier')
  parser.add_argument('--data_root', type=str, default='data',
                      help='Folder of the cache file Shapes<res>_classifier.pth')
  parser.add_argument('--retrain', action='store_true',
                      help='Train again even when the cache file exists')
  args = parser.parse_args(argv)
  if args.retrain and os.path.exists(cache_path(args.resolution, args.data_root)):
    os.remove(cache_path(args.resolution, args.data_root))
  load_or_train(args.resolution, args.data_root)


if __name__ == '__main__':
  run_main(main)
