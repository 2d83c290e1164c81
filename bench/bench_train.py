"""Training speed on this machine: full BigGAN iterations against the original's step, same run.

    python bench/bench_train.py                          # every column, ~2-5 min on 2 cores
    python bench/bench_train.py --columns fp32,bf16 --ch 64 --batch_size 50 --num_D_steps 4

One iteration is what train.py runs per loader batch: train_fns.GAN_training_function's
num_D_steps D steps, one G step and the EMA update. The config is the CIFAR script's
(scripts/launch_cifar_ema.sh: no attention, N(0, 0.02) init, EMA, lr 2e-4) scaled down to 2 cores:
ch 32, batch 32, 2 D steps, 32 px, 10 classes, fp32 weights, random images in place of the loader.

Reference ("original"): the same G and D with the fast paths off (layers.fold_resampling and
layers.cpu_channels_last False: the original's op sequence in NCHW), eager fp32, driven by a step
written like the original train_fns.train: Adam with PyTorch's default CPU implementation (what
the original's optimizers get), a per-tensor EMA loop and float(loss.item()) for every loss each
iteration (its host synchronisations).

Columns (train.py flags):
  fp32             (none) the default: resampling folded into the convolutions, channels_last
                   activations on CPU
  cl               --channels_last (the weights too)
  bf16, bf16_cl    --amp bf16 [--channels_last] (autocast; weights, BN statistics, SN, losses fp32)
  compile          --compile (torch.compile of G.forward and D.forward)
  compile_bf16_cl  --compile --amp bf16 --channels_last
Every column starts from the same seed and they run interleaved, --iters iterations each per
round, so load from other processes hits them alike. The table has the median seconds per
iteration, iterations/s, images/s (loader images: batch_size * num_D_steps per iteration), the
ratio reference / column (above 1: faster than the original), the best time, process CPU time
per iteration and the warm-up of the first iterations (for compile columns the compilation:
70-90 s with an empty inductor cache, 4-8 s once it has the kernels).

Quiet machine, 2 cores (s/it, vs original): original 1.92; fp32 1.06, 1.80x; cl 1.80x; bf16 0.40,
4.8x; compile 0.98-1.02, 1.9x; compile_bf16_cl 0.33, 5.6-5.9x. The full CIFAR config (ch 64,
batch 50, 4 D steps): original 19.7 s/it, fp32 1.89x, bf16 6.1x.
An AVX2-only 2-core AMD EPYC (no native bf16), 2026-12-01: original 10.0 s/it; fp32 1.46x, cl 1.50x,
compile 1.54x; bf16 emulated, about 17x slower than fp32 (205 s for the 2 warm-up iterations).
bench_vs_original.py on it, against the real original's code: 7.9 s/it, fp32 4.6 s/it (1.71x).
bench_vs_original.py on a 2-core Intel Xeon (AVX-512, AMX), 2026-12-02, the real original 1.99 s/it:
fp32 1.72x, cl 1.71x, bf16 4.42x, bf16_cl 4.46x, compile 1.88x, compile_bf16_cl 5.39x; this
script's emulated original 1.03x the real one.
"""
import argparse
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import BigGAN  # noqa: E402
import layers  # noqa: E402
import losses  # noqa: E402
import sampling  # noqa: E402
import train_fns  # noqa: E402
import utils  # noqa: E402

COLUMNS = {
    'fp32': '',
    'cl': '--channels_last',
    'bf16': '--amp bf16',
    'bf16_cl': '--amp bf16 --channels_last',
    'compile': '--compile',
    'compile_bf16_cl': '--compile --amp bf16 --channels_last',
}
CIFAR = ('--G_attn 0 --D_attn 0 --G_init N02 --D_init N02 --G_lr 2e-4 --D_lr 2e-4 --ema --use_ema '
         '--ema_start 1000 --num_workers 0')


