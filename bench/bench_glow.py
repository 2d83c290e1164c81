"""Glow on this CPU: speed against the CPU's own convolution throughput, memory against depth.

Sampling and training speed as a share of the CPU's fp32 3x3 convolution throughput, and training
memory against depth with and without gradient checkpointing.

    python bench/bench_glow.py                            # everything: several minutes
    python bench/bench_glow.py --parts sample,train --threads 1 --cpu_time   # on a shared machine
    python bench/bench_glow.py --parts memory --memory_hidden 256

Parts (--parts, comma-separated):
  sample  seconds per 256 x 256 sample (batch 1, temperature 0.7): the paper's 256 px
          architecture (L = 6 levels, 512 hidden channels, 5 bits) scaled down to K =
          --sample_depth steps per level instead of 32; the time at K = 32 is estimated as this
          time x FLOPs(32) / FLOPs(K) (FLOPs are linear in K: counted at K and at 1).
  train   seconds per 32 px training iteration (forward, backward, Adam step): the paper's CIFAR
          architecture (L = 3, 512 hidden, affine couplings) scaled down to K = --train_depth
          instead of 32 and batch --train_batch instead of 64.
          Both count FLOPs with torch.utils.flop_counter (convolutions: forward, and for train
          the backward) and time the work in turns with the reference, an fp32 3x3 convolution
          512 -> 512 at 16 x 16, batch 16 (oneDNN, NCHW and channels_last: the faster counts), so
          load from other jobs hits both alike; they print GFLOP/s and the ratio (goal: >= 70%).
  memory  one forward + backward pass at 32 px, L = 3, batch --memory_batch, --memory_hidden
          channels, for K = 8, 16, 32, with and without checkpointing (glow_checkpoint), each in a
          fresh process: the peak RSS during a second pass (reset just before it) over the RSS
          before it (model, gradients and the kernels' caches allocated): the activation memory.
          glibc is told to return freed blocks at once (MALLOC_MMAP_THRESHOLD_), so the peak
          follows the live tensors.
          Training memory = that + the model's tensors (parameters, gradients, Adam's two
          moments: 16 bytes per parameter); the growth from K = 8 to 32 is printed for both (goal
          with checkpointing: < 10%), and the step inputs checkpointing has to keep (K x one
          image-sized tensor per level and image).

Measured 2026-12-06/07 on a 2-core AMD EPYC (AVX2, no AVX-512) that other jobs kept busy
throughout (load average 4-10), torch 2.14.1:
  1 thread, --cpu_time (the steadiest here; two runs):
    sample  K 4: 1.43-1.44 s per 256 px sample, 67.4 GFLOP, 46.9-47.2 GFLOP/s = 60-62% of the
            conv's 76.0-78.6 GFLOP/s; K 32 (539 GFLOP): about 11.5 s per sample.
    train   K 8, batch 16: 1.99-2.29 s per iteration, 96.3 GFLOP, 42.1-48.3 GFLOP/s = 54-59% of
            the conv's 78.0-82.1 GFLOP/s.
  1 thread, wall clock: sample K 4 2.29 s, 51% of the conv.
  2 threads, wall clock (three runs, best of 5-8 each): sample K 4 4.5-6.2 s = 24-29%, train
    K 8 8.0-12.2 s = 21-24% of the conv's 33-64 GFLOP/s: under this load two threads ran the
    sample 2x slower than one (each of the model's many ops waits for both threads; the
    reference is one long op). A spot check at a quiet moment, 2 threads: forward + backward at
    K 4, batch 16 took 0.55 s (87 GFLOP/s) against the conv's 129 GFLOP/s: 67%.
  The goal of 70% is not reached: the coupling networks' thin convolutions (6 -> 512 in, 512 ->
  12 out at level 1: a quarter of the FLOPs) run at 30-40% of the reference in oneDNN, also in
  channels_last (which the networks use on the CPU: training 5-10% and sampling 20% faster than
  NCHW), and ReLU, actnorm and Adam add memory-bound passes. The 1x1 convs as GEMMs (F.linear)
  and the thin convs as unfold/fold + GEMM measured no faster.
  memory  hidden 512, batch 16, activations at K 8 / 16 / 32: without checkpointing 225 / 443 /
          883 MB (+293%); with it 37 / 40 / 44 MB (+19%; the goal was < 10%). The growth is the
          step inputs that torch.utils.checkpoint keeps (2.6 / 5.2 / 10.5 MB); removing it needs
          the inputs recomputed from the outputs (the flow is invertible), not done here. Model
          tensors (parameters, gradients, Adam) 168 / 336 / 672 MB, so training memory as a
          whole grows +249% with checkpointing, +296% without.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import datasets  # noqa: E402
import Glow  # noqa: E402

PAPER_DEPTH = 32


def clock(cpu):
  return time.process_time if cpu else time.perf_counter


def interleaved(fns, repeats, cpu=False):
  """{name: best time} of each fn, run in turns (after one warm-up each), so that load from other
  processes hits them alike."""
  now = clock(cpu)
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = now()
      fn()
      times[name].append(now() - start)
  return {name: min(t) for name, t in times.items()}


def count_flops(fn):
  with FlopCounterMode(display=False) as counter:
    fn()
  return counter.get_total_flops()


def shapes_batch(n, resolution):
  data = datasets.Shapes(resolution=resolution, num_images=n)
  return torch.stack([data[i][0] for i in range(n)]), torch.as_tensor(data.labels)


def flow(resolution, levels, depth, hidden, **options):
  torch.manual_seed(0)
  return Glow.Glow(resolution=resolution, n_classes=10, glow_levels=levels, glow_depth=depth,
                   glow_hidden=hidden, **options)


# ---------------------------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------------------------


def timed_against_conv(label, work, flops, args):
  """Time work in turns with the reference 3x3 convolution (both layouts; the faster counts) and
  print its time and GFLOP/s as a share of the reference's. Returns work's time."""
  conv = torch.nn.Conv2d(512, 512, 3, padding=1, bias=False).requires_grad_(False)
  x = torch.randn(16, 512, 16, 16)
  cl = x.contiguous(memory_format=torch.channels_last)
  ref_flops = count_flops(lambda: conv(x))
  times = interleaved({'work': work, 'conv': lambda: conv(x), 'conv_cl': lambda: conv(cl)},
                      args.repeats, args.cpu_time)
  reference = ref_flops / min(times['conv'], times['conv_cl']) / 1e9
  rate = flops / times['work'] / 1e9
  print('%s: %.2f s, %.1f GFLOP, %.1f GFLOP/s = %.0f%% of the 3x3 conv\'s %.1f GFLOP/s '
        '(NCHW %.1f, channels_last %.1f)'
        % (label, times['work'], flops / 1e9, rate, 100 * rate / reference, reference,
           ref_flops / times['conv'] / 1e9, ref_flops / times['conv_cl'] / 1e9))
  return times['work']


def sample_speed(args):
  def model(depth):
    net = flow(256, 6, depth, 512, n_bits_x=5).eval()
    with torch.no_grad():
      net(shapes_batch(2, 256)[0])  # actnorm's initialisation
    return net

  def run(net):
    with torch.no_grad():
      return net.reverse(None, temperature=0.7, batch_size=1)
  net, shallow = model(args.sample_depth), model(1)
  flops, flops_1 = count_flops(lambda: run(net)), count_flops(lambda: run(shallow))
  full = flops_1 + (PAPER_DEPTH - 1) * (flops - flops_1) / (args.sample_depth - 1)
  seconds = timed_against_conv('sample   256 px, L 6, K %d, hidden 512, one sample'
                               % args.sample_depth, lambda: run(net), flops, args)
  print('         at K 32: %.0f GFLOP, about %.1f s per sample at the same GFLOP/s'
        % (full / 1e9, seconds * full / flops))


def train_speed(args):
  net = flow(32, 3, args.train_depth, 512)
  x, y = shapes_batch(args.train_batch, 32)
  with torch.no_grad():
    net(x)
  optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

  def iteration():
    loss = net.loss(x, y)['loss']
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
  flops = count_flops(lambda: net.loss(x, y)['loss'].backward())
  timed_against_conv('train    32 px, L 3, K %d, hidden 512, batch %d, one iteration'
                     % (args.train_depth, args.train_batch), iteration, flops, args)


def rss_mb(field):
  """VmRSS (now) or VmHWM (peak) of this process in MB, from /proc (Linux)."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1]) / 2 ** 10
  raise RuntimeError('no %s in /proc/self/status' % field)


