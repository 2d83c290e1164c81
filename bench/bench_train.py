"""Training speed on this machine: full BigGAN iterations against the original's step, same run,
with model-FLOPs utilisation, for the CIFAR config and the released ImageNet-128 one.

    python bench/bench_train.py                          # CIFAR, every column, ~2-5 min on 2 cores
    python bench/bench_train.py --columns fp32,bf16 --ch 64 --batch_size 50 --num_D_steps 4
    python bench/bench_train.py --configs i128 --columns fp32 --rounds 2 --iters 1 --warmup 1
    python bench/bench_train.py --device cuda --configs cifar,i128 --columns fp32,compile_bf16_cl

One iteration is what train.py runs per loader batch: train_fns.GAN_training_function's
num_D_steps D steps, one G step and the EMA update. Random images stand in for the loader.

Configs (--configs):
  cifar  the CIFAR script's (scripts/launch_cifar_ema.sh: no attention, N(0, 0.02) init, EMA,
         lr 2e-4) scaled down to 2 cores: ch --ch (32), batch --batch_size (32), --num_D_steps
         (2), 32 px, 10 classes, fp32 weights
  i128   the released ImageNet-128 model's (scripts/launch_BigGAN_bs256x8.sh): ch 96, attention
         at 64, --G_shared --hier, dim_z 120, shared_dim 128, 1000 classes, 128 px, 2 D steps of
         one micro-batch of --i128_batch (0: on CUDA the largest of 256, 128, ... that fits beside
         every column's weights; on the CPU 2)

Reference ("original"): the same G and D with the fast paths off (config keys fold_resampling and
cpu_channels_last False: the original's op sequence in NCHW), eager fp32, driven by a step
written like the original train_fns.train: Adam with PyTorch's default implementation (what the
original's optimizers get), a per-tensor EMA loop and float(loss.item()) for every loss each
iteration (its host synchronisations).

Columns (train.py flags):
  fp32             (none) the default: resampling folded into the convolutions, channels_last
                   activations on CPU
  cl               --channels_last (the weights too)
  bf16, bf16_cl    --amp bf16 [--channels_last] (autocast; weights, BN statistics, SN, losses fp32)
  compile          --compile (torch.compile of G.forward and D.forward)
  compile_bf16_cl  --compile --amp bf16 --channels_last
  diffaug          --DiffAugment translation,color,cutout (issue goal: at most +10% over fp32)
  ada_p0           --ada_target 0.6 with p at 0 all along (--ada_interval beyond the run): the
                   ADA machinery's own cost (issue goal: at most +2% over fp32)
  fused            --fused_optim (Adam's fused kernel: matters for small models, where Adam's
                   per-tensor ops are a large part of the step)
  reuse            --reuse_fakes (the G step scores the last D step's fakes: one G forward pass
                   less per iteration; a different recipe, not the same maths)
  fused_reuse      --fused_optim --reuse_fakes
Every column starts from the same seed and they run interleaved, --iters iterations each per
round, so load from other processes hits them alike. Timing (bench/devices.py) synchronises the
device before each clock read; the --warmup first iterations are left out. The table has the
median seconds per iteration, iterations/s, images/s (loader images: batch * num_D_steps per
iteration), the ratio reference / column (above 1: faster than the original), the best time,
process CPU time per iteration, the warm-up (for compile columns the compilation: 70-90 s on 2
cores with an empty inductor cache, 4-8 s once it has the kernels), and:
  peak MiB  CUDA: the column's weights, EMA, gradients and Adam states plus the most its step
            allocated beyond them (torch.cuda.max_memory_allocated)
  TFLOP/s   model FLOPs of one iteration / median time; model FLOPs are the reference's op
            sequence counted once per config by torch.utils.flop_counter (the original's maths:
            a column that does less work for the same result scores higher)
  MFU       TFLOP/s / the dense matmul peak of the column's compute dtype measured in this run
            (devices.matmul_peak; fp32 on CUDA at the TF32 setting cuDNN's convolutions use)
  days      i128 only: one such device's days for the released run's 150k iterations (batch
            2048 = 256 x 8 accumulations, 1 D step: 150000 x 8 x 256 / batch x the FLOPs of a
            1-D-step iteration at this batch), at the column's FLOP rate (the original: 15 days on
            8 V100s)

Quiet machine, 2 cores (s/it, vs original): original 1.92; fp32 1.06, 1.80x; cl 1.80x; bf16 0.40,
4.8x; compile 0.98-1.02, 1.9x; compile_bf16_cl 0.33, 5.6-5.9x. The full CIFAR config (ch 64,
batch 50, 4 D steps): original 19.7 s/it, fp32 1.89x, bf16 6.1x.
An AVX2-only 2-core AMD EPYC (no native bf16), 2026-12-01: original 10.0 s/it; fp32 1.46x, cl 1.50x,
compile 1.54x; bf16 emulated, about 17x slower than fp32 (205 s for the 2 warm-up iterations).
bench_vs_original.py on it, against the real original's code: 7.9 s/it, fp32 4.6 s/it (1.71x).
bench_vs_original.py on a 2-core Intel Xeon (AVX-512, AMX), 2026-12-02, the real original 1.99 s/it:
fp32 1.72x, cl 1.71x, bf16 4.42x, bf16_cl 4.46x, compile 1.88x, compile_bf16_cl 5.39x; this
script's emulated original 1.03x the real one.
i128 on the AVX2-only 2-core EPYC, 2026-12-07, batch 2, fp32, other processes keeping the load
average at 5-8 (two runs agree on the ratio): 1.008e12 model FLOPs per iteration; original 81 s/it
(53 CPU s), fp32 114 s/it (75 CPU s): 0.71x, our fast paths lose at this batch on this CPU; MFU
44% / 31% of the 0.03 TFLOP/s fp32 matmul rate measured beside them. The released run comes to
1.03e20 model FLOPs: 9.5 days of 8 V100s at their 15.7 TFLOP/s fp32 peak, against the 15 days it
took (about 63% of peak). No GPU has run this script yet (bench/gpu_report.sh runs it there).
2026-12-08, a 2-core Intel Xeon with AVX-512, quiet, --ch 8 --batch_size 16 --num_D_steps 1
--threads 1 (the quickstart's size at 32 px), s/it: original 0.140, fp32 0.093 (1.50x), fused 0.090
(1.56x), reuse 0.079 (1.78x), fused_reuse 0.077 (1.83x); another run: fp32 0.083, fused 0.081.
"""
import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import devices  # puts the project root on sys.path

