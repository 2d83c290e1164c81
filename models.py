"""What the model families share: construction plumbing, initialisation, the optimizer, D's head.

A model family is a module next to train.py named by --model (BigGAN.py, BigGANdeep.py, or a
file of your own) with Generator and Discriminator classes taking **config (Glow.py, a flow
trained by likelihood in glow_fns.py, has a Generator and no Discriminator). The BigGAN families
derive from the bases here, which keep the original's layout: the attributes it set (G.dim_z,
G.n_classes, G.shared, ...), the optimizer inside the model (G.optim, D.optim) and the module
order that fixes state_dict keys and the optimizer's parameter order.

To add a family: subclass Generator / Discriminator, build the layers in __init__ between
super().__init__(**config) and self.finish(), and name the module with --model.
"""
import functools
import importlib

import torch
import torch.nn as nn
import torch.optim as optim

import layers
from errors import UserError

# The families shipped with the project (any importable module name also works as --model).
FAMILIES = ('BigGAN', 'BigGANdeep', 'Glow')


def load_model_module(name):
  """--model names a module next to train.py (one of FAMILIES, or the user's own file)."""
  try:
    return importlib.import_module(name)
  except ModuleNotFoundError as e:
    if e.name != name:
      raise
    if name.endswith('.py'):
      raise UserError('--model %s: give the module name without .py, e.g. --model %s'
                      % (name, name[:-3]))
    raise UserError('unknown --model %s: there is no %s.py; use %s'
                    % (name, name, ' or '.join(FAMILIES)))


def attention_resolutions(attention):
  """'32_64' -> {32, 64}; '0' -> set()."""
  return {int(item) for item in str(attention).split('_') if item}


def stage_table(stages, ch, attention, resample, first_in=None):
  """The per-resolution architecture dicts of a family from its stage table
  {resolution: (in multiples, out multiples, resampling flags, resolution labels)}: channels are
  multiples of ch (first_in, if given, is D's raw input width), `resample` names the flags
  ('upsample' or 'downsample'), and a block gets attention where its label is in `attention`."""
  attn = attention_resolutions(attention)
  arch = {}
  for res, (ins, outs, flags, labels) in stages.items():
    in_channels = [ch * item for item in ins]
    if first_in is not None:
      in_channels[0] = first_in
    arch[res] = {'in_channels': in_channels,
                 'out_channels': [ch * item for item in outs],
                 resample: list(flags),
                 'resolution': list(labels),
                 'attention': {r: r in attn for r in labels}}
  return arch


def check_resolution(arch, resolution, which):
  if resolution not in arch:
    raise ValueError('%s has no architecture for resolution %s; available: %s'
                     % (which, resolution, ', '.join(str(r) for r in sorted(arch))))
  return arch[resolution]


# ---------------------------------------------------------------------------------------------
# Initialisation and optimizer
# ---------------------------------------------------------------------------------------------


class Model(nn.Module):
  """Weight init by name (--G_init / --D_init) and the Adam optimizer the original kept inside the
  model. Subclasses call finish() last: the optimizer takes the parameters in module order."""

  def remember_training(self, init, skip_init, no_optim, lr, B1, B2, adam_eps, fused=False):
    self.init = init
    self._skip_init, self._no_optim = skip_init, no_optim
    self._optim_args = (lr, B1, B2, adam_eps)
    self._fused = fused

  def fast_paths(self, fold_resampling, cpu_channels_last):
    """The config keys of layers.py's fast paths (both on by default; off: the original's ops):
    resampling folded into the convolutions, channels_last activations on the CPU."""
    self.fold_resampling, self.cpu_channels_last = fold_resampling, cpu_channels_last

  def with_attention(self, index, block):
    """The list of modules of stage `index`, plus self-attention where the arch asks for it."""
    if self.arch['attention'][self.arch['resolution'][index]]:
      block = block + [layers.Attention(self.arch['out_channels'][index], self.which_conv)]
    return block

  def init_weights(self):
    self.param_count = layers.init_weights(self, self.init)

  def finish(self):
    if not self._skip_init:
      self.init_weights()
    if self._no_optim:
      return
    self.lr, self.B1, self.B2, self.adam_eps = self._optim_args
    self.optim = optim.Adam(params=self.parameters(), lr=self.lr, betas=(self.B1, self.B2),
                            weight_decay=0, eps=self.adam_eps, fused=self._fused or None)


