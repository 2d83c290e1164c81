"""Glow on this CPU: speed against the CPU's own convolution throughput, memory against depth.

Sampling and training speed as a share of the CPU's fp32 3x3 convolution throughput, training
memory against depth with and without the reversible backward pass (glow_checkpoint), and that
pass's cost in time and float32 accuracy.

    python bench/bench_glow.py                            # everything: 20-40 minutes here
    python bench/bench_glow.py --parts sample,train --threads 1 --cpu_time   # on a shared machine
    python bench/bench_glow.py --parts memory --memory_hidden 256
    python bench/bench_glow.py --parts reversible --threads 1 --cpu_time
    python bench/bench_glow.py --parts script --threads 1 --cpu_time
    python bench/bench_glow.py --device cuda --parts sample,train,memory,script   # on a GPU

Parts (--parts, comma-separated):
  sample  seconds per 256 x 256 sample (batch 1, temperature 0.7): the paper's 256 px
          architecture (L = 6 levels, 512 hidden channels, 5 bits) scaled down to K =
          --sample_depth steps per level instead of 32; the time at K = 32 is estimated as this
          time x FLOPs(32) / FLOPs(K) (FLOPs are linear in K: counted at K and at 1).
  train   seconds per 32 px training iteration (forward, backward, Adam step; --fused_optim:
          Adam's fused kernel): the paper's CIFAR architecture (L = 3, 512 hidden, affine
          couplings) scaled down to K = --train_depth instead of 32 and batch --train_batch
          instead of 64.
          Both count FLOPs with torch.utils.flop_counter (convolutions: forward, and for train
          the backward) and time the work in turns with the reference, an fp32 3x3 convolution
          512 -> 512 at 16 x 16, batch 16 (oneDNN, NCHW and channels_last: the faster counts), so
          load from other jobs hits both alike; they print GFLOP/s and the ratio (goal: >= 70%).
          Also in those turns: the work's own convolutions alone (every convolution call, forward
          and backward, recorded with its shapes and layouts and replayed on fresh tensors, no
          other op): their share of the reference, the ceiling that faster code around them
          could reach, and the work's speed as a share of theirs.
  memory  one forward + backward pass at 32 px, L = 3, batch --memory_batch, --memory_hidden
          channels, for K = 8, 16, 32, with and without glow_checkpoint, each in a fresh
          process: the peak RSS during a second pass (reset just before it) over the RSS before
          it (model, gradients and the kernels' caches allocated): the activation memory. glibc
          is told to return freed blocks at once (MALLOC_MMAP_THRESHOLD_), so the peak follows
          the live tensors.
          Training memory = that + the model's tensors (parameters, gradients, Adam's two
          moments: 16 bytes per parameter); the growth from K = 8 to 32 is printed for both (goal
          with glow_checkpoint: < 10%).
  reversible  the cost of glow_checkpoint: seconds per training iteration (as train, same
          weights) with it against without, in turns; and its float32 accuracy on a model
          trained briefly (--accuracy_iters Adam steps on Shapes, 32 px, L = 3, K =
          --accuracy_depth, --accuracy_hidden channels, batch 16): per level, the largest error
          of the input the backward pass rebuilds (the level's steps inverted from their output)
          relative to the input's largest value, in float32 and float64; and the gradients'
          error against the plain pass's in float64 (|difference| over |float64 gradient|, all
          parameters as one vector) for the plain and the reversible float32 passes.

  script  training through train.py (--model Glow, Shapes, 32 px, L = 3, K = --train_depth,
          hidden --script_hidden, batch --train_batch, --script_iters iterations, no saves or
          evaluations): the time between the starts of successive training steps (the loop:
          the step, loading the batch, logs) against the time inside the step (glow_fns'
          training function), medians; the difference is what the script adds. Then sample.py
          --sample_npz of --script_samples images from its weights (temperature 0.7, batch
          --train_batch; building and loading the flow, writing the file included): seconds per
          image.

--device cuda runs every part on the GPU: clocks wait for the device (bench/devices.py), the
reference convolution runs there too (in TF32 where cuDNN allows it, as the model's
convolutions), and memory is torch.cuda.max_memory_allocated over the second pass instead of RSS.
--cpu_time is for the CPU only.

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
  Since 2026-12-07 a CPU process keeps its freed memory (distributed.keep_freed_memory, as
  train.py and sample.py do): before, glibc mapped every 32 MB activation of the 256 px model
  afresh, and a sample took 65k page faults (0.17-0.20 s of kernel time, counted in CPU time);
  now none. Two runs side by side, one core each (load average about 1): sample K 4 1.28 / 1.49
  s = 63 / 62% of the conv's 83.8 / 72.9 GFLOP/s; train K 8 2.24 / 2.06 s = 59 / 55% (training
  allocates below glibc's mmap threshold and was not faulting). The reference conv's best of 5
  varied 70-86 GFLOP/s between runs of the same hour, which moves the ratio by 10 points; the
  A/B in one process, in turns: 0 against 65544 faults per sample, 1.26-1.28 s against 1.34-1.57
  s of user time plus 0.17-0.20 s of system time.
  train also prints the share of the reference's forward + backward pass (3x the FLOPs of its
  forward; oneDNN's backward kernels run slower here), the fairer bound for a training step:
  three runs (load average about 1, two of them side by side): 2.03 / 2.03 / 1.90 s per
  iteration = 56 / 62 / 58% of the forward conv's 84.2 / 76.1 / 88.1 GFLOP/s and 66 / 72 / 73%
  of the forward + backward pass's 71.8 / 65.6 / 69.6 GFLOP/s.
  The goal of 70% was not reached then: the coupling networks' thin convolutions (6 -> 512 in,
  512 -> 12 out at level 1: a quarter of the FLOPs) run at 30-40% of the reference in oneDNN,
  also in channels_last (which the networks use on the CPU: training 5-10% and sampling 20%
  faster than NCHW), and ReLU, actnorm and Adam add memory-bound passes. The 1x1 convs as GEMMs
  (F.linear) and the thin convs as unfold/fold + GEMM measured no faster.
  2026-12-07 late, another machine of the same name: a 2-core AMD EPYC with AVX-512 (the
  reference conv 113-118 GFLOP/s on one thread), quiet, two runs side by side one core each,
  the code before against after. A profile of the 256 px sample showed its 512 -> 512 1x1
  convolutions (half its FLOPs) in PyTorch's im2col + GEMM path, not oneDNN: PyTorch picks it
  for 1x1 kernels on one thread below batch 16. Glow.conv now sends float32 1x1 convolutions on
  the CPU to oneDNN (torch.mkldnn_convolution) and, without autograd, computes the 3x3 ones to
  fewer than 32 channels (512 -> 12 at 128 x 128 ran at 52 GFLOP/s) as a 1x1 convolution to 9 x
  as many channels plus 9 shifted sums (that conv 37 -> 30 ms; the thin-input 6 -> 512 one as
  im2col + GEMM measured no faster, nor did oneDNN's fused conv + ReLU):
    sample  K 4, 1 thread, CPU time: 0.906 / 0.964 s = 63 / 61% of the conv before; 0.828 /
            0.851 s = 69 / 68% with the 1x1 convs in oneDNN; 0.770 s = 75% with the thin 3x3
            ones too (the same run's 1x1-only code: 0.832 s, 69%). 88% of the sample's time is
            now in oneDNN's convolutions. Then InvConv.reverse solving W x = y for the top
            levels' few pixels (16 of 384 channels at level 6) instead of inverting W in
            float64: 0.759 / 0.767 s = 76 / 75% against 0.792 / 0.790 s = 72 / 73% (two pairs
            side by side, cores swapped); 2 threads unchanged (0.44 s).
            2 threads, wall clock, in turns: before 0.452 / 0.475 s = 64 / 62%, after 0.449 /
            0.427 s = 66 / 68% (at two threads PyTorch already ran the 1x1 convs in oneDNN).
    train   K 8, batch 16 (PyTorch already ran these 1x1 convs in oneDNN; the thin 3x3 path is
            off under autograd, its backward through the taps was 5% slower): 1.165-1.269 s per
            iteration = 65-70% of the forward conv, 70-75% of the forward + backward pass, in
            five runs of the code before and after alike. Its profile: convolution backward 59%
            of the time, forward convolutions 26%, ReLU backward 4%.
  2026-12-08, a 2-core Intel Xeon with AVX-512 (the reference conv 187-206 GFLOP/s on one
  thread), quiet, 1 thread, CPU time, with the replay of the work's own convolutions:
    sample  K 4: 0.535 s = 64% of the conv; its 93 convolutions alone 76%, the sample at 84% of
            them.
    train   K 8, batch 16, four runs: 0.864-0.891 s = 52-59% (57-61% of the forward + backward
            pass); its 196 convolutions alone 68-74%, the step at 75-80% of them. The 1x1
            512 -> 512 convolutions (GEMMs) run at 160-185 GFLOP/s forward + backward, the thin
            6 -> 512 3x3 one at 71 (its grad_input, 512 -> 6, at 68), so on this machine the goal
            of 70% lies above what oneDNN does on the flow's shapes. --fused_optim: 0.846 s
            against 0.864 s (Adam alone 13.8 against 37.6 ms).
  memory  (2026-12-07, 2 threads, load average 7-11 from other jobs: RSS does not depend on it)
          hidden 512, batch 16, K 8 / 16 / 32:
            without glow_checkpoint: activations 225 / 444 / 883 MB (+293%), training memory
              (+ model tensors: parameters, gradients, Adam, 168 / 336 / 672 MB) 393 / 780 /
              1555 MB (+296%);
            with it (the reversible backward pass): activations 35.1 / 35.6 / 35.3 MB (+0.6%:
              constant; the goal of < 10% holds for them), training memory 203 / 372 / 707 MB
              (+248%: the model tensors, which grow with K whatever is done, are 83-95% of it
              here, so counted in, the goal cannot be met at this size).
          Before (torch.utils.checkpoint per step, which keeps each step's input): activations
          37 / 40 / 44 MB (+19%).
  reversible  (2026-12-07, load average 4-5 for the 1-thread run, 5-8 for the 2-thread one):
          1 thread, CPU time: K 8, batch 16, hidden 512: 2.92 s per iteration with
            glow_checkpoint against 2.27 s without: x1.29 (one more forward of each step; the
            coupling network runs once for the inverse and the recomputation).
          2 threads, wall clock: 10.7 s against 7.0 s: x1.54 (noisier under this load).
          float32 accuracy, hidden 64, 60 iterations: K 32 (1 thread): inputs rebuilt to 2e-05 /
            9e-07 / 1e-06 of their largest value at levels 1 / 2 / 3 (float64: 1e-13 / 4e-15 /
            6e-15); gradients' error against float64 3.2e-05 for the plain float32 pass and
            3.2e-05 for the reversible one. K 8 (2 threads): 5e-06 / 4e-07 / 7e-07; 1.2e-06 plain,
            5.5e-06 reversible (another K 8 run, 1 thread, outside the bench: 3.1e-06 against
            5.2e-05). The first level, which sees the data's fine pixel steps, rebuilds least
            exactly; its error grows with K (2x from K 8 to 32 here) and with how ill-conditioned
            the learned inverse is (a tiny model, hidden 8, K 8, its weights perturbed at random
            by 0.05, rebuilt its second level's input only to 8e-02 and its gradients were 1e-1
            off), so under glow_checkpoint this part is worth rerunning on the trained weights.
  script  (2026-12-07, load average 2-4, 1 thread, CPU time, --train_depth 8 --train_batch 32
          --script_hidden 128 --script_samples 256): 0.697 s per train.py iteration against
          0.681 s in the training step (+2.3%); sample.py 6.3 ms per 32 px image.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import datasets  # noqa: E402
import devices  # noqa: E402
import Glow  # noqa: E402

PAPER_DEPTH = 32
DEVICE = 'cpu'  # main() sets --device


def clock(cpu):
  return time.process_time if cpu else lambda: devices.clock(DEVICE)


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
  # oneDNN off while counting: Glow.conv then calls F.conv2d, whose FLOPs the counter knows (it
  # has no formula for torch.mkldnn_convolution, which Glow runs its 1x1 convolutions with).
  with warnings.catch_warnings(), FlopCounterMode(display=False) as counter:
    warnings.filterwarnings('ignore', message='TF32 acceleration')  # flags() sets it too
    with torch.backends.mkldnn.flags(enabled=False):
      fn()
  return counter.get_total_flops()


class ConvCalls(TorchDispatchMode):
  """Records the convolutions, forward and backward, that a piece of work runs (as aten calls
  with their tensors' shapes, strides and dtypes); replayer() gives a function that runs them
  alone on fresh tensors of the same layouts (one tensor per shape, so they may sit warmer in
  the caches than the work's). Its time is what the work would take if everything but its
  convolutions were free, at the shapes it has: the most a faster rest of the code could give."""
  OPS = (torch.ops.aten.convolution.default, torch.ops.aten.mkldnn_convolution.default,
         torch.ops.aten.convolution_backward.default)

  def __init__(self):
    super(ConvCalls, self).__init__()
    self.calls = []

  def __torch_dispatch__(self, func, types, args=(), kwargs=None):
    if func in self.OPS:
      spec = [('tensor', tuple(a.shape), a.stride(), a.dtype) if isinstance(a, torch.Tensor)
              else a for a in args]
      self.calls.append((func, spec, kwargs or {}))
    return func(*args, **(kwargs or {}))

  def replayer(self):
    """A function that runs the recorded calls again, on tensors made here, once."""
    tensors = {}  # one per shape, layout and dtype, shared by the calls

    def make(spec):
      if not (isinstance(spec, tuple) and spec[:1] == ('tensor',)):
        return spec
      if spec not in tensors:
        _, shape, stride, dtype = spec
        tensors[spec] = torch.empty_strided(shape, stride, dtype=dtype, device=DEVICE).normal_()
      return tensors[spec]
    calls = [(func, [make(a) for a in spec], kwargs) for func, spec, kwargs in self.calls]

    def replay():
      with torch.no_grad():
        for func, args, kwargs in calls:
          func(*args, **kwargs)
    return replay


def shapes_batch(n, resolution):
  data = datasets.Shapes(resolution=resolution, num_images=n)
  return (torch.stack([data[i][0] for i in range(n)]).to(DEVICE),
          torch.as_tensor(data.labels).to(DEVICE))


def flow(resolution, levels, depth, hidden, **options):
  torch.manual_seed(0)
  return Glow.Glow(resolution=resolution, n_classes=10, glow_levels=levels, glow_depth=depth,
                   glow_hidden=hidden, **options).to(DEVICE)


# ---------------------------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------------------------


def timed_against_conv(label, work, flops, args, backward=False):
  """Time work in turns with the reference 3x3 convolution (both layouts; the faster counts) and
  with its own convolutions alone (ConvCalls), and print its time and GFLOP/s as a share of the
  reference's and of its convolutions'. With backward, also against the reference's forward +
  backward pass (what a training step's convolutions can reach: on this CPU oneDNN's backward
  kernels are slower than its forward). Returns work's time."""
  recorder = ConvCalls()
  with recorder:
    work()
  conv = torch.nn.Conv2d(512, 512, 3, padding=1, bias=False).requires_grad_(False).to(DEVICE)
  x = torch.randn(16, 512, 16, 16, device=DEVICE)
  cl = x.contiguous(memory_format=torch.channels_last)
  ref_flops = count_flops(lambda: conv(x))
  fns = {'work': work, 'convs': recorder.replayer(), 'conv': lambda: conv(x),
         'conv_cl': lambda: conv(cl)}
  if backward:
    train_conv = torch.nn.Conv2d(512, 512, 3, padding=1, bias=False).to(DEVICE)
    xs = [t.clone().requires_grad_() for t in (x, cl)]

    def train_step(t):  # gradients set to None first, as the training step's zero_grad does
      train_conv.weight.grad = t.grad = None
      train_conv(t).sum().backward()
    fns.update({'train_conv': lambda: train_step(xs[0]),
                'train_conv_cl': lambda: train_step(xs[1])})
  times = interleaved(fns, args.repeats, args.cpu_time)
  reference = ref_flops / min(times['conv'], times['conv_cl']) / 1e9
  rate = flops / times['work'] / 1e9
  print('%s: %.4f s, %.1f GFLOP, %.1f GFLOP/s = %.0f%% of the 3x3 conv\'s %.1f GFLOP/s '
        '(NCHW %.1f, channels_last %.1f)'
        % (label, times['work'], flops / 1e9, rate, 100 * rate / reference, reference,
           ref_flops / times['conv'] / 1e9, ref_flops / times['conv_cl'] / 1e9))
  if backward:
    train_flops = count_flops(fns['train_conv'])
    train_reference = train_flops / min(times['train_conv'], times['train_conv_cl']) / 1e9
    print('         = %.0f%% of the conv\'s forward + backward pass, %.1f GFLOP/s'
          % (100 * rate / train_reference, train_reference))
  print('         its %d convolutions alone, replayed at their shapes and layouts: %.4f s, %.0f%% '
        'of the 3x3 conv\'s GFLOP/s; the whole work runs at %.0f%% of their speed'
        % (len(recorder.calls), times['convs'], 100 * flops / times['convs'] / 1e9 / reference,
           100 * times['convs'] / times['work']))
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
  optimizer = Glow.make_optimizer(net.parameters(), {'glow_optimizer': 'adam', 'glow_lr': 1e-4,
                                                     'fused_optim': args.fused_optim})

  def iteration():
    loss = net.loss(x, y)['loss']
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
  flops = count_flops(lambda: net.loss(x, y)['loss'].backward())
  timed_against_conv('train    32 px, L 3, K %d, hidden 512, batch %d, one iteration'
                     % (args.train_depth, args.train_batch), iteration, flops, args, backward=True)


def reversible_cost(args):
  x, y = shapes_batch(args.train_batch, 32)
  plain = flow(32, 3, args.train_depth, 512)
  with torch.no_grad():
    plain(x)
  reversible = flow(32, 3, args.train_depth, 512, glow_checkpoint=True)
  reversible.load_state_dict(plain.state_dict())

  def iteration(net, optimizer):
    def run():
      loss = net.loss(x, y)['loss']
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
    return run
  times = interleaved({name: iteration(net, torch.optim.Adam(net.parameters(), lr=1e-5))
                       for name, net in (('plain', plain), ('reversible', reversible))},
                      args.repeats, args.cpu_time)
  print('reversible 32 px, L 3, K %d, hidden 512, batch %d, one iteration: %.2f s with '
        'glow_checkpoint, %.2f s without: x%.2f'
        % (args.train_depth, args.train_batch, times['reversible'], times['plain'],
           times['reversible'] / times['plain']))


def rebuild_errors(net, v):
  """Per level: max |input rebuilt from the level's output - input| / max |input|."""
  errors = []
  with torch.no_grad():
    for level, steps in enumerate(net.levels):
      v = Glow.squeeze(v)
      x = v
      for step in steps:
        x = step(x)[0]
      rebuilt = x
      for step in reversed(steps):
        rebuilt = step.reverse(rebuilt)
      errors.append(((rebuilt - v).abs().max() / v.abs().max()).item())
      if level < net.n_levels - 1:
        v = net.splits[level](x)[0]
  return errors


def reversible_accuracy(args):
  net = flow(32, 3, args.accuracy_depth, args.accuracy_hidden)
  x, y = shapes_batch(256, 32)
  with torch.no_grad():
    net(x[:64], y[:64])
  optimizer = torch.optim.Adam(net.parameters())
  generator = torch.Generator().manual_seed(0)
  for i in range(args.accuracy_iters):
    optimizer.param_groups[0]['lr'] = 1e-3 * min(1, (i + 1) / 20)  # warm-up
    batch = torch.randint(0, len(x), (16,), generator=generator)
    loss = net.loss(x[batch], y[batch])['loss']
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
  x, y = x[:16], y[:16]
  exact = net.double()
  grads = {'float64': gradients(exact, x.double(), y)}
  errors = {'float64': rebuild_errors(exact, exact.preprocess(x.double(), dequantize=False))}
  net = exact.float()
  errors['float32'] = rebuild_errors(net, net.preprocess(x, dequantize=False))
  grads['plain'] = gradients(net, x, y)
  net.checkpoint = True
  grads['reversible'] = gradients(net, x, y)

  def error(g):
    return (torch.cat([(g[k].double() - grads['float64'][k]).flatten() for k in g]).norm()
            / torch.cat([v.flatten() for v in grads['float64'].values()]).norm()).item()
  print('reversible 32 px, L 3, K %d, hidden %d, after %d iterations (train bpd %.2f): input '
        'rebuilt per level to %s in float32, %s in float64; gradients\' error against float64: '
        'plain float32 %.1e, reversible float32 %.1e'
        % (args.accuracy_depth, args.accuracy_hidden, args.accuracy_iters, loss.item(),
           ' / '.join('%.0e' % e for e in errors['float32']),
           ' / '.join('%.0e' % e for e in errors['float64']),
           error(grads['plain']), error(grads['reversible'])))


def gradients(net, x, y):
  """{name: gradient} of the bits/dim on x (no dequantisation noise: the same in every dtype)."""
  net.zero_grad(set_to_none=True)
  net.bits_per_dim(net(x, y, dequantize=False)[1]).mean().backward()
  return {name: p.grad for name, p in net.named_parameters()}


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
  if devices.is_cuda(DEVICE):
    before = devices.allocated_mib(DEVICE)
    devices.reset_peak(DEVICE)
    net.loss(x, y)['loss'].backward()
    peak = devices.peak_mib(DEVICE)
  else:
    before = rss_mb('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    net.loss(x, y)['loss'].backward()
    peak = rss_mb('VmHWM')
  tensors = 16 * sum(p.numel() for p in net.parameters()) / 2 ** 20
  print(json.dumps({'activations': peak - before, 'tensors': tensors}))


def memory(args):
  env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='0')
  for checkpoint in (False, True):
    results = {}
    for depth in (8, 16, 32):
      out = subprocess.run([sys.executable, __file__, '--memory_child', str(depth),
                            str(int(checkpoint)), '--memory_hidden', str(args.memory_hidden),
                            '--memory_batch', str(args.memory_batch), '--threads',
                            str(args.threads), '--device', DEVICE],
                           env=env, check=True, capture_output=True, text=True).stdout
      r = results[depth] = json.loads(out.strip().splitlines()[-1])
      print('memory   32 px, L 3, hidden %d, batch %d, K %2d, glow_checkpoint %-3s: activations '
            '%6.1f MB, model tensors %5.0f MB, training memory %5.0f MB'
            % (args.memory_hidden, args.memory_batch, depth, 'on' if checkpoint else 'off',
               r['activations'], r['tensors'], r['activations'] + r['tensors']))
    growth = results[32]['activations'] / results[8]['activations'] - 1
    total = ((results[32]['activations'] + results[32]['tensors'])
             / (results[8]['activations'] + results[8]['tensors']) - 1)
    print('memory   glow_checkpoint %-3s: K 8 -> 32: activations %+.1f%%, training memory '
          '(activations + model tensors) %+.0f%%' % ('on' if checkpoint else 'off', 100 * growth,
                                                       100 * total))


def script_speed(args):
  import glow_fns
  import sample
  import train
  make, now = glow_fns.Glow_training_function, clock(args.cpu_time)
  starts, inside = [], []

  def timed(*fn_args):
    step = make(*fn_args)

    def train_step(x, y):
      starts.append(now())
      out = step(x, y)
      out['bpd'].item()  # the step's work done (waits for the device)
      inside.append(now() - starts[-1])
      return out
    return train_step
  glow_fns.Glow_training_function = timed
  with tempfile.TemporaryDirectory() as root:
    train.main(('--model Glow --dataset Shapes --resolution 32 --glow_levels 3 --glow_depth %d '
                '--glow_hidden %d --batch_size %d --num_iters %d --num_workers 0 --shuffle '
                '--save_every 1000000 --test_every 1000000 --base_root %s --experiment_name b '
                '--device %s' % (args.train_depth, args.script_hidden, args.train_batch,
                                 args.script_iters, root, DEVICE)).split())
    glow_fns.Glow_training_function = make
    start = now()
    sample.main(('--model Glow --experiment_name b --config_from_name --base_root %s '
                 '--sample_npz --sample_num_npz %d --device %s'
                 % (root, args.script_samples, DEVICE)).split())
    per_image = (now() - start) / args.script_samples
  loop = sorted(b - a for a, b in zip(starts[1:-1], starts[2:]))  # the first: warm-up
  step = sorted(inside[1:])
  loop, step = loop[len(loop) // 2], step[len(step) // 2]
  print('script   train.py, 32 px, L 3, K %d, hidden %d, batch %d: %.3f s per iteration, the '
        'training step %.3f s of it (the script adds %.1f%%); sample.py: %.4f s per image'
        % (args.train_depth, args.script_hidden, args.train_batch, loop, step,
           100 * (loop / step - 1), per_image))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--parts', default='sample,train,memory,reversible,script',
                      help='comma-separated: sample, train, memory, reversible, script')
  parser.add_argument('--repeats', type=int, default=5,
                      help='timed runs per measurement (the best counts)')
  parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
  parser.add_argument('--cpu_time', action='store_true',
                      help='time with the process CPU time instead of the wall clock: steadier '
                           'on a machine other jobs share, meaningful with --threads 1')
  parser.add_argument('--sample_depth', type=int, default=4, help='K of the 256 px model')
  parser.add_argument('--train_depth', type=int, default=8, help='K of the 32 px model')
  parser.add_argument('--train_batch', type=int, default=16, help='batch of the 32 px model')
  parser.add_argument('--fused_optim', action='store_true',
                      help='train with Adam\'s fused kernel (train.py --fused_optim)')
  parser.add_argument('--memory_hidden', type=int, default=512,
                      help='hidden channels of the memory runs')
  parser.add_argument('--memory_batch', type=int, default=16, help='batch of the memory runs')
  parser.add_argument('--accuracy_depth', type=int, default=32,
                      help='K of the model the reversible part measures float32 accuracy on')
  parser.add_argument('--accuracy_hidden', type=int, default=64,
                      help='hidden channels of that model')
  parser.add_argument('--accuracy_iters', type=int, default=60,
                      help='training iterations of that model before it is measured')
  parser.add_argument('--script_hidden', type=int, default=128,
                      help='hidden channels of the train.py run')
  parser.add_argument('--script_iters', type=int, default=30,
                      help='iterations of the train.py run')
  parser.add_argument('--script_samples', type=int, default=512,
                      help='images sample.py draws from its weights')
  devices.add_device_flag(parser)
  parser.add_argument('--memory_child', nargs=2, type=int, metavar=('K', 'CHECKPOINT'),
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if not set(args.parts.split(',')) <= {'sample', 'train', 'memory', 'reversible', 'script'}:
    parser.error('--parts takes sample, train, memory, reversible, script, comma-separated '
                 '(got %s)' % args.parts)
  if args.sample_depth < 2:
    parser.error('--sample_depth must be at least 2 (the FLOPs at K = 32 are extrapolated from '
                 'those at K and at 1)')
  torch.set_num_threads(args.threads)
  global DEVICE
  DEVICE = devices.pick(args.device)
  if args.cpu_time and devices.is_cuda(DEVICE):
    parser.error('--cpu_time measures the CPU, but the device is %s: add --device cpu or leave '
                 '--cpu_time out' % DEVICE)
  if args.memory_child:
    return memory_child(args.memory_child[0], bool(args.memory_child[1]), args.memory_hidden,
                        args.memory_batch)
  parts = args.parts.split(',')
  print('torch %s, %s, %s' % (torch.__version__, devices.describe(DEVICE),
                             'CPU time' if args.cpu_time else 'wall clock'))
  if 'sample' in parts:
    sample_speed(args)
  if 'train' in parts:
    train_speed(args)
  if 'memory' in parts:
    memory(args)
  if 'reversible' in parts:
    reversible_cost(args)
    reversible_accuracy(args)
  if 'script' in parts:
    script_speed(args)


if __name__ == '__main__':
  main()
