"""Glow (Kingma and Dhariwal 2018): a multi-scale invertible flow with exact log-likelihood.

    flow = Glow.Glow(**config)              # resolution, n_classes and the keys of `defaults`
    zs, objective = flow(x, y)              # x: images in [-1, 1]; zs: one latent per level
    bpd = flow.bits_per_dim(objective)      # per image
    loss = flow.loss(x, y)['loss']          # bits/dim (+ glow_weight_y * class bits): minimise
    x = flow.reverse(zs, y)                 # the images again (zs entries None: sampled)
    x = flow.reverse(None, y, temperature=0.7, batch_size=16)   # samples in [-1, 1]

Each of glow_levels levels squeezes (2x2 pixels -> 4x the channels), runs glow_depth flow steps
(actnorm, invertible 1x1 convolution, affine or additive coupling) and, except the last, splits off
half of its channels as that level's latent under a Gaussian whose mean and log-scale a zero-
initialised convolution predicts from the other half. The top latent has a learned Gaussian prior,
class-conditional with glow_ycond (plus a class-prediction head on it). The model follows the
paper and OpenAI's code (openai/glow) in its maths; it is written from their descriptions.

Input range: the project's images are x = 2 * (pixel / 255 - 0.5) in [-1, 1]. The flow models
v in [-0.5, 0.5]. Training and evaluation (dequantize=True) recover the pixel, reduce it to
n_bits_x bits (bin = pixel >> (8 - n_bits_x)) and add uniform noise u in the bin:
v = (bin + u) / 2^n_bits - 0.5, so the objective, log p(v) - D * log(2^n_bits), bounds the
log-probability of the quantised image in expectation (Theis et al. 2016). dequantize=False
maps v = x / 2, exactly invertible, which for every pixel value lands in its own bin's interval.
reverse() returns x = 2 * v clamped to [-1, 1].

glow_checkpoint: the backward pass rebuilds each flow step's input from its output (the flow is
invertible) instead of keeping it, so training memory beyond the model's own tensors does not
grow with depth (ReversibleStep).

Glow.Generator is the flow with its optimizer, the G that train.py builds for --model Glow (the
flow lives in G.pth); glow_fns.py trains, evaluates and samples it. The flags (add_glow_flags,
add_glow_sample_flags: config.py's flag table calls them), their checks (check_flags) and the
experiment name's parts (name_parts) are here, with the model's options.
"""
import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.nn import Parameter as P

import distributed
import layers
from errors import UserError

# The model's options and their defaults (--flags through add_glow_flags).
defaults = {
    'glow_levels': 3,           # L: levels (squeeze, K steps, split); resolution must divide by 2^L
    'glow_depth': 32,           # K: flow steps per level
    'glow_hidden': 512,         # channels of the two hidden layers of each coupling network
    'glow_lu': False,           # LU-decomposed 1x1 convolutions (O(C) log-determinant) vs slogdet
    'glow_coupling': 'affine',  # 'affine' (shift, then scale by sigmoid(h + 2)) or 'additive'
    'glow_ycond': False,        # class-conditional top prior and a class-prediction head
    'glow_weight_y': 0.01,      # weight of the class-prediction loss (bits) in the training loss
    'n_bits_x': 8,              # bits per colour value the images are quantised to (1-8)
    'glow_checkpoint': False,   # backward pass rebuilds each step's input from its output
}

# The training function's options (glow_fns.py), also --flags. OpenAI's code trains with Adamax
# at 1e-3 and beta1 0.9 after a linear warm-up.
training_defaults = {
    'glow_lr': 1e-3,
    'glow_optimizer': 'adamax',
    'glow_B1': 0.9,
    'glow_B2': 0.999,
    'glow_warmup': 1000,
    'glow_grad_clip': 0.0,
    'glow_test_images': 1000,
    'temperature': None,
}
DEFAULT_TEMPERATURE = 0.7  # OpenAI's samples
OPTIMIZERS = ('adam', 'adamax')

HELP = {
    'glow_levels': 'Glow: levels L, each a squeeze, K flow steps and (but the last) a split; '
                   'the resolution must be divisible by 2^L',
    'glow_depth': 'Glow: flow steps K per level (actnorm, invertible 1x1 conv, coupling)',
    'glow_hidden': 'Glow: channels of the two hidden layers of every coupling network',
    'glow_lu': 'Glow: LU-decomposed 1x1 convolutions (log-determinant without a determinant)',
    'glow_coupling': 'Glow: affine (shift and sigmoid scale) or additive couplings',
    'glow_ycond': 'Glow: class-conditional top prior, with a class-prediction loss on the top '
                  'latent',
    'glow_weight_y': 'Glow: weight of the class-prediction loss (bits) with --glow_ycond',
    'n_bits_x': 'Glow: bits per colour value the images are quantised to (1 to 8); bits/dim is '
                'of the quantised images',
    'glow_checkpoint': 'Glow: the backward pass rebuilds each flow step\'s input from its output '
                       '(activation memory flat in depth, one more forward per step)',
    'glow_lr': 'Glow: learning rate after the warm-up',
    'glow_optimizer': 'Glow: adam or adamax',
    'glow_B1': 'Glow: the optimizer\'s beta1',
    'glow_B2': 'Glow: the optimizer\'s beta2 (epsilon: --adam_eps)',
    'glow_warmup': 'Glow: iterations of linear learning-rate warm-up from 0 (0: none)',
    'glow_grad_clip': 'Glow: clip the gradients\' global norm to this value (0: no clipping)',
    'glow_test_images': 'Glow: held-out images whose bits/dim are measured every --test_every '
                        'iterations (the test split of C10/C100; for Shapes other images; for '
                        'folders and HDF5 files at most a tenth of the images, kept out of '
                        'training)',
    'temperature': 'Glow: scale of the priors\' standard deviations when sampling, in training\'s '
                   'samples and in sample.py (default: %g)' % DEFAULT_TEMPERATURE,
}

