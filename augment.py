"""Differentiable augmentation of every image D sees, for training on small datasets.

  --DiffAugment translation,color,cutout    DiffAugment (Zhao et al. 2020): the listed ops on
                                            every image, parameters random per image
  --ada_target 0.6 [--ada_kimg 500]         adaptive augmentation (ADA, Karras et al. 2020): each
                                            op of the 'bgc' pipeline with probability p, p steered
                                            by r_t = E[sign(D(real))] towards the target
  --LeCam 0.3 [--LeCam_decay 0.99]          the LeCam regulariser (losses.LeCam)

The same augmentation is applied to reals and fakes, in D's steps and in G's, as a forward
pre-hook on D (so it sits inside DDP and outside a --compile'd D.forward); G is trained through
it, since every op is differentiable. A G cannot learn the augmentations themselves: DiffAugment's
ops and ADA at p below about 0.8 are not "leaking" (the papers' analyses).

ADA's pipeline, in stylegan2-ada's order and with its parameter distributions: x-flip, rotation by
multiples of 90 degrees, integer translation (up to 1/8 of the size), isotropic scaling (log2 ~
N(0, 0.2^2)), rotation (uniform, with probability 1 - sqrt(1 - p) before and after the next op),
anisotropic scaling (log2 ~ N(0, 0.2^2)), fractional translation (N(0, 0.125^2) of the size): one
bilinear resampling with reflected borders; then brightness (+N(0, 0.2^2)), contrast (log2 ~
N(0, 0.5^2)), luma flip, hue rotation (uniform) and saturation (log2 ~ N(0, 1)): one colour matrix.

Randomness: every parameter is drawn per image from a torch.Generator that the run owns (seeded
from --seed and the rank, saved in state_dict.pth), never from the global stream, so a resumed run
repeats the same augmentations and the data, z and y streams are those of a run without them. An
empty policy and ADA at p = 0 return the input tensor itself.
"""
import math

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import distributed
import losses
from errors import UserError

# ---------------------------------------------------------------------------------------------
# DiffAugment
# ---------------------------------------------------------------------------------------------


def _rand(x, gen, *shape):
  """Uniform [0, 1) numbers, one row per image of x, on x's device, in x's dtype."""
  return torch.rand((len(x),) + shape, generator=gen, device=x.device, dtype=x.dtype)


def _randn(x, gen, *shape):
  return torch.randn((len(x),) + shape, generator=gen, device=x.device, dtype=x.dtype)


def _randint(x, gen, low, high):
  return torch.randint(low, high, (len(x),), generator=gen, device=x.device)


def brightness(x, gen):
  """Add a uniform offset in [-0.5, 0.5) per image."""
  return x + (_rand(x, gen, 1, 1, 1) - 0.5)


def saturation(x, gen):
  """Scale each pixel's deviation from its grey (channel mean) by a factor in [0, 2)."""
  mean = x.mean(1, keepdim=True)
  return (x - mean) * (_rand(x, gen, 1, 1, 1) * 2) + mean


def contrast(x, gen):
  """Scale the deviation from the image mean by a factor in [0.5, 1.5)."""
  mean = x.mean([1, 2, 3], keepdim=True)
  return (x - mean) * (_rand(x, gen, 1, 1, 1) + 0.5) + mean


