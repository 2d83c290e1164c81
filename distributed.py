"""Multi-process training under torchrun: one process per device, on one node or many.

    torchrun --nproc_per_node 8 train.py ...                       # one 8-GPU node
    torchrun --nnodes 4 --node_rank R --nproc_per_node 8 \\
             --rdzv_endpoint HOST:29500 train.py ...                 # four nodes

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; `setup` joins the process group (env://; NCCL on
GPUs, gloo on CPU) and picks this process's device. Every process builds the same models from the
same seed; data are sharded by global rank (datasets.py); random z/y streams differ per rank.
Gradients are averaged by DistributedDataParallel: G (with its shared embedding) and D are wrapped
separately, so G_D can use whichever is being trained.

Rank 0 alone takes the experiment's run lock (`on_main`: a refusal there stops every rank with
its message) and writes checkpoints, logs and samples.

Batch arithmetic: one D step sees batch_size x num_D_accumulations x world_size images; the
original's 256 x 8 on 8 GPUs (2048) is batch_size 32 x 8 accumulations x 8 processes.
"""
import ctypes
import datetime
import inspect
import os
import platform

import torch
import torch.distributed as dist
import torch.nn as nn

import models
from errors import UserError


class Context(object):
  """rank, world_size, local_rank, device of this process; `control` is a CPU (gloo) group for
  small decisions (e.g. stop now) that must not synchronise the GPU."""

  def __init__(self, rank=0, world_size=1, local_rank=0, device='cpu', control=None):
    self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
    self.device = device
    self.control = control

  @property
  def is_main(self):
    return self.rank == 0

  @property
  def distributed(self):
    return self.world_size > 1


def keep_freed_memory():
  """Have glibc's malloc keep freed memory in the process (no mmap; the heap trimmed only when
  more than 1 GiB at its top is free; returns whether it did). By default it maps each block of
  32 MB or more afresh and unmaps it when freed, so every large tensor page-faults on first
  touch: sampling a 256 px Glow (bench/bench_glow.py) took 65k faults, 256 MB zeroed by the
  kernel, per image. Peak memory is the same; freed memory is only given back later (at the end
  of the process, or past that 1 GiB). Called for CPU processes by pick_device; a no-op
  where malloc is not glibc's, or is set up by the environment (MALLOC_*, GLIBC_TUNABLES: the
  way to opt out, e.g. MALLOC_MMAP_MAX_=65536)."""
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  if 'GLIBC_TUNABLES' in os.environ or any(name.startswith('MALLOC_') for name in os.environ):
    return False
  M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
  libc = ctypes.CDLL(None)
  return bool(libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2 ** 30))


def pick_device(flag, local_rank=0):
  """--device auto: this process's GPU when there is one, else the CPU (whose processes keep
  their freed memory: keep_freed_memory)."""
  device = _pick_device(flag, local_rank)
  if device.startswith('cpu'):
    keep_freed_memory()
  return device


def _pick_device(flag, local_rank):
  if flag == 'auto':
    return 'cuda:%d' % local_rank if torch.cuda.is_available() else 'cpu'
  try:
    device = torch.device(flag)
  except RuntimeError:
    raise UserError('--device %s is not a device; use auto, cpu, cuda or cuda:N' % flag)
  if device.type == 'cuda' and not torch.cuda.is_available():
    raise UserError('--device %s: no CUDA device is available here; use --device cpu' % flag)
  if device.type == 'cuda' and device.index is None:
    device = torch.device('cuda', local_rank)
  return str(device)


def setup(device_flag='auto'):
  """Join the torchrun process group if there is one; returns a Context."""
  world_size = int(os.environ.get('WORLD_SIZE', '1'))
  if world_size <= 1:
    return Context(device=pick_device(device_flag))
  rank, local_rank = int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', '0'))
  device = pick_device(device_flag, local_rank)
  if device.startswith('cuda'):
    torch.cuda.set_device(torch.device(device))
  if not dist.is_initialized():
    dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo', init_method='env://',
                            timeout=datetime.timedelta(minutes=30))
  control = dist.new_group(backend='gloo') if device.startswith('cuda') else None
  return Context(rank, world_size, local_rank, device, control)