MANIPULATION_IMAGES = 256  # per side of a --glow_manipulate direction
SAMPLE_HELP = {
    'encode': 'Glow: with --sample_interps, also interpolate between real images (encoded, '
              'interpolated per level by --interp_method, decoded); the images come from '
              '--encode_images',
    'encode_images': 'Glow: the real images for --encode and --glow_manipulate: a --dataset '
                     'value (a name, an image folder or an .hdf5) (default: --dataset)',
    'encode_count': 'Glow: real images (sheet rows) that --encode and --glow_manipulate use',
    'glow_manipulate': 'Glow: A,B: add alpha x (mean latent of A - mean latent of B) to real '
                       'images\' latents (means over up to %d images each); A and B are '
                       'classes of --encode_images (names or indices) or two image folders'
                       % MANIPULATION_IMAGES,
    'glow_alphas': 'Glow: the comma-separated alphas of --glow_manipulate, each in [-1, 1] '
                   '(a list that starts with "-" is written --glow_alphas=-1,0,1)',
}
sample_defaults = {'encode': False, 'encode_images': '', 'encode_count': 8,
                   'glow_manipulate': '', 'glow_alphas': '-1,-0.5,0,0.5,1'}
CHOICES = {'glow_coupling': ('affine', 'additive'), 'glow_optimizer': OPTIMIZERS}

LOG_2PI = math.log(2 * math.pi)


def options(config):
  """The Glow options of a config dict, defaults filled in."""
  return {key: config.get(key, value) for key, value in defaults.items()}


def check_options(o, resolution, n_classes):
  """UserError for options the flow cannot be built with (before any work)."""
  def need(condition, message):
    if not condition:
      raise UserError(message)
  for key in ('glow_levels', 'glow_depth', 'glow_hidden'):
    need(isinstance(o[key], int) and o[key] >= 1,
         '--%s must be at least 1 (got %s)' % (key, o[key]))
  need(o['glow_coupling'] in ('affine', 'additive'),
       '--glow_coupling %s is unknown; use affine or additive' % o['glow_coupling'])
  need(o['n_bits_x'] in range(1, 9), '--n_bits_x must be 1 to 8 (got %s)' % o['n_bits_x'])
  need(o['glow_weight_y'] >= 0,
       '--glow_weight_y must not be negative (got %s)' % o['glow_weight_y'])
  need(not o['glow_ycond'] or n_classes >= 2,
       '--glow_ycond needs labelled data with at least 2 classes (this data has %s)' % n_classes)
  size = 2 ** o['glow_levels']
  need(resolution % size == 0,
       'resolution %d is not divisible by 2^glow_levels = %d: use fewer --glow_levels or a '
       'resolution that is a multiple of %d' % (resolution, size, size))


# ---------------------------------------------------------------------------------------------
# Flags, checks and experiment names (for config's flag table and train.py / sample.py)
# ---------------------------------------------------------------------------------------------


def _add_flags(parser, table, helps):
  """One flag per entry of `table` (its default) with its help text (config.HelpFormatter adds
  the defaults to --help)."""
  for key, value in table.items():
    text = '(new) %s' % helps[key]
    if isinstance(value, bool):
      parser.add_argument('--' + key, action='store_true', default=value, help=text)
    else:
      parser.add_argument('--' + key, type=type(value) if value is not None else float,
                          default=value, choices=CHOICES.get(key), help=text)
  return parser


def add_glow_flags(parser):
  """Glow's model and training flags (every one named glow_*, but n_bits_x and temperature)."""
  return _add_flags(parser, {**defaults, **training_defaults}, HELP)


def add_glow_sample_flags(parser):
  """sample.py's flags for Glow: encoding real images, interpolating and manipulating them."""
  return _add_flags(parser, sample_defaults, SAMPLE_HELP)


def temperature(config):
  value = config.get('temperature')
  return DEFAULT_TEMPERATURE if value is None else value


def alphas(config):
  """--glow_alphas as floats."""
  try:
    values = [float(a) for a in str(config.get('glow_alphas', '')).split(',')]
  except ValueError:
    values = []
  if not values or not all(-1 <= a <= 1 for a in values):
    raise UserError('--glow_alphas %s must be comma-separated numbers in [-1, 1], e.g. '
                    '-1,-0.5,0,0.5,1' % config.get('glow_alphas'))
  return values


def manipulation(config):
  """--glow_manipulate A,B as (A, B), or None."""
  spec = config.get('glow_manipulate') or ''
  if not spec:
    return None
  parts = [part.strip() for part in spec.split(',')]
  if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
    raise UserError('--glow_manipulate %s must be two different classes or folders A,B (the '
                    'direction is mean latent of A - mean latent of B), e.g. red_circle,'
                    'blue_circle' % spec)
  return tuple(parts)