def memory_child(depth, checkpoint, hidden, batch):
  """The second forward + backward pass in this (fresh) process; prints MB as JSON. The peak is
  reset just before it (clear_refs 5), so the first pass's does not hide it."""
  net = flow(32, 3, depth, hidden, glow_checkpoint=checkpoint)
  x, y = shapes_batch(batch, 32)
  net.loss(x, y)['loss'].backward()  # initialises actnorm, allocates gradients and kernels' caches
  before = rss_mb('VmRSS')
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')
  net.loss(x, y)['loss'].backward()
  peak = rss_mb('VmHWM')
  tensors = 16 * sum(p.numel() for p in net.parameters()) / 2 ** 20
  inputs = 4 * batch * depth * sum(c * h * w for c, h, w in step_shapes(net)) / 2 ** 20
  print(json.dumps({'activations': peak - before, 'tensors': tensors, 'inputs': inputs}))


def step_shapes(net):
  """(C, H, W) of the flow steps' inputs at each level."""
  shapes, (c, size) = [], (3, net.resolution)
  for level in range(net.n_levels):
    c, size = 4 * c, size // 2
    shapes.append((c, size, size))
    c //= 2
  return shapes


def memory(args):
  env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='0')
  for checkpoint in (False, True):
    results = {}
    for depth in (8, 16, 32):
      out = subprocess.run([sys.executable, __file__, '--memory_child', str(depth),
                            str(int(checkpoint)), '--memory_hidden', str(args.memory_hidden),
                            '--memory_batch', str(args.memory_batch), '--threads',
                            str(args.threads)],
                           env=env, check=True, capture_output=True, text=True).stdout
      r = results[depth] = json.loads(out.strip().splitlines()[-1])
      print('memory   32 px, L 3, hidden %d, batch %d, K %2d, checkpointing %-3s: activations '
            '%6.0f MB (step inputs %4.1f MB), model tensors %5.0f MB'
            % (args.memory_hidden, args.memory_batch, depth, 'on' if checkpoint else 'off',
               r['activations'], r['inputs'], r['tensors']))
    growth = results[32]['activations'] / results[8]['activations'] - 1
    total = ((results[32]['activations'] + results[32]['tensors'])
             / (results[8]['activations'] + results[8]['tensors']) - 1)
    print('memory   checkpointing %-3s: K 8 -> 32: activations %+.0f%%, training memory '
          '(activations + model tensors) %+.0f%%' % ('on' if checkpoint else 'off', 100 * growth,
                                                       100 * total))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--parts', default='sample,train,memory',
                      help='comma-separated: sample, train, memory')
  parser.add_argument('--repeats', type=int, default=5,
                      help='timed runs per measurement (the best counts)')
  parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
  parser.add_argument('--cpu_time', action='store_true',
                      help='time with the process CPU time instead of the wall clock: steadier '
                           'on a machine other jobs share, meaningful with --threads 1')
  parser.add_argument('--sample_depth', type=int, default=4, help='K of the 256 px model')
  parser.add_argument('--train_depth', type=int, default=8, help='K of the 32 px model')
  parser.add_argument('--train_batch', type=int, default=16, help='batch of the 32 px model')
  parser.add_argument('--memory_hidden', type=int, default=512,
                      help='hidden channels of the memory runs')
  parser.add_argument('--memory_batch', type=int, default=16, help='batch of the memory runs')
  parser.add_argument('--memory_child', nargs=2, type=int, metavar=('K', 'CHECKPOINT'),
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if not set(args.parts.split(',')) <= {'sample', 'train', 'memory'}:
    parser.error('--parts takes sample, train, memory, comma-separated (got %s)' % args.parts)
  if args.sample_depth < 2:
    parser.error('--sample_depth must be at least 2 (the FLOPs at K = 32 are extrapolated from '
                 'those at K and at 1)')
  torch.set_num_threads(args.threads)
  if args.memory_child:
    return memory_child(args.memory_child[0], bool(args.memory_child[1]), args.memory_hidden,
                        args.memory_batch)
  parts = args.parts.split(',')
  print('torch %s, %d threads, %s' % (torch.__version__, args.threads,
                                      'CPU time' if args.cpu_time else 'wall clock'))
  if 'sample' in parts:
    sample_speed(args)
  if 'train' in parts:
    train_speed(args)
  if 'memory' in parts:
    memory(args)


if __name__ == '__main__':
  main()