def translation(x, gen, ratio=0.125):
  """Shift by whole pixels, up to ratio * size each way, filling with zeros."""
  batch, _, height, width = x.shape
  shift_y, shift_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
  ty = _randint(x, gen, -shift_y, shift_y + 1)
  tx = _randint(x, gen, -shift_x, shift_x + 1)
  padded = F.pad(x, [shift_x, shift_x, shift_y, shift_y])
  rows = torch.arange(height, device=x.device) + shift_y - ty[:, None]  # (B, H)
  cols = torch.arange(width, device=x.device) + shift_x - tx[:, None]   # (B, W)
  b = torch.arange(batch, device=x.device)[:, None, None]
  return padded[b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def cutout(x, gen, ratio=0.5):
  """Zero a square of ratio * size at a uniform random centre (clipped at the borders)."""
  _, _, height, width = x.shape
  size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
  top = _randint(x, gen, 0, height)[:, None] - size_y // 2
  left = _randint(x, gen, 0, width)[:, None] - size_x // 2
  rows = torch.arange(height, device=x.device)
  cols = torch.arange(width, device=x.device)
  inside_y = (rows >= top) & (rows < top + size_y)   # (B, H)
  inside_x = (cols >= left) & (cols < left + size_x)  # (B, W)
  keep = ~(inside_y[:, :, None] & inside_x[:, None, :])
  return x * keep[:, None].to(x.dtype)


POLICIES = {'color': (brightness, saturation, contrast), 'translation': (translation,),
            'cutout': (cutout,)}


def parse_policy(text):
  """'translation,color,cutout' -> ('translation', 'color', 'cutout'); a UserError for others."""
  names = tuple(name.strip() for name in text.split(',') if name.strip())
  unknown = [name for name in names if name not in POLICIES]
  if unknown:
    raise UserError('--DiffAugment %s: unknown op %s; use a comma list of %s' % (
        text, ', '.join(unknown), ', '.join(sorted(POLICIES))))
  return names


def diff_augment(x, policy, gen):
  """The ops of each policy name in order, every image with its own parameters."""
  for name in policy:
    for op in POLICIES[name]:
      x = op(x, gen)
  return x


# ---------------------------------------------------------------------------------------------
# ADA's pipeline
# ---------------------------------------------------------------------------------------------

ADA_GEOMETRIC = ('xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac')
ADA_COLOUR = ('brightness', 'contrast', 'lumaflip', 'hue', 'saturation')
ADA_OPS = ADA_GEOMETRIC + ADA_COLOUR  # stylegan2-ada's 'bgc'


def _eye(x, n):
  return torch.eye(n, device=x.device, dtype=x.dtype).repeat(len(x), 1, 1)


def _scale(sx, sy):
  """(B, 3, 3) homogeneous 2-D scaling."""
  out = torch.zeros(len(sx), 3, 3, device=sx.device, dtype=sx.dtype)
  out[:, 0, 0], out[:, 1, 1], out[:, 2, 2] = sx, sy, 1
  return out


def _rotate(theta):
  c, s = torch.cos(theta), torch.sin(theta)
  out = torch.zeros(len(theta), 3, 3, device=theta.device, dtype=theta.dtype)
  out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1], out[:, 2, 2] = c, -s, s, c, 1
  return out


def _translate(tx, ty):
  out = _eye(tx, 3)
  out[:, 0, 2], out[:, 1, 2] = tx, ty
  return out


def _applied(x, gen, p):
  """Which images an op with probability p applies to."""
  return _rand(x, gen) < p


def geometric_matrix(x, gen, p, ops=ADA_OPS):
  """(B, 3, 3) map from output to input pixel coordinates (origin at the image centre, pixel
  units): the inverse of the random transform, built op by op. Ops not in `ops` are never
  applied, but their numbers are drawn all the same (the stream does not depend on `ops`)."""
  _, _, height, width = x.shape
  inv = _eye(x, 3)
  zero, one = x.new_zeros(len(x)), x.new_ones(len(x))

  def applied(name, prob=p):
    return _applied(x, gen, prob if name in ops else 0.0)
  flip = torch.where(applied('xflip'), torch.floor(_rand(x, gen) * 2), zero)
  inv = inv @ _scale(1 - 2 * flip, one)
  k = torch.where(applied('rotate90'), torch.floor(_rand(x, gen) * 4), zero)
  inv = inv @ _rotate(-math.pi / 2 * k)
  t = torch.where(applied('xint')[:, None], (_rand(x, gen, 2) * 2 - 1) * 0.125, zero[:, None])
  inv = inv @ _translate(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height))
  s = torch.where(applied('scale'), torch.exp2(_randn(x, gen) * 0.2), one)
  inv = inv @ _scale(1 / s, 1 / s)
  p_rot = 1 - math.sqrt(max(1 - p, 0.0))  # two chances: p that at least one rotation happens
  theta = torch.where(applied('rotate', p_rot), (_rand(x, gen) * 2 - 1) * math.pi, zero)
  inv = inv @ _rotate(-theta)
  s = torch.where(applied('aniso'), torch.exp2(_randn(x, gen) * 0.2), one)
  inv = inv @ _scale(1 / s, s)
  theta = torch.where(applied('rotate', p_rot), (_rand(x, gen) * 2 - 1) * math.pi, zero)
  inv = inv @ _rotate(-theta)
  t = torch.where(applied('xfrac')[:, None], _randn(x, gen, 2) * 0.125, zero[:, None])
  inv = inv @ _translate(-t[:, 0] * width, -t[:, 1] * height)
  return inv