# Flags of other families that mean nothing for Glow (what to use instead).
NOT_FOR_GLOW = {'truncation': 'use --temperature', 'sample_trunc_curves': 'use --temperature',
                'accumulate_stats': 'the flow has no batch norm', 'parallel': 'use torchrun',
                'sample_shapes_accuracy': 'it scores class-conditional BigGANs',
                'compile': 'the flow is not compiled', 'reuse_fakes': 'the flow has no D step'}


def check_flags(config):
  """UserError, before any work, for Glow's flags with another --model and for flags Glow cannot
  honour (the architecture's own checks: check_options)."""
  def need(condition, message):
    if not condition:
      raise UserError(message)
  glow = config.get('model') == 'Glow'
  if not glow:
    tables = {**defaults, **training_defaults, **sample_defaults}
    for key, value in tables.items():
      need(config.get(key, value) == value, '--%s is an option of --model Glow; drop it for '
           '--model %s' % (key, config.get('model')))
    need(config.get('which_best') != 'test_bpd', '--which_best test_bpd is Glow\'s held-out '
         'bits/dim: use it with --model Glow')
    return
  check_options(options(config), config['resolution'], config['n_classes'])
  for key, instead in NOT_FOR_GLOW.items():
    need(not config.get(key), '--%s is not used by --model Glow: %s' % (key, instead))
  need(config.get('which_best', 'IS') in ('IS', 'test_bpd'), '--which_best %s: Glow keeps its '
       'best copies by the lowest held-out bits/dim; use --which_best test_bpd or leave it out'
       % config.get('which_best'))
  o = {**training_defaults, **sample_defaults, **config}
  need(not (o.get('fused_optim') and o['glow_optimizer'] == 'adamax'), '--fused_optim is Adam\'s: '
       'PyTorch has no fused Adamax; add --glow_optimizer adam or drop --fused_optim')
  need(o['glow_lr'] >= 0, '--glow_lr must be a number >= 0 (got %s)' % o['glow_lr'])
  for key in ('glow_B1', 'glow_B2'):
    need(0 <= o[key] < 1, '--%s must be in [0, 1) (got %s)' % (key, o[key]))
  for key in ('glow_warmup', 'glow_grad_clip'):
    need(o[key] >= 0, '--%s must not be negative (0 is off; got %s)' % (key, o[key]))
  need(o['glow_test_images'] >= 1, '--glow_test_images must be at least 1 (got %s)'
       % o['glow_test_images'])
  need(o['temperature'] is None or 0 <= o['temperature'] < math.inf,
       '--temperature must be a number >= 0 (got %s)' % o['temperature'])
  need(o['encode_count'] >= 2, '--encode_count must be at least 2 (got %s)' % o['encode_count'])
  alphas(o)
  manipulation(o)


def name_parts(config):
  """The parts of a Glow experiment's name (the model, the data, then what changes the numbers;
  not --glow_checkpoint, --amp or other speed options)."""
  o = {**defaults, **training_defaults, **config}
  when = lambda condition, part: part if condition else None  # noqa: E731
  accumulations = config.get('num_G_accumulations', 1)
  parts = ['Glow', config.get('dataset_tag') or config['dataset'], 'seed%d' % config['seed'],
           'L%d' % o['glow_levels'], 'K%d' % o['glow_depth'], 'hidden%d' % o['glow_hidden'],
           o['glow_coupling'], when(o['glow_lu'], 'LU'),
           when(o['glow_ycond'], 'ycond%g' % o['glow_weight_y']), 'nbits%d' % o['n_bits_x'],
           'bs%d' % config['batch_size'], when(accumulations > 1, 'acc%d' % accumulations),
           o['glow_optimizer'], 'lr%2.1e' % o['glow_lr'], 'warmup%d' % o['glow_warmup'],
           when(o['glow_grad_clip'] > 0, 'clip%g' % o['glow_grad_clip']),
           when(config.get('ema'), 'ema'), config.get('name_suffix')]
  return [part for part in parts if part]


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def full(t):
  """t in float32 unless it is float64: log-densities and log-determinants are never summed in
  half precision."""
  return t.to(torch.promote_types(t.dtype, torch.float32))


def gaussian_log_density(z, mean, logs):
  """log N(z; mean, exp(logs)^2) summed per image (in at least fp32)."""
  z, mean, logs = full(z), full(mean), full(logs)
  return -0.5 * (LOG_2PI + 2 * logs + (z - mean) ** 2 * torch.exp(-2 * logs)).sum([1, 2, 3])


