"""Speed and memory of the metric arithmetic (metrics.py) and of evaluate.py end to end.

Part 1 scores synthetic Inception-like features (d = 2048, float32: ReLU of correlated Gaussians,
10 classes; SOURCE shifted from REF) with all six metrics (IS, FID, KID 100 x 1000, PR, DC, IFID)
in one metrics.compute call, for each --sizes N (SOURCE and REF of N each), in a fresh process
per run, printing wall time per metric, the process's CPU time (both threads; on a machine that
others load too, CPU / 2 is what 2 free cores would take) and the peak RSS of the process
(features included):
  moments  the float64 sums that FID needs, accumulated while the Inception pass streams by
           (per set; not part of the metrics' own time)
  cold     a first evaluate.py run on REF: REF's k-NN distances and per-class moments computed
           and cached, then the metrics
  warm     REF from its cache (train.py monitoring, later evaluate.py runs): the metrics alone
Goal: N = 50k in under 60 s and 2 GB on this 2-core CPU.

Part 2, the reference measured in the same run: a straightforward implementation (full float64
distance matrices with scipy's cdist and np.partition for the k-NN, as the PR and DC authors'
code; KID with numpy on the same subsets) against metrics.py at --naive_size, with the largest
difference between their values.

Part 3 runs evaluate.py on --evaluate_images Shapes images against as many others (two .npz
files, the TF network with random weights, all metrics) and prints its wall time, first run
(REF's pass and cache) and second (REF cached). Inception dominates: 0.56-0.59 s per image on
the 2-core AMD EPYC at a load average of about 4 (2026-12-07, 500 vs 500). 2000 vs 2000, one
thread pinned to one core (OMP_NUM_THREADS=1 taskset -c 0) while other jobs used the other
(2026-12-07): 2060 s first run, 899 s second.

Usage:
  python bench/bench_metrics.py                          # all parts
  python bench/bench_metrics.py --parts 1,2 --sizes 10000
  python bench/bench_metrics.py --parts 3 --evaluate_images 200    # a shorter part 3
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.spatial.distance
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import devices  # noqa: E402
import errors  # noqa: E402
import inception_utils  # noqa: E402
import metrics  # noqa: E402

NAMES = list(metrics.METRICS)
DIM, CLASSES = 2048, 10
CONFIG = {'kid_subsets': 100, 'kid_subset_size': 1000}


def prepare_parser():
  parser = argparse.ArgumentParser(description='Benchmark the metric arithmetic and evaluate.py.',
                                   formatter_class=errors.HelpFormatter)
  add = parser.add_argument
  add('--sizes', type=str, default='10000,50000',
      help='Images per set for part 1, comma-separated')
  add('--naive_size', type=int, default=4000,
      help='Images per set for part 2, the straightforward reference')
  add('--evaluate_images', type=int, default=2000,
      help='Shapes images per set for part 3')
  add('--parts', type=str, default='1,2,3',
      help='Which parts to run, comma-separated')
  add('--child', type=str, default='',
      help='Internal: run one part-1 measurement, SIZE:MODE:CACHE_FILE')
  devices.add_device_flag(parser)
  return parser


def features(n, seed, shift):
  """n x DIM float32 features and their labels, built in chunks (no n x DIM temporaries)."""
  g = torch.Generator().manual_seed(1000)  # one mixing for both sets
  mix = torch.randn(DIM, DIM, generator=g) * torch.logspace(0, -1.5, DIM).unsqueeze(0) / 8
  centres = torch.randn(CLASSES, DIM, generator=g) * 0.05
  g.manual_seed(seed)
  out, labels = torch.empty(n, DIM), torch.arange(n) % CLASSES
  for i in range(0, n, 4096):
    z = torch.randn(min(4096, n - i), DIM, generator=g)
    out[i:i + len(z)] = (z @ mix + 0.2 + shift + centres[labels[i:i + len(z)]]).relu_()
  return out, labels


def streamed_moments(x, logits=False):
  """InceptionStats of x as the Inception pass builds them, in batches of 500."""
  stats = inception_utils.InceptionStats(len(x))
  g = torch.Generator().manual_seed(7)
  for i in range(0, len(x), 500):
    part = x[i:i + 500]
    stats.update(part, torch.randn(len(part), 1008, generator=g) * 3 if logits else None)
  return stats


class Clock(object):
  """Wall and CPU seconds of the named steps timed with `with clock(name):`, each read once the
  device has finished the step's work."""

  def __init__(self, device='cpu'):
    self.wall, self.cpu, self.device = {}, {}, device

  def __call__(self, name):
    clock = self

    class Step(object):
      def __enter__(self):
        self.start = devices.clock(clock.device), time.process_time()

      def __exit__(self, *exc):
        clock.wall[name] = devices.clock(clock.device) - self.start[0]
        clock.cpu[name] = time.process_time() - self.start[1]
    return Step()