import BigGAN  # noqa: E402
import config as configuration  # noqa: E402
import errors  # noqa: E402
import losses  # noqa: E402
import sampling  # noqa: E402
import train_fns  # noqa: E402

ROOT = devices.ROOT
COLUMNS = {
    'fp32': '',
    'cl': '--channels_last',
    'bf16': '--amp bf16',
    'bf16_cl': '--amp bf16 --channels_last',
    'compile': '--compile',
    'compile_bf16_cl': '--compile --amp bf16 --channels_last',
    'diffaug': '--DiffAugment translation,color,cutout',
    'ada_p0': '--ada_target 0.6 --ada_interval 1000000',
    'fused': '--fused_optim',
    'reuse': '--reuse_fakes',
    'fused_reuse': '--fused_optim --reuse_fakes',
}
CIFAR = ('--G_attn 0 --D_attn 0 --G_init N02 --D_init N02 --G_lr 2e-4 --D_lr 2e-4 --ema --use_ema '
         '--ema_start 1000 --num_workers 0')
I128 = ('--dataset I128_hdf5 --G_ch 96 --D_ch 96 --G_attn 64 --D_attn 64 --G_shared --hier '
        '--dim_z 120 --shared_dim 128 --G_nl inplace_relu --D_nl inplace_relu --SN_eps 1e-6 '
        '--BN_eps 1e-5 --adam_eps 1e-6 --G_lr 1e-4 --D_lr 4e-4 --G_init ortho --D_init ortho --ema '
        '--use_ema --ema_start 20000 --num_workers 0')
RELEASED = {'iterations': 150000, 'batch': 256, 'accumulations': 8}
I128_BATCHES = (256, 128, 64, 32, 16, 8, 4, 2, 1)


class Spec(object):
  """One config of the table: its flags, batch, D steps, resolution and classes."""

  def __init__(self, name, batch, num_D_steps, args):
    self.name, self.batch, self.num_D_steps, self.args = name, batch, num_D_steps, args

  def flags(self, column_flags):
    common = '--batch_size %d --num_D_steps %d --seed %d' % (self.batch, self.num_D_steps,
                                                            self.args.seed)
    if self.name == 'i128':
      return '%s %s %s' % (I128, common, column_flags)
    return '%s --dataset Shapes --resolution 32 --G_ch %d --D_ch %d %s %s' % (
        CIFAR, self.args.ch, self.args.ch, common, column_flags)


