"""BigGAN generator and discriminator (Brock et al. 2019), as in the original BigGAN-PyTorch.

    G = BigGAN.Generator(**config); D = BigGAN.Discriminator(**config); GD = BigGAN.G_D(G, D)

`config` is the parser's dict plus resolution, n_classes, G_activation and D_activation (see
train.py). The module layout gives the same state_dict keys and parameter order as the original.
"""
import functools

import torch
import torch.nn as nn
import torch.optim as optim

import layers


def attention_resolutions(attention):
  """'32_64' -> {32, 64}; '0' -> set()."""
  return {int(item) for item in str(attention).split('_') if item}


def G_arch(ch=64, attention='64', ksize='333333', dilation='111111'):
  """Channels (multiples of ch) and output resolution of each G block; every block upsamples x2."""
  attn = attention_resolutions(attention)
  stages = {32: ([4, 4, 4], [4, 4, 4]),
            64: ([16, 16, 8, 4], [16, 8, 4, 2]),
            128: ([16, 16, 8, 4, 2], [16, 8, 4, 2, 1]),
            256: ([16, 16, 8, 8, 4, 2], [16, 8, 8, 4, 2, 1]),
            512: ([16, 16, 8, 8, 4, 2, 1], [16, 8, 8, 4, 2, 1, 1])}
  arch = {}
  for res, (ins, outs) in stages.items():
    resolutions = [8 * 2 ** i for i in range(len(ins))]
    arch[res] = {'in_channels': [ch * item for item in ins],
                 'out_channels': [ch * item for item in outs],
                 'upsample': [True] * len(ins),
                 'resolution': resolutions,
                 'attention': {r: r in attn for r in resolutions}}
  return arch


def D_arch(ch=64, attention='64', ksize='333333', dilation='111111'):
  """Channels, downsampling and resolution label of each D block.

  The 32 px labels (all 16) are wrong in the original but decide where attention goes, so they are
  kept. 512 px is new (the paper's table; the original has none).
  """
  attn = attention_resolutions(attention)
  stages = {32: ([3, 4, 4, 4], [4, 4, 4, 4], [True, True, False, False], [16, 16, 16, 16]),
            64: ([3, 1, 2, 4, 8], [1, 2, 4, 8, 16], [True] * 4 + [False], [32, 16, 8, 4, 4]),
            128: ([3, 1, 2, 4, 8, 16], [1, 2, 4, 8, 16, 16], [True] * 5 + [False],
                  [64, 32, 16, 8, 4, 4]),
            256: ([3, 1, 2, 4, 8, 8, 16], [1, 2, 4, 8, 8, 16, 16], [True] * 6 + [False],
                  [128, 64, 32, 16, 8, 4, 4]),
            512: ([3, 1, 1, 2, 4, 8, 8, 16], [1, 1, 2, 4, 8, 8, 16, 16], [True] * 7 + [False],
                  [256, 128, 64, 32, 16, 8, 4, 4])}
  arch = {}
  for res, (ins, outs, down, resolutions) in stages.items():
    arch[res] = {'in_channels': [3] + [ch * item for item in ins[1:]],
                 'out_channels': [ch * item for item in outs],
                 'downsample': down,
                 'resolution': resolutions,
                 'attention': {r: r in attn for r in resolutions}}
  return arch


def check_resolution(arch, resolution, which):
  if resolution not in arch:
    raise ValueError('%s has no architecture for resolution %s; available: %s'
                     % (which, resolution, ', '.join(str(r) for r in sorted(arch))))
  return arch[resolution]