def child(spec, device):
  """One part-1 run in this process; prints one JSON line."""
  import warnings
  warnings.simplefilter('ignore', RuntimeWarning)  # few images per class for IFID
  size, mode, cache_file = spec.split(':')
  n = int(size)
  fake, fake_labels = [t.to(device) for t in features(n, 1, 0.05)]
  real, real_labels = [t.to(device) for t in features(n, 2, 0.0)]
  clock = Clock(device)
  devices.reset_peak(device)
  with clock('moments'):
    source_stats = streamed_moments(fake, logits=True)
  cache = metrics.ReferenceCache(cache_file, {'bench': n})
  if mode == 'cold':
    ref = metrics.Reference('REF', n, streamed_moments(real).moments(), real, real_labels, cache)
    with clock('REF k-NN + class moments + cache'):
      ref.prepare(NAMES)
  else:
    ref = metrics.Reference('REF', n, cache=cache)
  del real
  for name, metric in list(metrics.METRICS.items()):
    def timed(*args, fn=metric.fn, name=name):
      with clock(name):
        return fn(*args)
    metrics.METRICS[name] = metric._replace(fn=timed)
  with clock('metrics'):
    results = metrics.compute(NAMES, metrics.Collection(source_stats, fake, fake_labels), ref,
                              CONFIG)
  results.pop('IFID_classes')
  print(json.dumps({'wall': clock.wall, 'cpu': clock.cpu, 'results': results,
                    'peak_mb': devices.peak_mib(device)}))