# ---------------------------------------------------------------------------------------------
# Class-conditional generator
# ---------------------------------------------------------------------------------------------


class Generator(Model):
  """The plumbing of a BigGAN-style G: its attributes, layer factories (SN or plain), the shared
  class embedding and the output layer. `arch_table` is the family's G_arch function."""

  arch_table = None

  def __init__(self, G_ch=64, dim_z=128, bottom_width=4, resolution=128, G_kernel_size=3,
               G_attn='64', n_classes=1000, num_G_SVs=1, num_G_SV_itrs=1, G_shared=True,
               shared_dim=0, hier=False, cross_replica=False, mybn=False,
               G_activation=nn.ReLU(inplace=False), G_lr=5e-5, G_B1=0.0, G_B2=0.999,
               adam_eps=1e-8, BN_eps=1e-5, SN_eps=1e-12, G_init='ortho', skip_init=False,
               no_optim=False, G_param='SN', norm_style='bn', fold_resampling=True,
               cpu_channels_last=True, fused_optim=False, **kwargs):
    super().__init__()
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
    self.G_param = G_param
    self.norm_style = norm_style
    self.BN_eps = BN_eps
    self.SN_eps = SN_eps
    # Half precision is handled by autocast (--amp); the weights stay fp32.
    self.fp16 = False
    self.remember_training(G_init, skip_init, no_optim, G_lr, G_B1, G_B2, adam_eps, fused_optim)
    self.fast_paths(fold_resampling, cpu_channels_last)
    self.arch = check_resolution(type(self).arch_table(self.ch, self.attention), resolution, 'G')
    self.which_conv, self.which_linear, _ = layers.which_layers(
        G_param, num_G_SVs, num_G_SV_itrs, self.SN_eps)
    # G's embedding is never spectrally normalised (the original found it cripples G).
    self.which_embedding = nn.Embedding
    self.shared = (self.which_embedding(n_classes, self.shared_dim) if G_shared
                   else layers.identity())

  def conditional_bn(self, shared_input_size):
    """The class-conditional BN factory: gains and biases from the shared embedding (plus what
    the family concatenates to it) through bias-free linears, else per-class embeddings."""
    bn_linear = (functools.partial(self.which_linear, bias=False) if self.G_shared
                 else self.which_embedding)
    return functools.partial(
        layers.ccbn, which_linear=bn_linear, cross_replica=self.cross_replica, mybn=self.mybn,
        input_size=shared_input_size if self.G_shared else self.n_classes,
        norm_style=self.norm_style, eps=self.BN_eps)

  def make_output_layer(self, out_channels=3):
    """BN -> activation -> 3x3 conv. (The original's output BN ignored BN_eps, always 1e-5; it is
    passed here: the same numbers for every original launch script, which all use 1e-5.)"""
    channels = self.arch['out_channels'][-1]
    return nn.Sequential(
        layers.bn(channels, eps=self.BN_eps, cross_replica=self.cross_replica, mybn=self.mybn),
        self.activation,
        self.which_conv(channels, out_channels))

  def run_blocks(self, z, ys):
    """linear(z) reshaped to the bottom width, then block i conditioned on ys[i]."""
    h = self.linear(z)
    h = layers.activation_layout(h.view(h.size(0), -1, self.bottom_width, self.bottom_width),
                                 self.cpu_channels_last)
    for blocklist, y in zip(self.blocks, ys):
      for block in blocklist:
        h = block(h, y)
    return self.output_layer(h)


# ---------------------------------------------------------------------------------------------
# Projection discriminator
# ---------------------------------------------------------------------------------------------