def conv(x, weight, bias, padding):
  """F.conv2d, except for float32 on the CPU: a 1x1 convolution always runs in oneDNN (on one
  thread below batch 16 PyTorch sends it to its im2col + GEMM path instead, which ran the coupling
  networks' 512 -> 512 convolution of a 256 px sample about 1.4x slower here), and without
  autograd a 3x3 one from many channels to few as _thin_conv3x3 (its backward through the taps ran
  slower than oneDNN's; bench/bench_glow.py has the numbers)."""
  if not (x.device.type == 'cpu' and x.dtype == torch.float32 and weight.dtype == torch.float32
          and not torch.is_autocast_enabled('cpu') and torch.backends.mkldnn.is_available()
          and torch.backends.mkldnn.enabled):
    return F.conv2d(x, weight, bias, padding=padding)
  out, inp, kh, kw = weight.shape
  if (kh, kw) == (1, 1):
    pad = list(padding) if isinstance(padding, (tuple, list)) else [padding] * 2
    return torch.mkldnn_convolution(x, weight, bias, pad, [1, 1], [1, 1], 1)
  if (kh, kw) == (3, 3) and padding in (1, (1, 1)) and out < 32 <= inp and not (
      torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
    return _thin_conv3x3(x, weight, bias)
  return F.conv2d(x, weight, bias, padding=padding)


def _thin_conv3x3(x, weight, bias):
  """A 3x3 convolution to few channels (the coupling networks' last layer: 512 -> 12 at 128 x 128
  for a 256 px sample, which oneDNN ran at half the speed of a wide one) as one 1x1 convolution
  to 9 x out channels, a GEMM at full speed, whose 9 taps are then shifted and summed."""
  out = weight.shape[0]
  taps = weight.permute(2, 3, 0, 1).reshape(9 * out, weight.shape[1], 1, 1)
  z = F.pad(torch.mkldnn_convolution(x, taps, None, [0, 0], [1, 1], [1, 1], 1), (1, 1, 1, 1))
  height, width = x.shape[2], x.shape[3]
  y = z[:, :out, :height, :width].clone() if bias is None else (
      z[:, :out, :height, :width] + bias.view(1, -1, 1, 1))
  for tap in range(1, 9):
    dy, dx = divmod(tap, 3)
    y += z[:, tap * out:(tap + 1) * out, dy:dy + height, dx:dx + width]
  return y


def scaled_conv(x, weight, bias, log_scale, padding):
  """conv2d(x, weight, bias) * exp(log_scale) per output channel, as one convolution (the scale
  folded into the weights: no extra pass over the output)."""
  scale = torch.exp(log_scale)
  return conv(x, weight * scale.view(-1, 1, 1, 1), bias * scale, padding)


class FlowLayer(nn.Module):
  """forward(x) returns (y, log|det dy/dx|) with the log-determinant per image (a scalar when it is
  the same for every image); reverse(y) returns x."""

  def rebuild(self, y):
    """For the memory-saving backward pass (ReversibleStep): the input rebuilt from the output y,
    as leaves that require grad (concatenated along the channels they are the input), and the
    forward recomputed from them under autograd: (leaves, output, log-det)."""
    with torch.no_grad():
      x = self.reverse(y)
    x.requires_grad_()
    return ([x],) + tuple(self(x))


class ActNorm(FlowLayer):
  """y = (x + bias) * exp(logs) per channel. The first batch it sees sets bias and logs so that
  this batch comes out with zero mean and unit variance per channel; under torch.distributed the
  statistics are over every rank's batch, so all ranks start identical. The `initialized` buffer
  is saved with the weights: a loaded model is never re-initialised."""

  def __init__(self, channels):
    super(ActNorm, self).__init__()
    self.bias = P(torch.zeros(1, channels, 1, 1))
    self.logs = P(torch.zeros(1, channels, 1, 1))
    self.register_buffer('initialized', torch.tensor(False))
    self.ready = False  # `initialized` known True (reading the buffer would sync a GPU)

  def _load_from_state_dict(self, *args, **kwargs):
    self.ready = False  # read the loaded buffer on the next forward
    super(ActNorm, self)._load_from_state_dict(*args, **kwargs)

  def initialize_from(self, x):
    """Data-dependent initialisation from x unless done (x: what this layer normalises)."""
    if self.ready:
      return
    if not bool(self.initialized):
      self._initialize(x.detach())
    self.ready = True

  @torch.no_grad()
  def _initialize(self, x):
    x = x.to(torch.float64)
    dims = [0, 2, 3]
    stats = torch.cat([torch.full_like(x[0, :, 0, 0], x.numel() / x.shape[1]),
                       x.sum(dims), (x * x).sum(dims)])
    if distributed.running():
      dist.all_reduce(stats)
    count, total, squares = stats.view(3, -1)
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=0).sqrt()
    self.bias.copy_(-mean.view_as(self.bias))
    self.logs.copy_(-torch.log(std + 1e-6).view_as(self.logs))
    self.initialized.fill_(True)

  def forward(self, x):
    self.initialize_from(x)
    return (x + self.bias) * torch.exp(self.logs), self.logs.sum() * (x.shape[2] * x.shape[3])

  def reverse(self, y):
    return y * torch.exp(-self.logs) - self.bias


class ConvActNorm(nn.Module):
  """Convolution without bias followed by actnorm, the hidden layers of the coupling networks;
  computed as one convolution with the actnorm folded into its weights and bias."""

  def __init__(self, in_channels, out_channels, kernel_size):
    super(ConvActNorm, self).__init__()
    self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                          bias=False)
    nn.init.normal_(self.conv.weight, 0, 0.05)
    self.norm = ActNorm(out_channels)

  def forward(self, x):
    if not self.norm.ready:
      with torch.no_grad():  # nothing saved for backward (a checkpoint's recomputation skips it)
        self.norm.initialize_from(F.conv2d(x, self.conv.weight, padding=self.conv.padding))
    # (conv(x) + bias) * exp(logs) = conv(x, weight * exp(logs), bias * exp(logs))
    return scaled_conv(x, self.conv.weight, self.norm.bias.view(-1), self.norm.logs.view(-1),
                       self.conv.padding)