class Generator(nn.Module):
  def __init__(self, G_ch=64, dim_z=128, bottom_width=4, resolution=128, G_kernel_size=3,
               G_attn='64', n_classes=1000, num_G_SVs=1, num_G_SV_itrs=1, G_shared=True,
               shared_dim=0, hier=False, cross_replica=False, mybn=False,
               G_activation=nn.ReLU(inplace=False), G_lr=5e-5, G_B1=0.0, G_B2=0.999,
               adam_eps=1e-8, BN_eps=1e-5, SN_eps=1e-12, G_mixed_precision=False, G_fp16=False,
               G_init='ortho', skip_init=False, no_optim=False, G_param='SN', norm_style='bn',
               **kwargs):
    super(Generator, self).__init__()
    self.ch = G_ch
    self.dim_z = dim_z
    self.bottom_width = bottom_width
    self.resolution = resolution
    self.kernel_size = G_kernel_size
    self.attention = G_attn
    self.n_classes = n_classes
    self.G_shared = G_shared
    self.shared_dim = shared_dim if shared_dim > 0 else dim_z
    self.hier = hier
    self.cross_replica = cross_replica
    self.mybn = mybn
    self.activation = G_activation
    self.init = G_init
    self.G_param = G_param
    self.norm_style = norm_style
    self.BN_eps = BN_eps
    self.SN_eps = SN_eps
    # Half precision is handled by autocast (--amp); the weights stay fp32.
    self.fp16 = False
    self.arch = check_resolution(G_arch(self.ch, self.attention), resolution, 'G')
    if self.hier and not self.G_shared:
      raise ValueError('--hier needs --G_shared: the z chunks are concatenated to the shared '
                       'class embedding')

    # Hierarchical z: one chunk for the linear layer and one per block.
    if self.hier:
      self.num_slots = len(self.arch['in_channels']) + 1
      self.z_chunk_size = (self.dim_z // self.num_slots)
      self.dim_z = self.z_chunk_size * self.num_slots
    else:
      self.num_slots = 1
      self.z_chunk_size = 0

    self.which_conv, self.which_linear, _ = layers.which_layers(
        G_param, num_G_SVs, num_G_SV_itrs, self.SN_eps)
    # G's embedding is never spectrally normalised (the original found it cripples G).
    self.which_embedding = nn.Embedding
    bn_linear = (functools.partial(self.which_linear, bias=False) if self.G_shared
                 else self.which_embedding)
    self.which_bn = functools.partial(
        layers.ccbn, which_linear=bn_linear, cross_replica=self.cross_replica, mybn=self.mybn,
        input_size=(self.shared_dim + self.z_chunk_size if self.G_shared else self.n_classes),
        norm_style=self.norm_style, eps=self.BN_eps)

    self.shared = (self.which_embedding(n_classes, self.shared_dim) if G_shared
                   else layers.identity())
    self.linear = self.which_linear(self.dim_z // self.num_slots,
                                    self.arch['in_channels'][0] * (self.bottom_width ** 2))
    blocks = []
    for index in range(len(self.arch['out_channels'])):
      block = [layers.GBlock(in_channels=self.arch['in_channels'][index],
                             out_channels=self.arch['out_channels'][index],
                             which_conv=self.which_conv, which_bn=self.which_bn,
                             activation=self.activation,
                             upsample=(layers.upsample_nearest2x if self.arch['upsample'][index]
                                       else None))]
      if self.arch['attention'][self.arch['resolution'][index]]:
        block += [layers.Attention(self.arch['out_channels'][index], self.which_conv)]
      blocks.append(nn.ModuleList(block))
    self.blocks = nn.ModuleList(blocks)
    # The original's output BN ignored BN_eps (always 1e-5); it is passed here (same numbers for
    # every original launch script, which all use 1e-5).
    self.output_layer = nn.Sequential(
        layers.bn(self.arch['out_channels'][-1], eps=self.BN_eps,
                  cross_replica=self.cross_replica, mybn=self.mybn),
        self.activation,
        self.which_conv(self.arch['out_channels'][-1], 3))

    if not skip_init:
      self.param_count = layers.init_weights(self, self.init)
    if no_optim:
      return
    self.lr, self.B1, self.B2, self.adam_eps = G_lr, G_B1, G_B2, adam_eps
    self.optim = optim.Adam(params=self.parameters(), lr=self.lr, betas=(self.B1, self.B2),
                            weight_decay=0, eps=self.adam_eps)

  def init_weights(self):
    self.param_count = layers.init_weights(self, self.init)

  def forward(self, z, y):
    """z: (B, dim_z) noise; y: the class input already passed through self.shared."""
    if self.hier:
      zs = torch.split(z, self.z_chunk_size, 1)
      z = zs[0]
      ys = [torch.cat([y, item], 1) for item in zs[1:]]
    else:
      ys = [y] * len(self.blocks)
    h = self.linear(z)
    h = layers.activation_layout(h.view(h.size(0), -1, self.bottom_width, self.bottom_width))
    for index, blocklist in enumerate(self.blocks):
      for block in blocklist:
        h = block(h, ys[index])
    return torch.tanh(self.output_layer(h)).contiguous()  # standard layout for callers


class Discriminator(nn.Module):
  def __init__(self, D_ch=64, D_wide=True, resolution=128, D_kernel_size=3, D_attn='64',
               n_classes=1000, num_D_SVs=1, num_D_SV_itrs=1, D_activation=nn.ReLU(inplace=False),
               D_lr=2e-4, D_B1=0.0, D_B2=0.999, adam_eps=1e-8, SN_eps=1e-12, output_dim=1,
               D_mixed_precision=False, D_fp16=False, D_init='ortho', skip_init=False,
               D_param='SN', **kwargs):
    super(Discriminator, self).__init__()
    self.ch = D_ch
    self.D_wide = D_wide
    self.resolution = resolution
    self.kernel_size = D_kernel_size
    self.attention = D_attn
    self.n_classes = n_classes
    self.activation = D_activation
    self.init = D_init
    self.D_param = D_param
    self.SN_eps = SN_eps
    self.fp16 = False
    self.arch = check_resolution(D_arch(self.ch, self.attention), resolution, 'D')
    # The original crashed for D_param other than SN; plain layers are used then.
    self.which_conv, self.which_linear, self.which_embedding = layers.which_layers(
        D_param, num_D_SVs, num_D_SV_itrs, self.SN_eps)

    blocks = []
    for index in range(len(self.arch['out_channels'])):
      block = [layers.DBlock(in_channels=self.arch['in_channels'][index],
                             out_channels=self.arch['out_channels'][index],
                             which_conv=self.which_conv, wide=self.D_wide,
                             activation=self.activation, preactivation=(index > 0),
                             downsample=(nn.AvgPool2d(2) if self.arch['downsample'][index]
                                         else None))]
      if self.arch['attention'][self.arch['resolution'][index]]:
        block += [layers.Attention(self.arch['out_channels'][index], self.which_conv)]
      blocks.append(nn.ModuleList(block))
    self.blocks = nn.ModuleList(blocks)
    self.linear = self.which_linear(self.arch['out_channels'][-1], output_dim)
    # Projection discriminator: the class embedding is dotted with the pooled features.
    self.embed = self.which_embedding(self.n_classes, self.arch['out_channels'][-1])

    if not skip_init:
      self.param_count = layers.init_weights(self, self.init)
    self.lr, self.B1, self.B2, self.adam_eps = D_lr, D_B1, D_B2, adam_eps
    self.optim = optim.Adam(params=self.parameters(), lr=self.lr, betas=(self.B1, self.B2),
                            weight_decay=0, eps=self.adam_eps)

  def init_weights(self):
    self.param_count = layers.init_weights(self, self.init)

  def forward(self, x, y=None):
    h = layers.activation_layout(x)
    for blocklist in self.blocks:
      for block in blocklist:
        h = block(h)
    h = torch.sum(self.activation(h), [2, 3])
    out = self.linear(h)
    return out + torch.sum(self.embed(y) * h, 1, keepdim=True)


class G_D(nn.Module):
  """G and D in one module, so that nn.DataParallel / DDP run both on each replica and G's output
  never gathers on one device."""

  def __init__(self, G, D):
    super(G_D, self).__init__()
    self.G = G
    self.D = D

  # DDP replicas of G and D, set by distributed.wrap: the one being trained runs through its
  # replica (which averages its gradients over processes), the other one directly.
  replicas = {}

  def forward(self, z, gy, x=None, dy=None, train_G=False, return_G_z=False, split_D=False):
    with torch.set_grad_enabled(train_G):
      if train_G and 'G' in self.replicas:
        G_z = self.replicas['G'](z, gy)
      else:
        G_z = self.G(z, self.G.shared(gy))
    D = self.replicas['D'] if not train_G and 'D' in self.replicas else self.D
    if split_D:
      D_fake = D(G_z, gy)
      if x is not None:
        return D_fake, D(x, dy)
      return (D_fake, G_z) if return_G_z else D_fake
    D_input = torch.cat([G_z, x], 0) if x is not None else G_z
    D_class = torch.cat([gy, dy], 0) if dy is not None else gy
    D_out = D(D_input, D_class)
    if x is not None:
      return torch.split(D_out, [G_z.shape[0], x.shape[0]])  # D_fake, D_real
    return (D_out, G_z) if return_G_z else D_out