def make_config(flags, args=None):
  args = configuration.prepare_parser().parse_args(flags.split())
  return configuration.prepare_config(vars(args))


def original_step(G, D, GD, z_, y_, ema, state_dict, config):
  """One iteration as the original train_fns.train runs it (no autocast or scalers), ending in a
  host synchronisation for each logged loss."""
  bs = config['batch_size']

  def train(x, y):
    G.optim.zero_grad()
    D.optim.zero_grad()
    x, y = torch.split(x, bs), torch.split(y, bs)
    train_fns.toggle_grad(D, True)
    train_fns.toggle_grad(G, False)
    for step in range(config['num_D_steps']):
      D.optim.zero_grad()
      z_.sample_()
      y_.sample_()
      D_fake, D_real = GD(z_[:bs], y_[:bs], x[step], y[step], train_G=False)
      D_loss_real, D_loss_fake = losses.loss_hinge_dis(D_fake, D_real)
      (D_loss_real + D_loss_fake).backward()
      D.optim.step()
    train_fns.toggle_grad(D, False)
    train_fns.toggle_grad(G, True)
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


def tensor_mib(tensors):
  return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t)) / 2 ** 20


class Column(object):
  """G, D, G_ema and the training step of one column, as train.py builds them, on args.device."""

  def __init__(self, name, flags, args, spec=None):
    spec = spec or Spec('cifar', args.batch_size, args.num_D_steps, args)
    self.name, self.reference, self.device = name, name == 'original', args.device
    self.dtype = devices.dtype_of(flags)
    self.config = config = make_config(spec.flags(flags))
    if self.reference:  # the original's op sequence (layers.py's fast paths off)
      config.update(fold_resampling=False, cpu_channels_last=False)
    self.resolution, self.n_classes = config['resolution'], config['n_classes']
    torch.manual_seed(args.seed)
    with torch.device(self.device):  # initialised where they run (I128's init is slow on a CPU)
      G = BigGAN.Generator(**config)
      D = BigGAN.Discriminator(**config)
      G_ema = BigGAN.Generator(**{**config, 'skip_init': True, 'no_optim': True})
    train_fns.apply_speed_options(config, G, D, G_ema)
    self.ema = train_fns.ema(G, G_ema, config['ema_decay'], config['ema_start'])
    self.channels_last = config['channels_last']
    self.GD = BigGAN.G_D(G, D)
    self.state_dict = {'itr': 0}
    self.nets = (G, D, G_ema)
    self.train = self.training_step(config)
    self.times, self.cpu_times, self.warmup, self.peak_mib = [], [], 0.0, None

  def training_step(self, config):
    """The step of this column for `config` (batch_size, num_D_steps) on its nets."""
    G, D, _ = self.nets
    z_, y_ = sampling.prepare_z_y(config['batch_size'], G.dim_z, config['n_classes'],
                                  device=self.device)
    make = original_step if self.reference else train_fns.GAN_training_function
    return make(G, D, self.GD, z_, y_, self.ema, self.state_dict, config)

  def resident_mib(self):
    """Weights, buffers, gradients and optimizer states of this column."""
    tensors = [t for net in self.nets for t in net.state_dict().values()]
    tensors += [p.grad for net in self.nets for p in net.parameters() if p.grad is not None]
    for net in self.nets[:2]:
      tensors += [v for state in net.optim.state.values() for v in state.values()]
    return tensor_mib(tensors)

  def step(self, x, y):
    if self.channels_last:
      x = x.contiguous(memory_format=torch.channels_last)
    start, cpu = devices.clock(self.device), time.process_time()
    self.state_dict['itr'] += 1
    for net in self.nets:
      net.train()
    metrics = self.train(x, y)
    return devices.clock(self.device) - start, time.process_time() - cpu, metrics


def batch_of(columns, args, batch, seed_offset=0):
  """Random loader images and labels for one iteration of these columns."""
  generator = torch.Generator().manual_seed(args.seed + seed_offset)
  column = columns[0]
  x = torch.rand(batch, 3, column.resolution, column.resolution, generator=generator) * 2 - 1
  y = torch.randint(0, column.n_classes, (batch,), generator=generator)
  return x.to(column.device), y.to(column.device)