class Conv2dZeros(nn.Module):
  """Zero-initialised convolution whose output is scaled by exp(3 * logs) per channel (logs also
  zero at first): the last layer of every coupling network and prior, so that each starts as the
  identity (or a standard normal) and the learned log-scale can grow quickly."""

  def __init__(self, in_channels, out_channels, kernel_size=3, logscale_factor=3):
    super(Conv2dZeros, self).__init__()
    self.weight = P(torch.zeros(out_channels, in_channels, kernel_size, kernel_size))
    self.bias = P(torch.zeros(out_channels))
    self.logs = P(torch.zeros(out_channels))
    self.logscale_factor = logscale_factor
    self.padding = kernel_size // 2

  def forward(self, x):
    return scaled_conv(x, self.weight, self.bias, self.logs * self.logscale_factor, self.padding)


class InvConv(FlowLayer):
  """Invertible 1x1 convolution: a learned C x C channel mixing, initialised as a random rotation.
  lu: W = P L (U + diag(sign_s * exp(log_s))) with P and sign_s fixed, so log|det W| = sum(log_s)
  without a determinant; otherwise W itself, with slogdet in float64."""

  def __init__(self, channels, lu=False):
    super(InvConv, self).__init__()
    w = torch.linalg.qr(torch.randn(channels, channels))[0]
    self.lu = lu
    if not lu:
      self.weight = P(w)
      return
    p, lower, upper = torch.linalg.lu(w)
    s = torch.diagonal(upper)
    # Fixed, and integer so that an EMA of the model (utils.ema) copies them instead of averaging.
    self.register_buffer('p', p.to(torch.int8))
    self.register_buffer('sign_s', torch.sign(s).to(torch.int8))
    self.lower = P(torch.tril(lower, -1))
    self.upper = P(torch.triu(upper, 1))
    self.log_s = P(torch.log(torch.abs(s)))

  def matrix(self):
    if not self.lu:
      return self.weight
    eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
    lower = torch.tril(self.lower, -1) + eye
    upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_s))
    return self.p.to(lower.dtype) @ lower @ upper

  def log_det(self):
    if self.lu:
      return self.log_s.sum()
    return torch.linalg.slogdet(self.weight.double())[1].to(self.weight.dtype)

  def _mix(self, x, w):
    # On the flow's path: never autocast to half precision (its inverse and log-det need fp32).
    with torch.autocast(x.device.type, enabled=False):
      return conv(x, w.to(x.dtype).view(*w.shape, 1, 1), None, 0)

  def forward(self, x):
    return self._mix(x, self.matrix()), self.log_det() * (x.shape[2] * x.shape[3])

  def reverse(self, y):
    w = self.matrix()
    n, c, height, width = y.shape
    if n * height * width >= c:
      return self._mix(y, torch.linalg.inv(w.double()).to(w.dtype))
    # Fewer pixels than channels (a sample's top levels: 16 pixels of 384 channels at 256 px):
    # solving W x = y for them costs less than inverting W.
    with torch.autocast(y.device.type, enabled=False):
      pixels = y.permute(1, 0, 2, 3).reshape(c, -1).double()
      x = torch.linalg.solve(w.double(), pixels).to(y.dtype)
    return x.reshape(c, n, height, width).permute(1, 0, 2, 3).contiguous()


class Coupling(FlowLayer):
  """The second half of the channels is shifted (and scaled) by a network of the first half:
  additive y2 = x2 + h; affine y2 = (x2 + shift) * sigmoid(raw + 2) (a scale below 1 at the start,
  which keeps early training stable). The network: 3x3 conv, 1x1 conv (both with actnorm and
  ReLU, `hidden` channels) and a zero-initialised 3x3 conv, so the coupling starts close to the
  identity."""

  def __init__(self, channels, hidden, affine=True):
    super(Coupling, self).__init__()
    self.affine = affine
    half = channels // 2
    out = 2 * (channels - half) if affine else channels - half
    self.net = nn.Sequential(ConvActNorm(half, hidden, 3), nn.ReLU(inplace=True),
                             ConvActNorm(hidden, hidden, 1), nn.ReLU(inplace=True),
                             Conv2dZeros(hidden, out, 3))

  def _h(self, x1, dtype):
    # The network may run under autocast (the flow's path never does), and channels_last on the
    # CPU, where oneDNN's thin convolutions (few input or output channels) run faster so: the
    # whole flow's training step 5-10%, sampling 20% (bench/bench_glow.py's configs).
    return self.net(layers.activation_layout(x1)).to(dtype).contiguous()

  def _couple(self, x2, h):
    """(second half of the output, log-det per image) from the second half of the input and the
    network's output h."""
    if not self.affine:
      return x2 + h, x2.new_zeros(())
    shift, raw = h.chunk(2, 1)
    log_scale = F.logsigmoid(raw + 2)
    return (x2 + shift) * torch.exp(log_scale), full(log_scale).sum([1, 2, 3])

  def _uncouple(self, y2, h):
    if not self.affine:
      return y2 - h
    shift, raw = h.chunk(2, 1)
    return y2 * torch.exp(-F.logsigmoid(raw + 2)) - shift

  def forward(self, x):
    x1, x2 = x.chunk(2, 1)
    y2, logdet = self._couple(x2, self._h(x1, x.dtype))
    return torch.cat([x1, y2], 1), logdet

  def reverse(self, y):
    y1, y2 = y.chunk(2, 1)
    return torch.cat([y1, self._uncouple(y2, self._h(y1, y.dtype))], 1)

  def rebuild(self, y):
    """FlowLayer.rebuild with the network run once: its input, the first half, passes through
    unchanged, so the same h inverts the second half and recomputes the forward."""
    y1, y2 = y.chunk(2, 1)
    x1 = y1.detach().requires_grad_()
    h = self._h(x1, y.dtype)
    with torch.no_grad():
      x2 = self._uncouple(y2, h)
    x2.requires_grad_()
    out2, logdet = self._couple(x2, h)
    return [x1, x2], torch.cat([x1, out2], 1), logdet