class Discriminator(Model):
  """The plumbing of a BigGAN-style D and its projection head (Miyato and Koyama 2018): the
  pooled features through a linear layer plus their dot product with a class embedding. With
  --AC_weight > 0 it also has an auxiliary classifier (AC-GAN, Odena et al. 2017) on the same
  features, and forward returns [adversarial output, class logits] as one (batch, 1 + n_classes)
  tensor (1 + 2 n_classes with --AC_type adc), so that G_D, DDP and the split into fakes and
  reals carry it unchanged."""

  arch_table = None

  def __init__(self, D_ch=64, D_wide=True, resolution=128, D_kernel_size=3, D_attn='64',
               n_classes=1000, num_D_SVs=1, num_D_SV_itrs=1, D_activation=nn.ReLU(inplace=False),
               D_lr=2e-4, D_B1=0.0, D_B2=0.999, adam_eps=1e-8, SN_eps=1e-12, output_dim=1,
               D_init='ortho', skip_init=False, D_param='SN', fold_resampling=True,
               cpu_channels_last=True, AC_weight=0.0, AC_type='ac', fused_optim=False,
               **kwargs):
    super().__init__()
    self.ch = D_ch
    self.auxiliary_classifier = AC_weight > 0
    self.AC_outputs = n_classes * (2 if AC_type == 'adc' else 1)
    self.D_wide = D_wide
    self.resolution = resolution
    self.kernel_size = D_kernel_size
    self.attention = D_attn
    self.n_classes = n_classes
    self.activation = D_activation
    self.D_param = D_param
    self.SN_eps = SN_eps
    self.output_dim = output_dim
    self.fp16 = False
    self.remember_training(D_init, skip_init, False, D_lr, D_B1, D_B2, adam_eps, fused_optim)
    self.fast_paths(fold_resampling, cpu_channels_last)
    self.arch = check_resolution(type(self).arch_table(self.ch, self.attention), resolution, 'D')
    # The original crashed for D_param other than SN; plain layers are used then.
    self.which_conv, self.which_linear, self.which_embedding = layers.which_layers(
        D_param, num_D_SVs, num_D_SV_itrs, self.SN_eps)

  def assemble(self, make_stage):
    """Register the blocks of each stage (make_stage(index) -> list of blocks, with attention
    added where asked), then the head, then finish(). Modules are created in the original's
    order: the same parameter order, and the same default-initialised biases for one seed."""
    self.blocks = nn.ModuleList([nn.ModuleList(self.with_attention(index, make_stage(index)))
                                 for index in range(len(self.arch['out_channels']))])
    self.linear = self.which_linear(self.arch['out_channels'][-1], self.output_dim)
    self.embed = self.which_embedding(self.n_classes, self.arch['out_channels'][-1])
    if self.auxiliary_classifier:  # registered last: the keys before it keep their order
      self.classifier = self.which_linear(self.arch['out_channels'][-1], self.AC_outputs)
    self.finish()

  def stem(self, x):
    """What runs before the blocks (BigGAN-deep's input conv)."""
    return x

  def forward(self, x, y=None):
    h = self.stem(layers.activation_layout(x, self.cpu_channels_last))
    for blocklist in self.blocks:
      for block in blocklist:
        h = block(h)
    h = torch.sum(self.activation(h), [2, 3])
    out = self.linear(h) + torch.sum(self.embed(y) * h, 1, keepdim=True)
    if self.auxiliary_classifier:
      return torch.cat([out, self.classifier(h)], 1)
    return out


# ---------------------------------------------------------------------------------------------
# G and D in one module
# ---------------------------------------------------------------------------------------------


class G_D(nn.Module):
  """G and D in one module, so that nn.DataParallel runs both on each replica and G's output
  never gathers on one device. Under DDP, distributed.wrap routes the network being trained
  through its replica (the generate / discriminator hooks)."""

  def __init__(self, G, D):
    super(G_D, self).__init__()
    self.G = G
    self.D = D

  def generate(self, z, gy, train_G):
    return self.G(z, self.G.shared(gy))

  def discriminator(self, train_G):
    return self.D

  def forward(self, z, gy, x=None, dy=None, train_G=False, return_G_z=False, split_D=False,
              G_z=None):
    """D's outputs on G(z, gy) (or on G_z when given: fakes generated before, --reuse_fakes),
    and with x on the reals too."""
    if G_z is None:
      with torch.set_grad_enabled(train_G):
        G_z = self.generate(z, gy, train_G)
    D = self.discriminator(train_G)
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