class GeneratorWithEmbedding(nn.Module):
  """G(z, G.shared(y)) as one forward, so DDP sees every G parameter used inside its forward."""

  def __init__(self, G):
    super(GeneratorWithEmbedding, self).__init__()
    self.G = G

  def forward(self, z, y):
    return self.G(z, self.G.shared(y))


class ReplicatedG_D(models.G_D):
  """G_D under DDP: the network being trained runs through its replica (which averages its
  gradients over processes), the other one directly."""

  def __init__(self, G, D, replicas):
    super(ReplicatedG_D, self).__init__(G, D)
    self.replicas = replicas

  def generate(self, z, gy, train_G):
    if train_G:
      return self.replicas['G'](z, gy)
    return super(ReplicatedG_D, self).generate(z, gy, train_G)

  def discriminator(self, train_G):
    return self.D if train_G else self.replicas['D']


def replica(module, ctx):
  """module under DistributedDataParallel. Buffers are not broadcast each step: SN vectors evolve
  identically on every rank, BN statistics are synchronised where they matter (cross_replica, or
  sync_buffers before eval), and Glow's actnorm initialises from every rank's batch."""
  device_ids = [torch.device(ctx.device).index] if ctx.device.startswith('cuda') else None
  options = dict(device_ids=device_ids)
  params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
  sync = 'forward_sync_buffers' if 'forward_sync_buffers' in params else 'broadcast_buffers'
  options[sync] = False
  return nn.parallel.DistributedDataParallel(module, **options)


def wrap(GD, ctx):
  """G_D with DistributedDataParallel replicas of G and D (.replicas['G'/'D']) under torchrun,
  else GD itself; a family's G_D without D (Glow.G_D: the flow's objective) is one replica."""
  if not ctx.distributed:
    return GD
  if getattr(GD, 'D', None) is None:
    return replica(GD, ctx)
  replicas = {'G': replica(GeneratorWithEmbedding(GD.G), ctx), 'D': replica(GD.D, ctx)}
  return ReplicatedG_D(GD.G, GD.D, replicas)


def running(ctx=None):
  """Is this one of several processes? (ctx None: ask torch.distributed, for code without one.)"""
  if ctx is not None:
    return ctx.distributed
  return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sync_buffers(module, ctx=None):
  """Copy rank 0's buffers (BN statistics, SN vectors) to every rank, so that all ranks evaluate
  and sample the same network; one broadcast per dtype rather than one per buffer."""
  if module is None or not running(ctx):
    return
  groups = {}
  for buffer in module.buffers():
    groups.setdefault((buffer.dtype, buffer.device), []).append(buffer)
  with torch.no_grad():
    for buffers in groups.values():
      flat = torch.cat([b.reshape(-1) for b in buffers])
      dist.broadcast(flat, 0)
      offset = 0
      for b in buffers:
        b.copy_(flat[offset:offset + b.numel()].view(b.shape))
        offset += b.numel()


def any_rank(flag, ctx):
  """True on every rank if `flag` is True on any rank (over the CPU control group)."""
  if not ctx.distributed:
    return bool(flag)
  t = torch.tensor([1.0 if flag else 0.0])
  dist.all_reduce(t, group=ctx.control)
  return t.item() > 0


def gather_objects(obj, ctx):
  """A list of every rank's obj (rank order), on every rank."""
  if not ctx.distributed:
    return [obj]
  out = [None] * ctx.world_size
  dist.all_gather_object(out, obj, group=ctx.control)
  return out


def on_main(ctx, function, *args):
  """function(*args) on rank 0 alone (e.g. taking the run lock); a UserError there stops every
  rank with the same one-line message. Returns rank 0's result on rank 0, None elsewhere."""
  result = error = None
  if ctx.is_main:
    try:
      result = function(*args)
    except UserError as e:
      error = str(e)
  if ctx.distributed:
    error = gather_objects(error, ctx)[0]
  if error:
    raise UserError(error)
  return result


def barrier(ctx):
  if ctx.distributed:
    dist.barrier(group=ctx.control)


def cleanup(ctx):
  if ctx.distributed and dist.is_initialized():
    dist.destroy_process_group()
