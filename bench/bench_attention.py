"""Speed and memory of the SAGAN attention layer against the original's equations.

    python bench/bench_attention.py [--repeats 2] [--threads 2] [--device cuda]

The layer at the two map sizes BigGAN attends at: 64x64 (I128, --G_attn 64; batch 8) and
128x128 (I256/I512 with --G_attn 128; batch 4), 64 channels, fp32, forward + backward. Two
implementations over the same weights, each in a fresh process:
  ours   layers.Attention (SDPA's fused kernel: the attention map is never stored)
  naive  bench/biggan_reference.py's attention: the original's bmm, softmax, bmm, which stores the
         (h*w) x (h*w / 4) map per image and its softmax for the backward pass
Prints the best time of --repeats after one warm-up (on CUDA every clock read waits for the
device, bench/devices.py), the memory the passes needed (CPU: the growth of peak RSS over the
process before the first pass; CUDA: torch.cuda.max_memory_allocated beyond what was allocated
before it), and the ratios naive / ours.

Measured 2026-12-02, 2-core Intel Xeon, two runs: 64x64, bs 8: ours 0.12 s, +113-129 MB; naive
0.47 s, +609-625 MB (4.0x the time, 4.7-5.5x the memory). 128x128, bs 4: ours 0.72-0.81 s, +198 MB;
naive 4.7-4.8 s, +4286 MB (5.8-6.7x, 21.6-21.7x). Before this project used the fused kernel (SDPA
fell back to its math path), the 128x128 case took 2.97 s and +3186 MB.
"""
import argparse
import os
import subprocess
import sys

import torch

import devices  # puts the project root on sys.path

import layers  # noqa: E402
from biggan_reference import Ref  # noqa: E402

CASES = {'64x64, batch 8': (64, 8), '128x128, batch 4': (128, 4)}
CHANNELS = 64


def child(kind, size, batch, repeats, device):
  """Time and peak-memory growth of one implementation; printed for the parent."""
  torch.manual_seed(0)
  attn = layers.Attention(CHANNELS).to(device).eval()  # eval: SN leaves u alone, passes repeat
  with torch.no_grad():
    attn.gamma.fill_(1.0)
  x = torch.randn(batch, CHANNELS, size, size).to(device).requires_grad_()
  if kind == 'ours':
    run = lambda: attn(layers.activation_layout(x))  # noqa: E731  (as G and D call it)
  else:
    ref = Ref({'a.' + k: v.requires_grad_(v.is_floating_point())
               for k, v in attn.state_dict().items()}, False, 1e-12, 1e-5)
    run = lambda: ref.attention('a', x)  # noqa: E731
  devices.reset_peak(device)
  before = devices.allocated_mib(device) if devices.is_cuda(device) else devices.peak_mib(device)
  times = []
  for _ in range(repeats + 1):
    start = devices.clock(device)
    run().sum().backward()
    times.append(devices.clock(device) - start)
  print(min(times[1:]), devices.peak_mib(device) - before)


def measure(kind, size, batch, args):
  out = subprocess.run([sys.executable, os.path.abspath(__file__), '--child', kind, str(size),
                        str(batch), '--repeats', str(args.repeats), '--threads', str(args.threads),
                        '--device', args.device],
                       capture_output=True, text=True, check=True).stdout.split()
  return float(out[-2]), float(out[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=2, help='timed passes after one warm-up')
  parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
  parser.add_argument('--child', nargs=3, metavar=('KIND', 'SIZE', 'BATCH'),
                      help='internal: run one measurement in this process')
  devices.add_device_flag(parser)
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  args.device = devices.pick(args.device)
  if args.child:
    return child(args.child[0], int(args.child[1]), int(args.child[2]), args.repeats, args.device)
  print('torch %s; %s' % (torch.__version__, devices.describe(args.device)))
  print('%-18s %9s %9s %10s %10s %7s %7s' % ('map', 'ours s', 'naive s', 'ours MB', 'naive MB',
                                            'time', 'memory'))
  for label, (size, batch) in CASES.items():
    (t_ours, m_ours), (t_naive, m_naive) = [measure(kind, size, batch, args)
                                            for kind in ('ours', 'naive')]
    print('%-18s %9.3f %9.3f %10.0f %10.0f %6.1fx %6.1fx' % (
        label, t_ours, t_naive, m_ours, m_naive, t_naive / t_ours, m_naive / max(m_ours, 1.)))
  print('%d channels, fp32, forward + backward; MB: %s; ratios naive / ours' % (
      CHANNELS, 'peak CUDA memory beyond what was allocated before' if devices.is_cuda(args.device)
      else 'peak RSS growth'))


if __name__ == '__main__':
  main()