def run_child(spec, device):
  out = subprocess.run([sys.executable, os.path.abspath(__file__), '--child', spec, '--device',
                        device],
                       capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(out.stderr[-3000:])
  return json.loads(out.stdout.strip().splitlines()[-1])


def part1(sizes, device):
  print('Part 1: all metrics on synthetic d = %d features (%d threads), %s' % (
      DIM, torch.get_num_threads(), devices.describe(device)))
  with tempfile.TemporaryDirectory() as tmp:
    for n in sizes:
      cache = os.path.join(tmp, 'ref_%d.npz' % n)
      for mode in ('cold', 'warm'):
        r = run_child('%d:%s:%s' % (n, mode, cache), device)
        wall, cpu = r['wall'], r['cpu']
        steps = [k for k in wall if k not in ('moments', 'metrics')]
        total = [sum(t[k] for k in steps) for t in (wall, cpu)]
        print('  N = %6d %-4s %7.1f s wall, %7.1f s CPU, peak %s %5.0f MB (goal at 50k: 60 s, '
              '2048 MB)' % (n, mode, total[0], total[1],
                            'CUDA memory' if devices.is_cuda(device) else 'RSS', r['peak_mb']))
        print('    %s; the moments in each pass %.1f s (%.1f s CPU)' % (
            ', '.join('%s %.1f s (%.1f)' % (k, wall[k], cpu[k]) for k in steps),
            wall['moments'], cpu['moments']))
        print('    values: %s' % ', '.join('%s %.5g' % kv for kv in r['results'].items()))


def naive(fake, real, subsets, subset_size):
  """KID, PR and DC the straightforward way: full float64 matrices, np.partition k-NN."""
  fake, real = fake.astype(np.float64), real.astype(np.float64)
  rng = np.random.RandomState(metrics.KID_SEED)
  mmds = []
  for _ in range(subsets):
    x = fake[rng.choice(len(fake), subset_size, replace=False)]
    y = real[rng.choice(len(real), subset_size, replace=False)]
    kxx, kyy = (x @ x.T / DIM + 1) ** 3, (y @ y.T / DIM + 1) ** 3
    kxy = (x @ y.T / DIM + 1) ** 3
    m = subset_size
    mmds.append(((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1))
                - 2 * kxy.sum() / m ** 2)
  real_d = scipy.spatial.distance.cdist(real, real)
  fake_d = scipy.spatial.distance.cdist(fake, fake)
  cross = scipy.spatial.distance.cdist(fake, real)
  r3 = np.partition(real_d, 3, axis=1)[:, 3]
  r5 = np.partition(real_d, 5, axis=1)[:, 5]
  f3 = np.partition(fake_d, 3, axis=1)[:, 3]
  return {'KID_mean': np.mean(mmds), 'KID_std': np.std(mmds),
          'precision': (cross <= r3[None]).any(1).mean(),
          'recall': (cross <= f3[:, None]).any(0).mean(),
          'density': (cross < r5[None]).sum() / (5. * len(fake)),
          'coverage': (cross.min(0) < r5).mean()}


def part2(n, device):
  print('Part 2: metrics.py against a straightforward implementation (on the CPU), N = %d, '
        'metrics.py on %s' % (n, devices.describe(device)))
  fake, labels = features(n, 1, 0.05)
  real, _ = features(n, 2, 0.0)
  size = min(CONFIG['kid_subset_size'], n)
  start = time.perf_counter()
  reference = naive(fake.numpy(), real.numpy(), CONFIG['kid_subsets'], size)
  naive_s = time.perf_counter() - start
  fake, real, labels = fake.to(device), real.to(device), labels.to(device)
  start = devices.clock(device)
  ref = metrics.Reference('REF', n, features=real, labels=labels)
  ours = metrics.compute(['KID', 'PR', 'DC'], metrics.Collection(None, fake, labels), ref,
                         dict(CONFIG, kid_subset_size=size))
  ours_s = devices.clock(device) - start
  difference = max(abs(ours[k] - reference[k]) / max(abs(reference[k]), 1e-6)
                   for k in reference)  # KID_std is ~0 when the subsets hold every image
  print('  straightforward %.1f s (3 full %d x %d float64 matrices: %.0f MB), metrics.py %.1f s '
        '(%.1fx faster); largest relative difference of the values %.1e'
        % (naive_s, n, n, 3 * n * n * 8 / 2 ** 20, ours_s, naive_s / ours_s, difference))


def part3(count, device):
  import datasets
  print('Part 3: evaluate.py, %d Shapes images vs %d others (TF network, random weights)'
        % (count, count))
  with tempfile.TemporaryDirectory() as tmp:
    shapes = datasets.Shapes(32, num_images=2 * count)
    for name, part in (('source', range(count)), ('ref', range(count, 2 * count))):
      np.savez(os.path.join(tmp, name + '.npz'), x=np.stack([shapes.read(i)[0] for i in part]),
               y=shapes.labels[list(part)])
    weights = os.path.join(tmp, 'tf.pth')
    inception_utils.save_random_weights('tf', weights)
    argv = [sys.executable, os.path.join(ROOT, 'evaluate.py'), os.path.join(tmp, 'source.npz'),
            '--ref', os.path.join(tmp, 'ref.npz'), '--metrics', ','.join(NAMES),
            '--inception_net', 'tf', '--inception_weights', weights, '--num_workers', '0',
            '--kid_subset_size', str(min(1000, count)), '--json', os.path.join(tmp, 'out.json'),
            '--device', device]
    for label in ('first run (REF pass, cached)', 'second run (REF from the cache)'):
      start = time.perf_counter()
      out = subprocess.run(argv, capture_output=True, text=True)
      if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
      print('  %s: %.0f s' % (label, time.perf_counter() - start))
    print('  ' + '\n  '.join(out.stdout.strip().splitlines()[-len(NAMES):]))


def main():
  config = vars(prepare_parser().parse_args())
  device = str(devices.pick(config['device']))
  if config['child']:
    return child(config['child'], device)
  parts = config['parts'].split(',')
  if '1' in parts:
    part1([int(s) for s in config['sizes'].split(',') if s], device)
  if '2' in parts:
    part2(config['naive_size'], device)
  if '3' in parts:
    part3(config['evaluate_images'], device)


if __name__ == '__main__':
  main()