def count_flops(column, x, y, train=None):
  """FLOPs of one iteration of `column` (runs it, or `train` on its nets, once under
  torch.utils.flop_counter)."""
  step, column.train = column.train, train or column.train
  try:
    with FlopCounterMode(display=False) as counter:
      column.step(x, y)
  finally:
    column.train = step
  return counter.get_total_flops()


def time_columns(columns, args, batch=None):
  """Warm every column up (peak memory on CUDA), then time them interleaved (--rounds x --iters).
  Returns the loader batch of one iteration."""
  batch = batch or args.batch_size * args.num_D_steps
  x, y = batch_of(columns, args, batch)
  for column in columns:
    devices.reset_peak(column.device)
    base = devices.allocated_mib(column.device)
    start, metrics = time.perf_counter(), {}
    for _ in range(args.warmup):
      _, _, metrics = column.step(x, y)
    column.warmup = time.perf_counter() - start
    if devices.is_cuda(column.device) and args.warmup:
      column.peak_mib = column.resident_mib() + devices.peak_mib(column.device) - base
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


def print_table(columns, batch, runs, reference_note='', flops=None, peaks=None, days_flops=None):
  """Median s/it, it/s, images/s, ratio to columns[0], best, CPU time and warm-up per column; with
  flops (per iteration) and peaks ({dtype: FLOP/s}) TFLOP/s and MFU; with days_flops (FLOPs of
  the released run) the days it would take at each column's rate."""
  reference = statistics.median(columns[0].times)
  reference_cpu = statistics.median(columns[0].cpu_times)
  head = '\n%-16s %8s %7s %9s %8s %8s %9s %8s %9s' % (
      'column', 's/it', 'it/s', 'images/s', 'vs orig', 'best s', 'CPU s/it', 'CPU vs', 'warm-up s')
  if any(column.peak_mib is not None for column in columns):
    head += ' %9s' % 'peak MiB'
  if flops:
    head += ' %8s %6s' % ('TFLOP/s', 'MFU')
  if days_flops:
    head += ' %9s' % 'days 150k'
  print(head)
  for column in columns:
    median, cpu = statistics.median(column.times), statistics.median(column.cpu_times)
    line = '%-16s %8.3f %7.3f %9.1f %7.2fx %8.3f %9.3f %7.2fx %9.1f' % (
        column.name, median, 1 / median, batch / median, reference / median, min(column.times),
        cpu, reference_cpu / cpu, column.warmup)
    if column.peak_mib is not None:
      line += ' %9.0f' % column.peak_mib
    if flops:
      rate = flops / median
      line += ' %8.3f %5.1f%%' % (rate / 1e12, 100 * rate / peaks[column.dtype])
      if days_flops:
        line += ' %9.1f' % (days_flops / rate / 86400)
    print(line)
  print('Medians of %d iterations per column. %svs orig = original s/it / column s/it (above 1: '
        'faster). CPU s/it: process CPU time (all threads) per iteration, which other processes '
        'on the machine disturb less than the wall clock.' % (runs, reference_note))
  if flops:
    print('Model FLOPs per iteration %.4g; matmul peaks measured here: %s.' % (flops, ', '.join(
        '%s %.2f TFLOP/s' % (str(dtype).replace('torch.', ''), rate / 1e12)
        for dtype, rate in peaks.items())))
  if days_flops:
    print('The released run (150k iterations of batch 2048) is %.4g model FLOPs.' % days_flops)


def add_timing_flags(parser):
  """The flags of the measurement and the config (shared with bench_vs_original.py)."""
  parser.add_argument('--rounds', type=int, default=5,
                      help='Rounds; each runs every column --iters times')
  parser.add_argument('--iters', type=int, default=2,
                      help='Timed iterations per column per round')
  parser.add_argument('--warmup', type=int, default=2,
                      help='Untimed first iterations per column')
  parser.add_argument('--ch', type=int, default=32, help='G_ch and D_ch')
  parser.add_argument('--batch_size', type=int, default=32,
                      help='Batch size of each D step and of the G step')
  parser.add_argument('--num_D_steps', type=int, default=2,
                      help='D steps per iteration')
  parser.add_argument('--threads', type=int, default=2,
                      help='torch.set_num_threads')
  parser.add_argument('--seed', type=int, default=0, help='Seed of every column\'s weights')
  devices.add_device_flag(parser)