def make_config(flags, args):
  parser = utils.prepare_parser()
  config = vars(parser.parse_args(
      ('%s --dataset Shapes --resolution 32 --G_ch %d --D_ch %d --batch_size %d --num_D_steps %d '
       '%s' % (CIFAR, args.ch, args.ch, args.batch_size, args.num_D_steps, flags)).split()))
  return utils.prepare_config(config)


def original_step(G, D, GD, z_, y_, ema, state_dict, config):
  """One iteration as the original train_fns.train runs it (no autocast or scalers), ending in a
  host synchronisation for each logged loss."""
  bs = config['batch_size']

  def train(x, y):
    G.optim.zero_grad()
    D.optim.zero_grad()
    x, y = torch.split(x, bs), torch.split(y, bs)
    utils.toggle_grad(D, True)
    utils.toggle_grad(G, False)
    for step in range(config['num_D_steps']):
      D.optim.zero_grad()
      z_.sample_()
      y_.sample_()
      D_fake, D_real = GD(z_[:bs], y_[:bs], x[step], y[step], train_G=False)
      D_loss_real, D_loss_fake = losses.loss_hinge_dis(D_fake, D_real)
      (D_loss_real + D_loss_fake).backward()
      D.optim.step()
    utils.toggle_grad(D, False)
    utils.toggle_grad(G, True)
    G.optim.zero_grad()
    z_.sample_()
    y_.sample_()
    G_loss = losses.loss_hinge_gen(GD(z_, y_, train_G=True))
    G_loss.backward()
    G.optim.step()
    decay = 0.0 if state_dict['itr'] < config['ema_start'] else config['ema_decay']
    with torch.no_grad():  # the original's EMA: one tensor at a time
      source, target = G.state_dict(), ema.target.state_dict()
      for key in source:
        target[key].copy_(target[key] * decay + source[key] * (1 - decay))
    return {'G_loss': float(G_loss.item()), 'D_loss_real': float(D_loss_real.item()),
            'D_loss_fake': float(D_loss_fake.item())}
  return train


class Column(object):
  """G, D, G_ema and the training step of one column, as train.py builds them."""

  def __init__(self, name, flags, args):
    self.name, self.reference = name, name == 'original'
    config = make_config(flags, args)
    torch.manual_seed(args.seed)
    G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
    G_ema = BigGAN.Generator(**{**config, 'skip_init': True, 'no_optim': True})
    train_fns.apply_speed_options(config, G, D, G_ema)
    ema = utils.ema(G, G_ema, config['ema_decay'], config['ema_start'])
    self.channels_last = config['channels_last']
    GD = BigGAN.G_D(G, D)
    z_, y_ = sampling.prepare_z_y(config['batch_size'], G.dim_z, config['n_classes'], device='cpu')
    self.state_dict = {'itr': 0}
    make = original_step if self.reference else train_fns.GAN_training_function
    self.train = make(G, D, GD, z_, y_, ema, self.state_dict, config)
    self.nets = (G, D, G_ema)
    self.times, self.cpu_times, self.warmup = [], [], 0.0

  def step(self, x, y):
    layers.fold_resampling = layers.cpu_channels_last = not self.reference
    if self.channels_last:
      x = x.contiguous(memory_format=torch.channels_last)
    start, cpu = time.perf_counter(), time.process_time()
    self.state_dict['itr'] += 1
    for net in self.nets:
      net.train()
    metrics = self.train(x, y)
    return time.perf_counter() - start, time.process_time() - cpu, metrics


