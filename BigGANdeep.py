"""BigGAN-deep (Brock et al. 2019): bottleneck residual blocks, G_depth/D_depth blocks per stage.

    G = BigGANdeep.Generator(**config); D = BigGANdeep.Discriminator(**config)

Same state_dict keys and parameter order as the original BigGANdeep.py. New: it also works
without --hier (the whole z feeds the linear layer and the blocks see the class embedding only),
with a G_depth other than 2 at 64 px and up (where the original's G crashed), and has a 512 px D.

New with --G_tfhub: G as DeepMind's TF-Hub biggan-deep modules (TFHub/converter.py writes their
weights): the output conv has G_ch channels of which the first 3 are RGB, and every BN keeps the
statistics TF-Hub stored for 51 truncations; G.set_truncation(t) selects them. TF-Hub's [z, y]
conditioning order is handled by the converter (it reorders the weight columns), so the forward
pass is otherwise the default one.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import layers
import models
from BigGAN import G_arch, attention_resolutions  # noqa: F401 (the original's names here)

G_D = models.G_D  # the original's name here


# TF-Hub's biggan-deep modules store BN statistics for the truncations 0, 1/50, 2/50, ..., 1.
TFHUB_TRUNCATIONS = 51


def truncation_rows(truncation, n=TFHUB_TRUNCATIONS):
  """(lo, hi, w): `truncation` lies between rows lo and hi of an n-row table on the grid
  0, 1/(n-1), ..., 1, at weight w of row hi. The statistics there are (1-w) row_lo + w row_hi."""
  if not 0.0 <= truncation <= 1.0:
    raise ValueError('truncation must be in [0, 1] (got %s): TF-Hub stored BN statistics for '
                     'those values only' % truncation)
  position = truncation * (n - 1)
  # 0.4 * 50 is 19.999999999999996 in floating point: row 20, not row 19 at weight 1.
  lo = min(int(math.floor(position + 1e-6)), n - 1)
  return lo, min(lo + 1, n - 1), max(position - lo, 0.0)


class GBlock(nn.Module):
  """Bottleneck block: 1x1 down to in/channel_ratio, two 3x3, 1x1 up; the shortcut drops
  channels."""

  def __init__(self, in_channels, out_channels, which_conv=layers.SNConv2d, which_bn=layers.bn,
               activation=None, upsample=None, channel_ratio=4, fold=True):
    super(GBlock, self).__init__()
    self.in_channels, self.out_channels = in_channels, out_channels
    self.hidden_channels = self.in_channels // channel_ratio
    self.which_conv, self.which_bn = which_conv, which_bn
    self.activation = activation
    self.conv1 = self.which_conv(self.in_channels, self.hidden_channels, kernel_size=1, padding=0)
    self.conv2 = self.which_conv(self.hidden_channels, self.hidden_channels)
    self.conv3 = self.which_conv(self.hidden_channels, self.hidden_channels)
    self.conv4 = self.which_conv(self.hidden_channels, self.out_channels, kernel_size=1,
                                 padding=0)
    self.bn1 = self.which_bn(self.in_channels)
    self.bn2 = self.which_bn(self.hidden_channels)
    self.bn3 = self.which_bn(self.hidden_channels)
    self.bn4 = self.which_bn(self.hidden_channels)
    self.upsample = upsample
    self.fold = fold  # folded resampling (layers.upsample_conv)

  def forward(self, x, y):
    h = self.conv1(self.activation(self.bn1(x, y)))
    h = self.activation(self.bn2(h, y))
    if self.in_channels != self.out_channels:
      x = x[:, :self.out_channels]
    h = layers.upsample_conv(self.upsample, self.conv2, h, self.fold)
    if self.upsample:
      x = self.upsample(x)
    h = self.conv3(self.activation(self.bn3(h, y)))
    h = self.conv4(self.activation(self.bn4(h, y)))
    return h + x


class Generator(models.Generator):
  arch_table = staticmethod(G_arch)

  def __init__(self, G_depth=2, G_tfhub=False, **config):
    super(Generator, self).__init__(**config)
    self.G_depth = G_depth
    self.tfhub = G_tfhub
    # With --hier (the original's only working mode) every block sees [y, z]; without it the
    # linear layer gets z and the blocks get y.
    self.which_bn = self.conditional_bn(self.shared_dim + (self.dim_z if self.hier else 0))
    self.linear = self.which_linear(self.dim_z + (self.shared_dim if self.hier else 0),
                                    self.arch['in_channels'][0] * (self.bottom_width ** 2))
    # Each block is its own entry blocks.{k}.0 (k = stage * G_depth + d); attention is appended
    # to the last block of its stage. The last block of a stage changes the channels and
    # upsamples. The original gave the first block in -> in and all others in -> out: the same
    # for its G_depth 2, but a crash for any other depth wherever in != out (64 px and up).
    blocks = []
    for index in range(len(self.arch['out_channels'])):
      for g_index in range(self.G_depth):
        last = g_index == self.G_depth - 1
        blocks.append([GBlock(
            in_channels=self.arch['in_channels'][index],
            out_channels=(self.arch['out_channels'][index] if last
                          else self.arch['in_channels'][index]),
            which_conv=self.which_conv, which_bn=self.which_bn, activation=self.activation,
            upsample=(layers.upsample_nearest2x if self.arch['upsample'][index] and last
                      else None), fold=self.fold_resampling)])
      blocks[-1] = self.with_attention(index, blocks[-1])
    self.blocks = nn.ModuleList([nn.ModuleList(block) for block in blocks])
    # TF-Hub's output conv has G_ch channels (the first 3 are the image); spectral norm is taken
    # over all of them, so they are kept.
    self.output_layer = self.make_output_layer(self.ch if self.tfhub else 3)
    if self.tfhub:
      self._add_truncation_tables()
    self.finish()

  def truncation_bns(self):
    """The BN layers that hold statistics per truncation (--G_tfhub), in module order."""
    return [m for m in self.modules() if hasattr(m, 'truncation_mean')]

  def _add_truncation_tables(self):
    for m in self.modules():
      if isinstance(m, (layers.ccbn, layers.bn)):
        channels = m.stored_mean.numel()
        m.register_buffer('truncation_mean', torch.zeros(TFHUB_TRUNCATIONS, channels))
        m.register_buffer('truncation_var', torch.ones(TFHUB_TRUNCATIONS, channels))

  def set_truncation(self, truncation):
    """Use the BN statistics stored for `truncation` (z = truncation * truncated normal in
    [-2, 2], as TF-Hub samples): every BN's stored_mean/stored_var become the linear
    interpolation of the two nearest of the 51 stored rows. Without --G_tfhub the statistics do
    not depend on the truncation and nothing changes; returns whether anything did."""
    if not self.tfhub:
      return False
    lo, hi, weight = truncation_rows(truncation)
    with torch.no_grad():
      for m in self.truncation_bns():
        m.stored_mean.copy_(torch.lerp(m.truncation_mean[lo], m.truncation_mean[hi], weight))
        m.stored_var.copy_(torch.lerp(m.truncation_var[lo], m.truncation_var[hi], weight))
    return True

  def forward(self, z, y):
    """z: (B, dim_z) noise; y: the class input already passed through self.shared."""
    if self.hier:
      z = torch.cat([y, z], 1)
      y = z
    h = self.run_blocks(z, [y] * len(self.blocks))
    return torch.tanh(h[:, :3] if self.tfhub else h).contiguous()  # standard layout for callers


class DBlock(nn.Module):
  """Bottleneck block: relu-1x1-act-3x3-act-3x3-act-(downsample)-1x1; the shortcut concatenates
  x with a 1x1 conv of x for the extra channels."""

  def __init__(self, in_channels, out_channels, which_conv=layers.SNConv2d, wide=True,
               preactivation=True, activation=None, downsample=None, channel_ratio=4):
    super(DBlock, self).__init__()
    self.in_channels, self.out_channels = in_channels, out_channels
    self.hidden_channels = self.out_channels // channel_ratio
    self.which_conv = which_conv
    self.preactivation = preactivation
    self.activation = activation
    self.downsample = downsample
    self.conv1 = self.which_conv(self.in_channels, self.hidden_channels, kernel_size=1, padding=0)
    self.conv2 = self.which_conv(self.hidden_channels, self.hidden_channels)
    self.conv3 = self.which_conv(self.hidden_channels, self.hidden_channels)
    self.conv4 = self.which_conv(self.hidden_channels, self.out_channels, kernel_size=1,
                                 padding=0)
    self.learnable_sc = in_channels != out_channels
    if self.learnable_sc:
      self.conv_sc = self.which_conv(in_channels, out_channels - in_channels, kernel_size=1,
                                     padding=0)

  def shortcut(self, x):
    if self.downsample:
      x = self.downsample(x)
    if self.learnable_sc:
      x = torch.cat([x, self.conv_sc(x)], 1)
    return x

  def forward(self, x):
    h = self.conv1(F.relu(x))
    h = self.conv2(self.activation(h))
    h = self.conv3(self.activation(h))
    h = self.activation(h)
    if self.downsample:
      h = self.downsample(h)
    h = self.conv4(h)
    return h + self.shortcut(x)


def D_arch(ch=64, attention='64', ksize='333333', dilation='111111'):
  """Stages of the deep D (after a 3 -> in_channels[0] input conv). 512 px is new."""
  stages = {32: ([4, 4, 4], [4, 4, 4], [True, True, False, False], [16, 16, 16, 16]),
            64: ([1, 2, 4, 8], [2, 4, 8, 16], [True] * 4 + [False], [32, 16, 8, 4, 4]),
            128: ([1, 2, 4, 8, 16], [2, 4, 8, 16, 16], [True] * 5 + [False],
                  [64, 32, 16, 8, 4, 4]),
            256: ([1, 2, 4, 8, 8, 16], [2, 4, 8, 8, 16, 16], [True] * 6 + [False],
                  [128, 64, 32, 16, 8, 4, 4]),
            512: ([1, 1, 2, 4, 8, 8, 16], [1, 2, 4, 8, 8, 16, 16], [True] * 7 + [False],
                  [256, 128, 64, 32, 16, 8, 4, 4])}
  return models.stage_table(stages, ch, attention, 'downsample')


class Discriminator(models.Discriminator):
  arch_table = staticmethod(D_arch)

  def __init__(self, D_depth=2, **config):
    super(Discriminator, self).__init__(**config)
    self.D_depth = D_depth
    self.input_conv = self.which_conv(3, self.arch['in_channels'][0])
    # Each stage is one entry blocks.{stage} holding D_depth blocks (and attention last).
    self.assemble(lambda index: [DBlock(
        in_channels=self.arch['in_channels' if d_index == 0 else 'out_channels'][index],
        out_channels=self.arch['out_channels'][index], which_conv=self.which_conv,
        wide=self.D_wide, activation=self.activation, preactivation=True,
        downsample=nn.AvgPool2d(2) if self.arch['downsample'][index] and d_index == 0 else None)
        for d_index in range(self.D_depth)])

  def stem(self, x):
    return self.input_conv(x)