def build(spec, names, args):
  """The reference column and the named ones, for one config."""
  return [Column('original', '', args, spec)] + [Column(n, COLUMNS[n], args, spec) for n in names]


def fit_i128(names, args):
  """(spec, columns) at the largest of I128_BATCHES whose reference step (the original's op
  sequence needs the most memory) runs beside every column's weights and optimizer states."""
  for batch in I128_BATCHES:
    spec, columns = Spec('i128', batch, 2, args), None
    try:
      columns = build(spec, names, args)
      columns[0].step(*batch_of(columns, args, 2 * batch))
      return spec, columns
    except (torch.cuda.OutOfMemoryError, RuntimeError) as e:  # cuDNN's may be a RuntimeError
      if 'out of memory' not in str(e).lower() and 'alloc' not in str(e).lower():
        raise
    columns = None
    torch.cuda.empty_cache()
  raise SystemExit('error: not even a batch of 1 fits on %s' % args.device)


def released_run_flops(reference, args):
  """FLOPs of the released run: 150k iterations of one D step and one G step of 8 micro-batches
  of 256 each, i.e. 8 x a 1-D-step iteration at batch 256. FLOPs are a * batch + c per such
  iteration (c: the power iterations of spectral norm, once per forward), so two small counts on
  the reference column's nets give them exactly."""
  counts = []
  for batch in (1, 2):
    train = reference.training_step(dict(reference.config, batch_size=batch, num_D_steps=1))
    counts.append(count_flops(reference, *batch_of([reference], args, batch), train=train))
  per_image = counts[1] - counts[0]
  per_iteration = counts[0] - per_image + RELEASED['batch'] * per_image
  return RELEASED['iterations'] * RELEASED['accumulations'] * per_iteration


def run_config(name, names, args, peaks):
  """Build, warm up, time and print one config's columns."""
  days_flops = None
  if name == 'cifar':
    spec = Spec('cifar', args.batch_size, args.num_D_steps, args)
    columns = build(spec, names, args)
  else:
    if devices.is_cuda(args.device) and not args.i128_batch:
      spec, columns = fit_i128(names, args)
    else:
      spec = Spec('i128', args.i128_batch or 2, 2, args)
      columns = build(spec, names, args)
    days_flops = released_run_flops(columns[0], args)
  loader_batch = spec.batch * spec.num_D_steps
  print('\n== %s: batch %d, %d D steps, %d px, %d classes ==' % (
      name, spec.batch, spec.num_D_steps, columns[0].resolution, columns[0].n_classes), flush=True)
  flops = count_flops(columns[0], *batch_of(columns, args, loader_batch))
  time_columns(columns, args, loader_batch)
  print_table(columns, loader_batch, args.rounds * args.iters, flops=flops, peaks=peaks,
              days_flops=days_flops)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=errors.HelpFormatter)
  parser.add_argument('--configs', type=str, default='cifar',
                      help='Comma-separated configs: cifar, i128')
  parser.add_argument('--columns', type=str, default=','.join(COLUMNS),
                      help='Comma-separated columns to measure besides the reference, from: %s '
                           '(default: all)' % ', '.join(COLUMNS))
  parser.add_argument('--i128_batch', type=int, default=0,
                      help='Batch of the i128 config; 0: on CUDA the largest of %s that fits, on '
                           'the CPU 2' % ', '.join(map(str, I128_BATCHES)))
  add_timing_flags(parser)
  args = parser.parse_args()
  names = [name for name in args.columns.split(',') if name]
  configs = [name for name in args.configs.split(',') if name]
  unknown = [name for name in names if name not in COLUMNS]
  if unknown:
    parser.error('unknown column(s) %s; choose from %s' % (', '.join(unknown), ', '.join(COLUMNS)))
  if [c for c in configs if c not in ('cifar', 'i128')] or not configs:
    parser.error('--configs takes cifar, i128 or both')
  torch.set_num_threads(args.threads)
  torch.backends.cudnn.benchmark = True  # as train.py
  args.device = devices.pick(args.device)
  print('torch %s; %s' % (torch.__version__, devices.describe(args.device)))
  dtypes = {torch.float32} | {devices.dtype_of(COLUMNS[n]) for n in names}
  peaks = {dtype: devices.matmul_peak(args.device, dtype) for dtype in sorted(dtypes, key=str)}
  for name in configs:
    run_config(name, names, args, peaks)


if __name__ == '__main__':
  main()
