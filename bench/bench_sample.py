"""Sampling speed of sample.py --sample_npz against the original's loop, in the same run.

    python bench/bench_sample.py [--num_images N] [--repeats 3] [--threads 2] [--device cuda]

For each config (random weights written as a weights folder first; N images, by default 400 at
32 px and 64 at 128 px): images/s of
  ours   sample.main(... --sample_npz): build G, load it, sample, round to uint8 on the device
         into one preallocated array, write samples.npz
  naive  the original's loop over the same G and noise: per batch
         np.uint8(255 * (x.cpu().numpy() + 1) / 2) appended to a list, concatenated, np.savez
and their ratio (ours / naive). Best of --repeats whole runs taken in turns; G_eval_mode, fp32, on
--device (auto: CUDA when present; both end with the images on the host, so the clock waits for
the device). Also prints the largest pixel difference between the two files (1 level: rounding
against truncation).
"""
import argparse
import contextlib
import io
import os
import shlex
import tempfile
import time

import numpy as np
import torch

import devices  # puts the project root on sys.path

import checkpoints  # noqa: E402
import config as configuration  # noqa: E402
import models  # noqa: E402
import sample  # noqa: E402
import sampling  # noqa: E402

CONFIGS = {  # label: (flags, default number of images)
    'CIFAR (32 px, ch 64, bs 50)': ('--dataset C10 --G_attn 0 --G_init N02 --batch_size 50', 400),
    'I128 (ch 32, bs 16)': ('--dataset I128_hdf5 --G_shared --hier --dim_z 120 --shared_dim 128 '
                            '--G_ch 32 --G_attn 64 --batch_size 16', 64),
}


def write_weights(flags, weights_root):
  """Random weights of the config as a weights folder; returns the experiment name."""
  args = sample.prepare_parser().parse_args(shlex.split(flags))
  config = configuration.prepare_config(vars(args))
  G = models.load_model_module(config['model']).Generator(**{**config, 'no_optim': True})
  exp = configuration.name_from_config(config)
  os.makedirs(os.path.join(weights_root, exp), exist_ok=True)
  torch.save(G.state_dict(), checkpoints.file_path(os.path.join(weights_root, exp), 'G'))
  torch.save(checkpoints.plain_state({'itr': 0, 'config': config}),
             checkpoints.file_path(os.path.join(weights_root, exp), 'state_dict'))
  return exp


def naive(flags, num_images, path, device):
  """The original sample.py --sample_npz, on the same G and random streams as sample.py."""
  args = sample.prepare_parser().parse_args(shlex.split(flags))
  config = configuration.prepare_config(vars(args))
  config['skip_init'], config['no_optim'] = True, True
  checkpoints.seed_rng(config['seed'])
  G = models.load_model_module(config['model']).Generator(**config).to(device)
  checkpoints.load_weights(G, None, {}, config['weights_root'],
                           configuration.name_from_config(config),
                           None, strict=False, load_optim=False)
  batch_size = max(config['G_batch_size'], config['batch_size'])
  z_, y_ = sampling.prepare_z_y(batch_size, G.dim_z, config['n_classes'], device=device)
  G.eval()
  x, y = [], []
  for _ in range(int(np.ceil(num_images / float(batch_size)))):
    with torch.no_grad():
      images, labels = sampling.sample(G, z_, y_, config)
    x += [np.uint8(255 * (images.cpu().numpy() + 1) / 2.)]
    y += [labels.cpu().numpy()]
  np.savez(path, x=np.concatenate(x, 0)[:num_images], y=np.concatenate(y, 0)[:num_images])


def best_times(fns, repeats):
  """Best time of each function, run in turns (so that a change in machine load hits both)."""
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, spent in zip(fns, times):
      with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        start = time.perf_counter()
        fn()
        spent.append(time.perf_counter() - start)
  return [min(spent) for spent in times]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_images', type=int, default=0,
                      help='images per --sample_npz run; 0: 400 at 32 px, 64 at 128 px')
  parser.add_argument('--repeats', type=int, default=3, help='timed runs of each (default: 3)')
  parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads (default: 2)')
  devices.add_device_flag(parser)
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  device = devices.pick(args.device)
  print('torch %s; %s' % (torch.__version__, devices.describe(device)))
  print('%-28s %8s %12s %12s %7s %9s' % ('config', 'images', 'ours im/s', 'naive im/s', 'ratio',
                                         'max diff'))
  with tempfile.TemporaryDirectory() as tmp:
    for label, (model_flags, default_images) in CONFIGS.items():
      n = args.num_images or default_images
      exp = write_weights(model_flags, os.path.join(tmp, 'weights'))
      flags = '%s --G_eval_mode --device %s --weights_root %s/weights --samples_root %s' % (
          model_flags, device, tmp, tmp)
      ours_argv = shlex.split(flags + ' --sample_npz --sample_num_npz %d' % n)
      ref_path = os.path.join(tmp, 'naive.npz')
      t_ours, t_naive = best_times([lambda: sample.main(ours_argv),
                                    lambda: naive(flags, n, ref_path, device)], args.repeats)
      with np.load(os.path.join(tmp, exp, 'samples.npz')) as a, np.load(ref_path) as b:
        assert np.array_equal(a['y'], b['y'])
        diff = int(np.abs(a['x'].astype(int) - b['x'].astype(int)).max())
      print('%-28s %8d %12.1f %12.1f %6.2fx %9d' % (label, n, n / t_ours, n / t_naive,
                                                    t_naive / t_ours, diff))


if __name__ == '__main__':
  main()
