"""Forward + backward speed of G and D against a straightforward implementation of the same maths.

    python bench/bench_models.py [--repeats 3] [--threads 2] [--device cuda]

For the CIFAR script config (32 px, ch 64, batch 50) and I128 at ch 32 (the released config's
flags otherwise, batch 8): ms per forward+backward step and images/s of this project's G and D,
and of bench/biggan_reference.py (a plain functional BigGAN over the same weights) measured in the
same run, and the ratio. fp32 on --device (auto: CUDA when present); best of --repeats after one
warm-up, every clock read after the device has finished (bench/devices.py); on CUDA also each
pass's peak memory (torch.cuda.max_memory_allocated).

Measured 2026-12-02, 2-core Intel Xeon (AVX-512, AMX; a VM whose timings swing 10-20% between
runs), ratio naive / ours over two runs: CIFAR G 1.72-2.05x, D 1.74-1.77x; I128 G 1.81-2.29x,
D 2.09-2.20x. The same with ATen and oneDNN held to AVX2 (ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2): CIFAR G 1.66-1.68x, D 1.55-1.77x; I128 G 1.69-2.20x, D 1.94-2.10x. Most
of the I128 gain is the attention at 64x64 running SDPA's flash kernel (layers.Attention; before
it: G 1.50x, D 1.17x here, and G 0.82x on an AVX2-only AMD EPYC, not re-measured since).
"""
import argparse
import shlex

import torch

import devices  # puts the project root on sys.path

import BigGAN  # noqa: E402
import config as configuration  # noqa: E402
from biggan_reference import Ref  # noqa: E402

CONFIGS = {
    'CIFAR (32 px, ch 64, bs 50)': (
        '--dataset C10 --G_attn 0 --D_attn 0 --G_init N02 --D_init N02', 32, 10, 50,
        dict(n_blocks=3, attn_block=None), dict(downsample=[True, True, False, False],
                                                attn_blocks=set())),
    'I128 (ch 32, bs 8)': (
        '--dataset I128_hdf5 --G_shared --hier --dim_z 120 --shared_dim 128 --G_ch 32 --D_ch 32 '
        '--G_attn 64 --D_attn 64 --SN_eps 1e-6', 128, 1000, 8,
        dict(n_blocks=5, attn_block=3), dict(downsample=[True] * 5 + [False], attn_blocks={0})),
}


def best_time(fn, repeats, device):
  """(best seconds of `repeats` calls after one warm-up, peak MiB of a call or None on the CPU)."""
  fn()
  times = []
  devices.reset_peak(device)
  base = devices.allocated_mib(device)
  for _ in range(repeats):
    start = devices.clock(device)
    fn()
    times.append(devices.clock(device) - start)
  return min(times), (devices.peak_mib(device) - base if devices.is_cuda(device) else None)


def reference_for(net, config, chunk=0):
  ref = Ref(net.state_dict(), True, config['SN_eps'], config['BN_eps'], chunk=chunk)
  params = dict(net.named_parameters())
  for name, t in ref.sd.items():
    t.requires_grad_(name in params)
  return ref


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=3, help='timed runs per measurement')
  parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
  devices.add_device_flag(parser)
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  device = devices.pick(args.device)
  print('torch %s; %s' % (torch.__version__, devices.describe(device)))
  memory = devices.is_cuda(device)
  print('%-28s %-3s %12s %12s %10s %10s %7s%s' % (
      'config', 'net', 'ours ms', 'naive ms', 'ours im/s', 'naive im/s', 'ratio',
      ' %9s %9s' % ('ours MiB', 'naive MiB') if memory else ''))
  for label, (flags, res, n_classes, batch, g_args, d_args) in CONFIGS.items():
    torch.manual_seed(0)
    args = configuration.prepare_parser().parse_args(shlex.split(flags))
    config = configuration.prepare_config(vars(args))
    assert (config['resolution'], config['n_classes']) == (res, n_classes)
    G, D = BigGAN.Generator(**config).to(device), BigGAN.Discriminator(**config).to(device)
    z, y = torch.randn(batch, G.dim_z), torch.randint(0, n_classes, (batch,))
    x = torch.rand(batch, 3, res, res) * 2 - 1
    z, y, x = z.to(device), y.to(device), x.to(device)
    g_ref = reference_for(G, config, G.z_chunk_size)
    d_ref = reference_for(D, config)
    runs = {
        'G': (lambda: G(z, G.shared(y)).mean().backward(),
              lambda: g_ref.G(z, y, **g_args).mean().backward()),
        'D': (lambda: D(x, y).mean().backward(),
              lambda: d_ref.D(x, y, **d_args).mean().backward()),
    }
    for net, (ours, naive) in runs.items():
      (t_ours, m_ours), (t_naive, m_naive) = (best_time(ours, args.repeats, device),
                                              best_time(naive, args.repeats, device))
      print('%-28s %-3s %12.1f %12.1f %10.1f %10.1f %6.2fx%s' % (
          label, net, 1000 * t_ours, 1000 * t_naive, batch / t_ours, batch / t_naive,
          t_naive / t_ours, ' %9.0f %9.0f' % (m_ours, m_naive) if memory else ''))
  print('ratio = naive time / ours (above 1: this project is faster)')


if __name__ == '__main__':
  main()