def colour_matrix(x, gen, p, ops=ADA_OPS):
  """(B, 4, 4) homogeneous colour transform, op by op (each new op multiplies on the left)."""
  luma = x.new_ones(3) / math.sqrt(3)  # the grey axis
  outer = torch.outer(luma, luma)
  eye3 = torch.eye(3, device=x.device, dtype=x.dtype)
  zero, one = x.new_zeros(len(x)), x.new_ones(len(x))
  m = _eye(x, 4)

  def applied(name):
    return _applied(x, gen, p if name in ops else 0.0)

  def linear(a):  # (B, 3, 3) -> (B, 4, 4)
    out = _eye(x, 4)
    out[:, :3, :3] = a
    return out
  b = torch.where(applied('brightness'), _randn(x, gen) * 0.2, zero)
  shift = _eye(x, 4)
  shift[:, :3, 3] = b[:, None]
  m = shift @ m
  c = torch.where(applied('contrast'), torch.exp2(_randn(x, gen) * 0.5), one)
  m = linear(c[:, None, None] * eye3) @ m
  flip = torch.where(applied('lumaflip'), torch.floor(_rand(x, gen) * 2), zero)
  m = linear(eye3 - 2 * flip[:, None, None] * outer) @ m
  theta = torch.where(applied('hue'), (_rand(x, gen) * 2 - 1) * math.pi, zero)
  m = linear(_axis_rotation(luma, theta)) @ m
  s = torch.where(applied('saturation'), torch.exp2(_randn(x, gen) * 1.0), one)
  m = linear(eye3 + (s - 1)[:, None, None] * (eye3 - outer)) @ m  # exactly I for s = 1
  return m


def _axis_rotation(axis, theta):
  """(B, 3, 3) rotations by theta about the unit vector axis (Rodrigues' formula)."""
  cross = torch.zeros(3, 3, device=axis.device, dtype=axis.dtype)
  cross[0, 1], cross[0, 2], cross[1, 2] = -axis[2], axis[1], -axis[0]
  cross = cross - cross.t()
  c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
  eye = torch.eye(3, device=axis.device, dtype=axis.dtype)
  return c * eye + s * cross + (1 - c) * torch.outer(axis, axis)


def _is_identity(m):
  return (m == torch.eye(m.shape[-1], device=m.device, dtype=m.dtype)).flatten(1).all(1)


def ada_augment(x, p, gen, ops=ADA_OPS):
  """ADA's pipeline at probability p (restricted to `ops`, for tests): a geometric resampling,
  then a colour matrix; images that no op was drawn for come back bit for bit. p = 0 returns x
  itself and draws nothing."""
  if p <= 0:
    return x
  batch, channels, height, width = x.shape
  inv = geometric_matrix(x, gen, p, ops)
  colour = colour_matrix(x, gen, p, ops)
  # Pixel units -> affine_grid's [-1, 1] (align_corners=False: the borders of the outer pixels).
  to_unit = _scale(x.new_full((batch,), 2.0 / width), x.new_full((batch,), 2.0 / height))
  from_unit = _scale(x.new_full((batch,), width / 2.0), x.new_full((batch,), height / 2.0))
  theta = (to_unit @ inv @ from_unit)[:, :2, :]
  grid = F.affine_grid(theta, list(x.shape), align_corners=False)
  moved = F.grid_sample(x, grid, mode='bilinear', padding_mode='reflection', align_corners=False)
  x = torch.where(_is_identity(inv)[:, None, None, None], x, moved)
  if channels == 3:
    recoloured = (torch.einsum('bij,bjhw->bihw', colour[:, :3, :3], x)
                  + colour[:, :3, 3, None, None])
    x = torch.where(_is_identity(colour)[:, None, None, None], x, recoloured)
  return x


class AdaController(object):
  """ADA's p: every `interval` iterations, r_t = E[sign(D(real))] over the reals D saw since the
  last adjustment (all ranks together) moves p by sign(r_t - target) * images / (kimg * 1000),
  clipped to [0, 1]: p can go from 0 to 1 in kimg thousand images. target 0 keeps p fixed.

  The signs are summed on the device; the one host read is at each adjustment."""

  def __init__(self, target, p=0.0, interval=4, kimg=500.0, device='cpu'):
    self.target, self.p, self.interval, self.kimg = target, float(p), interval, kimg
    self.signs = torch.zeros((), device=device)
    self.count = 0
    self.r_t = None

  def observe(self, D_real):
    if self.target > 0:
      with torch.no_grad():
        self.signs += torch.sign(D_real.detach().float()).sum()
      self.count += D_real.numel()

  def update(self, itr):
    """Adjust p if `itr` ends an interval; returns r_t then, else None."""
    if self.target <= 0 or itr % self.interval:
      return None
    totals = torch.stack([self.signs, torch.tensor(float(self.count), device=self.signs.device)])
    if distributed.running():
      dist.all_reduce(totals)
    signs, count = totals.tolist()
    self.signs.zero_()
    self.count = 0
    if count <= 0:
      return None
    self.r_t = signs / count
    step = np.sign(self.r_t - self.target) * count / (self.kimg * 1000)
    self.p = float(min(max(self.p + step, 0.0), 1.0))
    return self.r_t

  def state_dict(self):
    return {'p': self.p, 'signs': float(self.signs), 'count': self.count}

  def load_state_dict(self, state):
    self.p, self.count = float(state['p']), int(state['count'])
    self.signs.fill_(float(state['signs']))


