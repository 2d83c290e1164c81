"""Devices for the benches: the --device flag, clocks that wait for the device, peak memory and the
device's dense matmul peak.

CUDA runs asynchronously: a clock read right after a launch measures the launch, not the work.
`clock` synchronises the device before it reads the time, so `clock(d) - start` covers everything
queued in between; callers leave warm-up iterations out of what they time. Peak memory on CUDA is
torch.cuda.max_memory_allocated since `reset_peak` (the CPU benches report peak RSS instead).
"""
import contextlib
import os
import resource
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import distributed  # noqa: E402
from errors import UserError  # noqa: E402


def add_device_flag(parser):
  parser.add_argument('--device', type=str, default='auto',
                      help='Where to run: auto (CUDA when present, else the CPU), cpu, cuda or '
                           'cuda:N')


def pick(flag):
  """train.py's --device rule; a device that is not there ends the bench with one line."""
  try:
    device = distributed.pick_device(flag)
  except UserError as e:
    raise SystemExit('error: %s' % e)
  if is_cuda(device):
    torch.cuda.set_device(torch.device(device))
  return device


def is_cuda(device):
  return str(device).startswith('cuda')


def sync(device):
  if is_cuda(device):
    torch.cuda.synchronize(device)


def clock(device):
  """time.perf_counter() once the device has finished everything queued so far."""
  sync(device)
  return time.perf_counter()


def reset_peak(device):
  if is_cuda(device):
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)


def allocated_mib(device):
  return torch.cuda.memory_allocated(device) / 2 ** 20 if is_cuda(device) else 0.0


def peak_mib(device):
  """CUDA: the most memory allocated since reset_peak; CPU: this process's peak RSS."""
  if is_cuda(device):
    return torch.cuda.max_memory_allocated(device) / 2 ** 20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.


def describe(device):
  """The device in one line, for the header of a bench's output."""
  if is_cuda(device):
    p = torch.cuda.get_device_properties(torch.device(device))
    return '%s: %s, %.1f GiB, compute capability %d.%d, CUDA %s, cuDNN %s' % (
        device, p.name, p.total_memory / 2 ** 30, p.major, p.minor, torch.version.cuda,
        torch.backends.cudnn.version())
  return 'cpu: %s, %d threads' % (torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())


@contextlib.contextmanager
def conv_precision_matmuls(device, dtype):
  """fp32 convolutions on CUDA run in TF32 by default (cudnn.allow_tf32), matmuls do not: while
  measuring the fp32 peak, give matmuls the convolutions' setting."""
  previous = torch.backends.cuda.matmul.allow_tf32
  if is_cuda(device) and dtype == torch.float32:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
  try:
    yield
  finally:
    torch.backends.cuda.matmul.allow_tf32 = previous


def matmul_peak(device, dtype, size=0, repeats=5):
  """Dense square matmul FLOP/s of `dtype` on `device`, best of `repeats` after a warm-up: the peak
  that model-FLOPs utilisation is measured against, on this machine, now."""
  size = size or (8192 if is_cuda(device) else 1024)
  generator = torch.Generator().manual_seed(0)
  a, b = (torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
          for _ in range(2))
  best = float('inf')
  with conv_precision_matmuls(device, dtype), torch.no_grad():
    a @ b
    for _ in range(repeats):
      start = clock(device)
      a @ b
      best = min(best, clock(device) - start)
  return 2.0 * size ** 3 / best


def dtype_of(flags):
  """The compute dtype of a train.py column from its flags (--amp), for its matmul peak."""
  if '--amp bf16' in flags:
    return torch.bfloat16
  if '--amp fp16' in flags:
    return torch.float16
  return torch.float32