def time_columns(columns, args, n_classes=10):
  """Warm every column up, then time them interleaved (--rounds x --iters). Returns the batch."""
  generator = torch.Generator().manual_seed(args.seed)
  batch = args.batch_size * args.num_D_steps
  x = torch.rand(batch, 3, 32, 32, generator=generator) * 2 - 1
  y = torch.randint(0, n_classes, (batch,), generator=generator)
  for column in columns:
    start, metrics = time.perf_counter(), {}
    for _ in range(args.warmup):
      _, _, metrics = column.step(x, y)
    column.warmup = time.perf_counter() - start
    bad = [k for k, v in metrics.items() if not torch.isfinite(torch.as_tensor(v))]
    if bad:
      raise RuntimeError('column %s: non-finite %s' % (column.name, ', '.join(bad)))
    print('warm-up %-16s %7.1f s' % (column.name, column.warmup), flush=True)
  for _ in range(args.rounds):
    for column in columns:
      for _ in range(args.iters):
        wall, cpu, _ = column.step(x, y)
        column.times.append(wall)
        column.cpu_times.append(cpu)
  return batch


def print_table(columns, batch, runs, reference_note=''):
  """Median s/it, it/s, images/s, ratio to columns[0], best, CPU time and warm-up per column."""
  reference = statistics.median(columns[0].times)
  reference_cpu = statistics.median(columns[0].cpu_times)
  print('\n%-16s %8s %7s %9s %8s %8s %9s %8s %9s' % (
      'column', 's/it', 'it/s', 'images/s', 'vs orig', 'best s', 'CPU s/it', 'CPU vs', 'warm-up s'))
  for column in columns:
    median, cpu = statistics.median(column.times), statistics.median(column.cpu_times)
    print('%-16s %8.3f %7.3f %9.1f %7.2fx %8.3f %9.3f %7.2fx %9.1f' % (
        column.name, median, 1 / median, batch / median, reference / median, min(column.times),
        cpu, reference_cpu / cpu, column.warmup))
  print('Medians of %d iterations per column. %svs orig = original s/it / column s/it (above 1: '
        'faster). CPU s/it: process CPU time (all threads) per iteration, which other processes '
        'on the machine disturb less than the wall clock.' % (runs, reference_note))


def add_timing_flags(parser):
  """The flags of the measurement and the config (shared with bench_vs_original.py)."""
  parser.add_argument('--rounds', type=int, default=5,
                      help='Rounds; each runs every column --iters times (default: %(default)s)')
  parser.add_argument('--iters', type=int, default=2,
                      help='Timed iterations per column per round (default: %(default)s)')
  parser.add_argument('--warmup', type=int, default=2,
                      help='Untimed first iterations per column (default: %(default)s)')
  parser.add_argument('--ch', type=int, default=32, help='G_ch and D_ch (default: %(default)s)')
  parser.add_argument('--batch_size', type=int, default=32,
                      help='Batch size of each D step and of the G step (default: %(default)s)')
  parser.add_argument('--num_D_steps', type=int, default=2,
                      help='D steps per iteration (default: %(default)s)')
  parser.add_argument('--threads', type=int, default=2,
                      help='torch.set_num_threads (default: %(default)s)')
  parser.add_argument('--seed', type=int, default=0, help='Seed of every column\'s weights')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--columns', type=str, default=','.join(COLUMNS),
                      help='Comma-separated columns to measure besides the reference, from: %s '
                           '(default: all)' % ', '.join(COLUMNS))
  add_timing_flags(parser)
  args = parser.parse_args()
  names = [name for name in args.columns.split(',') if name]
  unknown = [name for name in names if name not in COLUMNS]
  if unknown:
    parser.error('unknown column(s) %s; choose from %s' % (', '.join(unknown), ', '.join(COLUMNS)))
  torch.set_num_threads(args.threads)
  print('torch %s, %d threads, CPU capability %s; ch %d, batch %d, %d D steps, 32 px, 10 classes, '
        'fp32 weights' % (torch.__version__, args.threads, torch.backends.cpu.get_cpu_capability(),
                          args.ch, args.batch_size, args.num_D_steps))

  columns = [Column('original', '', args)] + [Column(n, COLUMNS[n], args) for n in names]
  batch = time_columns(columns, args)

  print_table(columns, batch, args.rounds * args.iters)

if __name__ == '__main__':
  main()