# ---------------------------------------------------------------------------------------------
# One run's augmentation, ADA and LeCam state
# ---------------------------------------------------------------------------------------------


class SmallData(object):
  """What train_fns.GAN_training_function adds to a step for --DiffAugment, --ada_target /
  --ada_p and --LeCam, and what state_dict.pth keeps of it (only the keys of the options on):
  ada_p and ada_stats (the same on every rank), augment_rng and LeCam_anchors (one per rank)."""

  def __init__(self, policy=(), ada=None, lecam=None, lecam_weight=0.0, generator=None):
    self.policy, self.ada, self.lecam, self.lecam_weight = policy, ada, lecam, lecam_weight
    self.generator = generator
    self.handle = None

  @classmethod
  def from_config(cls, config, device):
    """None when every option is off (the step is then exactly the original's)."""
    policy = parse_policy(config.get('DiffAugment') or '')
    target, p = config.get('ada_target', 0.0), config.get('ada_p', 0.0)
    weight = config.get('LeCam', 0.0)
    if not (policy or target > 0 or p > 0 or weight > 0):
      return None
    ada = (AdaController(target, p, config.get('ada_interval', 4), config.get('ada_kimg', 500.0),
                         device) if target > 0 or p > 0 else None)
    lecam = losses.LeCam(config.get('LeCam_decay', 0.99), device) if weight > 0 else None
    generator = None
    if policy or ada is not None:
      if config.get('parallel') and torch.cuda.device_count() > 1:
        raise UserError('--DiffAugment and ADA draw on one device and cannot run under --parallel '
                        'on several GPUs; use torchrun')
      rank = dist.get_rank() if distributed.running() else 0
      seed = int(np.random.SeedSequence([config.get('seed', 0), rank, 0xA06]).generate_state(1)[0])
      generator = torch.Generator(device).manual_seed(seed)
    return cls(policy, ada, lecam, weight, generator)

  def __call__(self, x):
    """The augmentation of a batch for D, in fp32 outside autocast; x itself when there is none."""
    active = bool(self.policy) or (self.ada is not None and self.ada.p > 0)
    if not active:
      return x
    with torch.autocast(x.device.type, enabled=False):
      out = x.float()
      if self.ada is not None:
        out = ada_augment(out, self.ada.p, self.generator)
      out = diff_augment(out, self.policy, self.generator)
    return out.to(x.dtype)

  def attach(self, D):
    """Augment every input of D (a forward pre-hook; replaces an earlier one), and keep this
    state as D.small_data, where train.py finds it whatever training function wraps the step."""
    old = getattr(D, 'augment_hook', None)
    if old is not None:
      old.remove()
    D.augment_hook = None
    D.small_data = self
    if self.generator is not None:
      D.augment_hook = D.register_forward_pre_hook(
          lambda module, args: (self(args[0]),) + tuple(args[1:]))

  def D_terms(self, D_real, D_fake):
    """Called with each D micro-batch's outputs: ADA's statistics, and the LeCam term to add to
    D's loss (0 without --LeCam)."""
    if self.ada is not None:
      self.ada.observe(D_real)
    if self.lecam is None:
      return 0.0
    return self.lecam_weight * self.lecam(D_real, D_fake)

  def update(self, itr):
    """After the iteration: ADA's adjustment; returns the metrics to log (ada_p)."""
    if self.ada is None:
      return {}
    self.ada.update(itr)
    return {'ada_p': self.ada.p}

  def state_dict(self, gather=lambda obj: [obj]):
    """The state_dict.pth entries; `gather` collects one object per rank (in rank order)."""
    out = {}
    if self.ada is not None:
      state = self.ada.state_dict()
      out['ada_p'] = state.pop('p')
      out['ada_stats'] = state
    if self.generator is not None:
      out['augment_rng'] = gather(self.generator.get_state())
    if self.lecam is not None:
      out['LeCam_anchors'] = gather(self.lecam.state_dict())
    return out

  def load_state_dict(self, saved, rank=0):
    """Restore what state_dict() saved (entries missing from an older checkpoint start fresh)."""
    def mine(key):
      return saved[key][min(rank, len(saved[key]) - 1)]
    if self.ada is not None and 'ada_p' in saved:
      self.ada.load_state_dict({'p': saved['ada_p'], **saved['ada_stats']})
    if self.generator is not None and 'augment_rng' in saved:
      self.generator.set_state(mine('augment_rng').cpu())
    if self.lecam is not None and 'LeCam_anchors' in saved:
      self.lecam.load_state_dict(mine('LeCam_anchors'))