class FlowStep(nn.Module):
  """actnorm -> invertible 1x1 conv -> coupling."""

  def __init__(self, channels, hidden, lu=False, affine=True):
    super(FlowStep, self).__init__()
    self.actnorm = ActNorm(channels)
    self.invconv = InvConv(channels, lu)
    self.coupling = Coupling(channels, hidden, affine)

  def flow_layers(self):
    return self.actnorm, self.invconv, self.coupling

  def forward(self, x):
    logdet = 0
    for layer in self.flow_layers():
      x, ld = layer(x)
      logdet = logdet + ld
    return x, logdet

  def reverse(self, y):
    for layer in reversed(self.flow_layers()):
      y = layer.reverse(y)
    return y


class _Slot(object):
  """Where one step's backward leaves the input it rebuilt, for the step before (its output)."""
  value = None


def _join(tensors):
  return tensors[0] if len(tensors) == 1 else torch.cat(tensors, 1)


class ReversibleStep(torch.autograd.Function):
  """A flow step that keeps nothing for the backward pass but, in a level's last step, its output
  (which the split or the top prior keeps anyway). The backward rebuilds the step's input from its
  output layer by layer (FlowLayer.rebuild: the inverse, then the forward recomputed under
  autograd, in the forward pass's autocast state), back-propagates through that layer and leaves
  the input in `slot` for the step before, whose backward the engine runs next (it needs this
  one's input gradient). So activation memory is one step's whatever the depth, for a forward
  more per step (the coupling network runs once for both the inverse and the recomputation, see
  Coupling.rebuild) and the inverses of actnorm and the 1x1 convolution. The parameters are
  inputs: their gradients reach .grad through autograd step by step, as in the plain pass
  (DistributedDataParallel's hooks included). The inverse's float32 rounding makes the gradients
  differ from the plain pass's by about as much as the plain pass's own rounding (tests/
  test_Glow.py; bench/bench_glow.py --parts reversible measures it on a trained model)."""

  @staticmethod
  def forward(ctx, x, step, slot, first, last, *params):
    device = x.device.type
    ctx.step, ctx.slot, ctx.first, ctx.last = step, slot, first, last
    ctx.autocast = dict(device_type=device, enabled=torch.is_autocast_enabled(device),
                        dtype=torch.get_autocast_dtype(device))
    ctx.param_ids = [id(p) for p in params]
    y, logdet = step(x)
    if last:
      ctx.save_for_backward(y)
    return y, logdet

  @staticmethod
  @once_differentiable
  def backward(ctx, grad_y, grad_logdet):
    y = ctx.saved_tensors[0] if ctx.last else ctx.slot.value
    ctx.slot.value = None
    grads = {}
    for layer in reversed(ctx.step.flow_layers()):
      with torch.enable_grad(), torch.autocast(**ctx.autocast):
        leaves, out, logdet = layer.rebuild(y)
      params = [p for p in layer.parameters() if p.requires_grad]
      outputs, grad_outputs = [out], [grad_y]
      if logdet.requires_grad:  # not the additive coupling's zero
        outputs.append(logdet)
        grad_outputs.append(grad_logdet.sum_to_size(logdet.shape))
      g = torch.autograd.grad(outputs, leaves + params, grad_outputs, allow_unused=True)
      grad_y, y = _join(g[:len(leaves)]), _join([t.detach() for t in leaves])
      grads.update(zip(map(id, params), g[len(leaves):]))
    if not ctx.first:
      ctx.slot.value = y
    return (grad_y, None, None, None, None) + tuple(grads.get(i) for i in ctx.param_ids)


def draw(mean, logs, temperature, generator=None):
  """A sample of N(mean, (temperature * exp(logs))^2), from `generator` when given."""
  noise = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
  return mean + torch.exp(logs) * temperature * noise


