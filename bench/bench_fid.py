"""FID speed and accuracy at d = 2048, and peak memory of calculate_inception_moments.py.

Part 1 builds the covariances of two sets of real-looking features (ReLU of random projections
with a decaying spectrum, --samples each, full rank) and times, best of two calls each:
  new     inception_utils.numpy_calculate_frechet_distance (pivoted Cholesky + eigvalsh, float64)
  sqrtm   the original's numpy FID: scipy.linalg.sqrtm(sigma1 @ sigma2), float64
  NS      the original's torch FID: 50 Newton-Schulz iterations on sigma1 @ sigma2, float32
Errors are relative to a float64 reference, tr sqrt(S1^1/2 S2 S1^1/2) by symmetric
eigendecompositions. Goal: new >= 10x faster than both, relative error <= 1e-9.

Part 2 runs calculate_inception_moments.py (TF network, random weights, 32 px image folders) on
two dataset sizes in fresh processes and prints their peak RSS and their median RSS (sampled every
0.5 s, Linux). Goal: flat (the original kept all activations, growing by (2048 + 1000) x 4 bytes
per image). The resident size swings by a few hundred MB from batch to batch (the allocator
returning the network's activations), so the peak moves by chance: measured 2026-12-02, two runs
of 200 vs 2000 images gave peak ratios 1.057 and 0.971, and median RSS 1122 vs 1125 MB (1.002);
through a 2000-image run the RSS stayed between 1070 and 1650 MB with no upward trend. d = 2048
FID on the same machine: new 0.80 s, sqrtm 11.6 s (14.5x), NS 9.3 s (11.7x), error 2.1e-16.

Usage:
  python bench/bench_fid.py                        # both parts
  python bench/bench_fid.py --skip_memory          # FID only
  python bench/bench_fid.py --sizes 100,800        # dataset sizes for part 2 (default 200,2000)
  python bench/bench_fid.py --device cuda          # Newton-Schulz and the moments script on CUDA

--device (auto: CUDA when present) runs the float32 Newton-Schulz FID (a device method) and the
moments script there; the float64 methods are host code. Clock reads wait for the device
(bench/devices.py).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import scipy.linalg
import torch

import devices  # puts the project root on sys.path

import errors  # noqa: E402
import inception_utils  # noqa: E402

ROOT = devices.ROOT


def prepare_parser():
  parser = argparse.ArgumentParser(description='Benchmark FID and the moments script.',
                                   formatter_class=errors.HelpFormatter)
  add = parser.add_argument
  add('--dim', type=int, default=2048, help='Feature dimension')
  add('--samples', type=int, default=10000,
      help='Samples per feature set for the covariances')
  add('--sizes', type=str, default='200,2000',
      help='Two dataset sizes for the memory runs, comma-separated')
  add('--skip_memory', action='store_true', default=False,
      help='Only time the FID methods')
  devices.add_device_flag(parser)
  return parser


def best_of_two(fn, device='cpu'):
  """(seconds of the faster of two calls, result)."""
  times, result = [], None
  for _ in range(2):
    start = devices.clock(device)
    result = fn()
    times.append(devices.clock(device) - start)
  return min(times), result


def feature_moments(rng, d, n, shift):
  """Mean and covariance of ReLU(z A + b): correlated and non-negative, like pool features."""
  q, _ = np.linalg.qr(rng.standard_normal((d, d)))
  a = q * np.geomspace(1., 0.01, d)
  x = np.maximum(rng.standard_normal((n, d)) @ a.T + shift + 0.1 * rng.standard_normal(d), 0)
  return x.mean(0), np.cov(x, rowvar=False)


def fid_with(mu1, s1, mu2, s2, trace_sqrt):
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


def bench_fid(config):
  rng = np.random.default_rng(0)
  d = config['dim']
  mu1, s1 = feature_moments(rng, d, config['samples'], 0.05)
  mu2, s2 = feature_moments(rng, d, config['samples'], 0.0)
  w, v = np.linalg.eigh(s1)
  root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  eig = np.linalg.eigvalsh(root @ s2 @ root)
  reference = fid_with(mu1, s1, mu2, s2, np.sqrt(np.clip(eig, 0, None)).sum())

  def sqrtm_fid():
    return fid_with(mu1, s1, mu2, s2, np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)

  device = config['device']
  t1, t2 = (torch.tensor(s, dtype=torch.float32, device=device) for s in (s1, s2))

  def newton_schulz_fid():
    root = inception_utils.sqrt_newton_schulz((t1 @ t2).unsqueeze(0), 50)[0]
    return fid_with(mu1, s1, mu2, s2, float(torch.trace(root)))

  runs = [('new (pivoted Cholesky, float64)',
           lambda: inception_utils.numpy_calculate_frechet_distance(mu1, s1, mu2, s2)),
          ('scipy.linalg.sqrtm (float64)', sqrtm_fid),
          ('50 Newton-Schulz iterations (float32, %s)' % device, newton_schulz_fid)]
  print('FID at d = %d from %d samples per set; reference FID %.10g (%d threads)'
        % (d, config['samples'], reference, torch.get_num_threads()))
  results = []
  for name, fn in runs:
    seconds, fid = best_of_two(fn, device)
    results.append((name, seconds, fid))
  new_seconds = results[0][1]
  for name, seconds, fid in results:
    print('  %-40s %8.3f s  %6.1fx the new time  FID %.10g  rel. error %.1e'
          % (name, seconds, seconds / new_seconds, fid, abs(fid - reference) / abs(reference)))
  speedup = min(seconds for _, seconds, _ in results[1:]) / new_seconds
  error = abs(results[0][2] - reference) / abs(reference)
  print('  new is %.1fx faster than the faster old method (goal >= 10x): %s; error %.1e (goal <= '
        '1e-9): %s' % (speedup, 'ok' if speedup >= 10 else 'MISSED', error,
                      'ok' if error <= 1e-9 else 'MISSED'))


def moments_run(root, folder, weights, device):
  """(seconds, peak RSS, median RSS in MB) of calculate_inception_moments.py in a fresh process."""
  code = ('import resource, statistics, sys, threading, time; sys.path.insert(0, %r)\n'
          'import calculate_inception_moments as c\n'
          'seen = []\n'
          'def watch():\n'
          '  while True:\n'
          '    pages = int(open("/proc/self/statm").read().split()[1])\n'
          '    seen.append(pages * resource.getpagesize())\n'
          '    time.sleep(0.5)\n'
          'threading.Thread(target=watch, daemon=True).start()\n'
          't = time.perf_counter(); c.main(sys.argv[1:])\n'
          'print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,\n'
          '      statistics.median(seen) // 1024 if seen else 0)' % ROOT)
  result = subprocess.run(
      [sys.executable, '-c', code, '--dataset', folder, '--resolution', '32',
       '--data_root', root, '--inception_net', 'tf', '--inception_weights', weights,
       '--batch_size', '50', '--num_workers', '0', '--device', device],
      capture_output=True, text=True, check=True)
  seconds, peak_kb, median_kb = result.stdout.split()[-3:]
  return float(seconds), int(peak_kb) / 1024., float(median_kb) / 1024.


def bench_memory(config):
  from PIL import Image
  sizes = [int(s) for s in config['sizes'].split(',')]
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as root:
    weights = os.path.join(root, 'weights.pth')
    torch.save(inception_utils._build('tf').state_dict(), weights)
    print('calculate_inception_moments.py, TF network (random weights), 32 px images, %s:'
          % config['device'])
    peaks, medians = [], []
    for n in sizes:
      folder = os.path.join(root, 'set%d' % n)
      for i in range(n):
        os.makedirs(os.path.join(folder, 'c%d' % (i % 10)), exist_ok=True)
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, 'c%d' % (i % 10), '%d.png' % i))
      seconds, peak, median = moments_run(root, folder, weights, config['device'])
      peaks.append(peak)
      medians.append(median)
      print('  %6d images: %7.1f s (%.1f images/s), RSS peak %7.1f MB, median %7.1f MB; the '
            'original would also hold %.1f MB of activations'
            % (n, seconds, n / seconds, peak, median, n * (2048 + 1000) * 4 / 2 ** 20))
    print('  RSS ratio %d vs %d images: peak %.3f, median %.3f (goal: flat, ~1.0)'
          % (sizes[-1], sizes[0], peaks[-1] / peaks[0], medians[-1] / max(medians[0], 1e-9)))


def main():
  config = vars(prepare_parser().parse_args())
  config['device'] = devices.pick(config['device'])
  print('torch %s; %s' % (torch.__version__, devices.describe(config['device'])))
  bench_fid(config)
  if not config['skip_memory']:
    bench_memory(config)


if __name__ == '__main__':
  main()