def squeeze(x):
  """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 block of pixels becomes 4 channels."""
  B, C, H, W = x.shape
  x = x.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4)
  return x.reshape(B, 4 * C, H // 2, W // 2)


def unsqueeze(x):
  B, C, H, W = x.shape
  x = x.reshape(B, C // 4, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3)
  return x.reshape(B, C // 4, 2 * H, 2 * W)


class SplitPrior(nn.Module):
  """Splits off the second half z2 of the channels as a latent, with a Gaussian prior whose mean
  and log-scale a zero-initialised conv computes from the first half z1 (which flows on)."""

  def __init__(self, channels):
    super(SplitPrior, self).__init__()
    self.half = channels // 2
    self.conv = Conv2dZeros(self.half, 2 * (channels - self.half), 3)

  def prior(self, z1):
    return self.conv(z1).chunk(2, 1)  # mean, logs

  def forward(self, x):
    """x -> (z1, z2, log p(z2 | z1) per image)."""
    z1, z2 = x[:, :self.half], x[:, self.half:]
    return z1, z2, gaussian_log_density(z2, *self.prior(z1))

  def reverse(self, z1, z2=None, temperature=1.0, generator=None):
    """(z1, z2) -> x; z2 None: drawn from the prior at this temperature (std scaled by it)."""
    if z2 is None:
      z2 = draw(*self.prior(z1), temperature, generator)
    return torch.cat([z1, z2.to(z1.dtype)], 1)


class TopPrior(nn.Module):
  """A learned Gaussian (a mean and log-scale per channel) for the top latent; with n_classes,
  a zero-initialised projection of the one-hot class adds to both, and `classifier` predicts the
  class from the top latent's spatial mean (its loss, weighted, trains the top to carry it)."""

  def __init__(self, channels, n_classes=0):
    super(TopPrior, self).__init__()
    self.h = P(torch.zeros(1, 2 * channels, 1, 1))
    self.n_classes = n_classes
    if n_classes:
      self.y_proj = Conv2dZeros(n_classes, 2 * channels, 1)
      self.classifier = Conv2dZeros(channels, n_classes, 1)

  def prior(self, y, shape):
    h = self.h.expand(shape[0], -1, *shape[2:])
    if self.n_classes:
      if y is None:
        raise ValueError('this flow is class-conditional (glow_ycond): pass the labels y')
      onehot = F.one_hot(y, self.n_classes).to(self.h.dtype)[:, :, None, None]
      h = h + self.y_proj(onehot)
    return h.chunk(2, 1)

  def class_logits(self, z):
    return self.classifier(z.mean([2, 3], keepdim=True)).flatten(1)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class Glow(nn.Module):
  """The flow. `shapes` lists each level's latent (C, H, W), the top last; latents are the raw z
  of each level (not standardised by their priors), so reverse(forward(x)[0]) == x."""

  def __init__(self, resolution=32, n_classes=1000, **config):
    super(Glow, self).__init__()
    o = options(config)
    check_options(o, resolution, n_classes)
    self.resolution, self.n_classes = resolution, n_classes
    self.n_levels, self.depth, self.hidden = o['glow_levels'], o['glow_depth'], o['glow_hidden']
    self.n_bits_x, self.n_bins = o['n_bits_x'], 2 ** o['n_bits_x']
    self.ycond, self.weight_y = o['glow_ycond'], o['glow_weight_y']
    self.checkpoint = o['glow_checkpoint']
    self.dims = 3 * resolution * resolution
    self.shapes = []
    channels, size = 3, resolution
    levels, splits = [], []
    for level in range(self.n_levels):
      channels, size = 4 * channels, size // 2
      levels.append(nn.ModuleList(
          [FlowStep(channels, self.hidden, o['glow_lu'], o['glow_coupling'] == 'affine')
           for _ in range(self.depth)]))
      if level < self.n_levels - 1:
        splits.append(SplitPrior(channels))
        self.shapes.append((channels - channels // 2, size, size))
        channels //= 2
    self.shapes.append((channels, size, size))
    self.levels, self.splits = nn.ModuleList(levels), nn.ModuleList(splits)
    self.top = TopPrior(channels, n_classes if self.ycond else 0)

  # ---- encoding ----

  def preprocess(self, x, dequantize=True, generator=None):
    """Images in [-1, 1] -> the flow's input v in [-0.5, 0.5] (see the module docstring); the
    dequantisation noise from `generator` when given."""
    if not dequantize:
      return x / 2
    pixels = torch.round((x + 1) * 127.5).clamp(0, 255)  # the loader's integer values, exactly
    bins = torch.floor(pixels / 2 ** (8 - self.n_bits_x))
    noise = torch.rand(bins.shape, dtype=bins.dtype, device=bins.device, generator=generator)
    return (bins + noise) / self.n_bins - 0.5

  def _steps(self, steps, x, logdet):
    """x through a level's flow steps, their log-dets added to logdet. With glow_checkpoint and
    autograd on, as ReversibleSteps; actnorm's data-dependent initialisation then runs before, in
    a pass without autograd (setting what the plain pass would)."""
    reversible = self.checkpoint and torch.is_grad_enabled()
    if reversible and not all(m.ready for m in steps.modules() if isinstance(m, ActNorm)):
      with torch.no_grad():
        h = x
        for step in steps:
          h = step(h)[0]
    slot = _Slot()
    for i, step in enumerate(steps):
      if reversible:
        x, ld = ReversibleStep.apply(x, step, slot, i == 0, i == len(steps) - 1,
                                     *step.parameters())
      else:
        x, ld = step(x)
      logdet = logdet + ld
    return x, logdet

  def encode(self, v, y=None):
    """The flow on v: (latents per level, log|det dz/dv| per image, log prior(z) per image)."""
    zs, logdet, logp = [], 0, 0
    x = v
    for level, steps in enumerate(self.levels):
      x, logdet = self._steps(steps, squeeze(x), logdet)
      if level < self.n_levels - 1:
        x, z, lp = self.splits[level](x)
        zs.append(z)
        logp = logp + lp
    zs.append(x)
    logp = logp + gaussian_log_density(x, *self.top.prior(y, x.shape))
    return zs, logdet, logp

  def forward(self, x, y=None, dequantize=True, generator=None):
    """Images x in [-1, 1] (and labels y) -> (latents per level, objective per image): the
    log-likelihood in nats of the image quantised to n_bits_x, log p(v) - D log 2^n_bits (a
    lower bound in expectation over the dequantisation noise)."""
    zs, logdet, logp = self.encode(self.preprocess(x, dequantize, generator), y)
    return zs, logdet + logp - self.dims * math.log(self.n_bins)

  def bits_per_dim(self, objective):
    return -objective / (self.dims * math.log(2))

  def loss(self, x, y=None):
    """Training objective: {'loss', 'bpd', 'bits_y'} (batch means), loss = bpd + weight_y *
    bits_y where bits_y is the class-prediction cross-entropy in bits (glow_ycond only)."""
    zs, objective = self(x, y)
    bpd = self.bits_per_dim(objective).mean()
    out = {'bpd': bpd, 'loss': bpd, 'bits_y': bpd.new_zeros(())}
    if self.ycond:
      out['bits_y'] = F.cross_entropy(full(self.top.class_logits(zs[-1])), y) / math.log(2)
      out['loss'] = bpd + self.weight_y * out['bits_y']
    return out

  # ---- decoding ----

  def initialized(self):
    return all(bool(m.initialized) for m in self.modules() if isinstance(m, ActNorm))

  def decode(self, zs=None, y=None, temperature=1.0, batch_size=None, generator=None):
    """Latents per level -> v. zs None, or entries None: drawn from the priors with their
    standard deviations scaled by temperature (from `generator` when given)."""
    zs = list(zs) if zs is not None else [None] * self.n_levels
    if len(zs) != self.n_levels:
      raise ValueError('reverse needs %d latents (one per level), got %d'
                       % (self.n_levels, len(zs)))
    given = [z for z in zs if z is not None]
    n = (given[0].shape[0] if given else y.shape[0] if y is not None
         else batch_size if batch_size else 1)
    x = zs[-1]
    if x is None:
      x = draw(*self.top.prior(y, (n,) + self.shapes[-1]), temperature, generator)
    for level in reversed(range(self.n_levels)):
      if level < self.n_levels - 1:
        x = self.splits[level].reverse(x, zs[level], temperature, generator)
      for step in reversed(self.levels[level]):
        x = step.reverse(x)
      x = unsqueeze(x)
    return x

  def reverse(self, zs=None, y=None, temperature=1.0, batch_size=None, generator=None):
    """Latents per level (as forward returns them; None entries sampled) -> images in [-1, 1].
    A latent far in a prior's tail can overflow the inverse couplings (exp of a large negative
    scale logit; seen with briefly trained flows at temperature 0.7): such pixels come out as
    -1 or 1 (infinities) or 0 (NaN), so that one sample does not poison a sheet's scaling."""
    if not self.initialized():
      raise RuntimeError('the flow has seen no data: actnorm initialises itself from the first '
                         'batch passed forward; run forward on a batch or load trained weights')
    x = 2 * self.decode(zs, y, temperature, batch_size, generator)
    return torch.nan_to_num(x, nan=0.0).clamp(-1, 1)


def optimizer_settings(config):
  """The optimizer's lr, betas and eps: --glow_lr, --glow_B1, --glow_B2, --adam_eps."""
  o = {**training_defaults, **config}
  return {'lr': o['glow_lr'], 'betas': (o['glow_B1'], o['glow_B2']),
          'eps': config.get('adam_eps', 1e-8)}


def make_optimizer(params, config):
  """--glow_optimizer: Adam or Adamax, with optimizer_settings (Adam fused with --fused_optim)."""
  if config.get('glow_optimizer', training_defaults['glow_optimizer']) == 'adamax':
    return torch.optim.Adamax(params, **optimizer_settings(config))
  return torch.optim.Adam(params, **optimizer_settings(config),
                          fused=config.get('fused_optim') or None)


class Generator(Glow):
  """The flow as train.py builds G (--model Glow): with its optimizer G.optim unless no_optim, as
  the BigGAN families keep theirs (models.Model). The BigGAN keys of the config are ignored."""

  def __init__(self, resolution=32, n_classes=1000, no_optim=False, **config):
    super(Generator, self).__init__(resolution, n_classes, **config)
    if not no_optim:
      self.optim = make_optimizer(self.parameters(), config)


class Objective(nn.Module):
  """flow.loss(x, y) as one forward, so that DistributedDataParallel sees every parameter used
  inside its forward (the class-prediction head included)."""

  def __init__(self, flow):
    super(Objective, self).__init__()
    self.flow = flow

  def forward(self, x, y):
    return self.flow.loss(x, y)


def G_D(G, D=None):
  """What train.py's step calls and DDP wraps (the BigGAN families' G_D): the flow's objective;
  there is no D."""
  return Objective(G)
