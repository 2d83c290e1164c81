"""Building blocks of BigGAN: spectral norm, attention, (conditional) batch norm, residual blocks.

Module names, buffer names and registration order match the original BigGAN-PyTorch exactly, so its
checkpoints load and the same seed gives the same initial weights.
"""
import contextlib
import functools

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn import Parameter as P

# ---------------------------------------------------------------------------------------------
# Spectral norm (Miyato et al.) with several singular values, as in the original
# ---------------------------------------------------------------------------------------------


def proj(x, y):
  """Projection of row vector x onto row vector y."""
  return torch.mm(y, x.t()) * y / torch.mm(y, y.t())


def gram_schmidt(x, ys):
  """Remove from x its components along each vector in ys."""
  for y in ys:
    x = x - proj(x, y)
  return x


def power_iteration(W, u_, update=True, eps=1e-12):
  """One power iteration for each of the singular vectors in u_ (a list of (1, out) buffers).

  The vectors are found without gradient; the singular values sv = v W^T u^T carry the gradient
  to W, which is what makes W / sv[0] a spectrally normalised weight. In train mode the buffers
  are updated in place.
  """
  us, vs, svs = [], [], []
  for i, u in enumerate(u_):
    with torch.no_grad():
      v = F.normalize(gram_schmidt(torch.matmul(u, W), vs), eps=eps)
      vs.append(v)
      u = F.normalize(gram_schmidt(torch.matmul(v, W.t()), us), eps=eps)
      us.append(u)
      if update:
        u_[i].copy_(u)
    svs.append(torch.squeeze(torch.matmul(torch.matmul(v, W.t()), u.t())))
  return svs, us, vs


class SN(object):
  """Mixin that spectrally normalises `self.weight`: buffers u{i} (singular vectors) and sv{i}
  (the last estimated singular values, for logging) for i < num_svs."""

  def __init__(self, num_svs, num_itrs, num_outputs, transpose=False, eps=1e-12):
    if num_itrs < 1 or num_svs < 1:
      raise ValueError('spectral norm needs num_svs >= 1 and num_itrs >= 1')
    self.num_itrs = num_itrs
    self.num_svs = num_svs
    self.transpose = transpose
    self.eps = eps
    for i in range(self.num_svs):
      self.register_buffer('u%d' % i, torch.randn(1, num_outputs))
      self.register_buffer('sv%d' % i, torch.ones(1))

  @property
  def u(self):
    return [getattr(self, 'u%d' % i) for i in range(self.num_svs)]

  @property
  def sv(self):
    return [getattr(self, 'sv%d' % i) for i in range(self.num_svs)]

  def W_(self):
    """The normalised weight. The power iteration runs in fp32 even under autocast."""
    device_type = self.weight.device.type
    if torch.is_autocast_enabled(device_type):
      with torch.autocast(device_type, enabled=False):
        return self._normalised_weight()
    return self._normalised_weight()

  def _normalised_weight(self):
    weight = self.weight
    # Low-precision weights iterate in fp32; fp32/fp64 stay as they are.
    W_mat = (weight if weight.dtype in (torch.float32, torch.float64) else weight.float())
    # reshape, not view: channels_last conv weights are not contiguous (then a copy).
    W_mat = W_mat.reshape(weight.size(0), -1)
    if self.transpose:
      W_mat = W_mat.t()
    for _ in range(self.num_itrs):
      svs, _, _ = power_iteration(W_mat, self.u, update=self.training, eps=self.eps)
    if self.training:
      with torch.no_grad():
        for sv_buffer, sv in zip(self.sv, svs):
          sv_buffer.copy_(sv)
    return weight / svs[0].to(weight.dtype)


class SNConv2d(nn.Conv2d, SN):
  def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
               groups=1, bias=True, num_svs=1, num_itrs=1, eps=1e-12):
    nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                       groups, bias)
    SN.__init__(self, num_svs, num_itrs, out_channels, eps=eps)

  def forward(self, x):
    return F.conv2d(x, self.W_(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class SNLinear(nn.Linear, SN):
  def __init__(self, in_features, out_features, bias=True, num_svs=1, num_itrs=1, eps=1e-12):
    nn.Linear.__init__(self, in_features, out_features, bias)
    SN.__init__(self, num_svs, num_itrs, out_features, eps=eps)

  def forward(self, x):
    return F.linear(x, self.W_(), self.bias)


class SNEmbedding(nn.Embedding, SN):
  """Embedding normalised by the spectral norm of its (num_embeddings, dim) table."""

  def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2,
               scale_grad_by_freq=False, sparse=False, _weight=None, num_svs=1, num_itrs=1,
               eps=1e-12):
    nn.Embedding.__init__(self, num_embeddings, embedding_dim, padding_idx, max_norm, norm_type,
                          scale_grad_by_freq, sparse, _weight)
    SN.__init__(self, num_svs, num_itrs, num_embeddings, eps=eps)

  def forward(self, x):
    return F.embedding(x, self.W_())


# ---------------------------------------------------------------------------------------------
# Self-attention (SAGAN)
# ---------------------------------------------------------------------------------------------


class Attention(nn.Module):
  """Non-local block: keys and values max-pooled by 2, output scaled by gamma (initially 0)."""

  def __init__(self, ch, which_conv=SNConv2d, name='attention'):
    super(Attention, self).__init__()
    self.ch = ch
    self.which_conv = which_conv
    self.theta = which_conv(ch, ch // 8, kernel_size=1, padding=0, bias=False)
    self.phi = which_conv(ch, ch // 8, kernel_size=1, padding=0, bias=False)
    self.g = which_conv(ch, ch // 2, kernel_size=1, padding=0, bias=False)
    self.o = which_conv(ch // 2, ch, kernel_size=1, padding=0, bias=False)
    self.gamma = P(torch.tensor(0.), requires_grad=True)

  def forward(self, x, y=None):
    B, _, H, W = x.shape

    def tokens(t):  # (B, C, h, w) -> (B, h*w, C); free for channels_last activations
      return t.permute(0, 2, 3, 1).reshape(B, -1, t.shape[1])
    theta = tokens(self.theta(x))
    phi = tokens(F.max_pool2d(self.phi(x), [2, 2]))
    g = tokens(F.max_pool2d(self.g(x), [2, 2]))
    # The original's g softmax(theta^T phi)^T: attention with scale 1 (queries at every pixel,
    # keys and values at the pooled ones). The fused (flash) kernels never store the attention
    # map, but want one head size for queries, keys and values (else SDPA falls back to its math
    # path, slower than a plain bmm-softmax-bmm): theta and phi are zero-padded to g's width,
    # which adds exact zeros to every score; they also want contiguous channels (a copy of g
    # for NCHW input). 3.5x faster at 64x64 on a CPU, far less memory.
    pad = g.shape[-1] - theta.shape[-1]
    theta, phi, g = F.pad(theta, (0, pad)), F.pad(phi, (0, pad)), g.contiguous()
    o = F.scaled_dot_product_attention(theta.unsqueeze(1), phi.unsqueeze(1), g.unsqueeze(1),
                                       scale=1.0).squeeze(1)
    o = o.view(B, H, W, self.ch // 2).permute(0, 3, 1, 2)  # channels_last
    if not x.is_contiguous(memory_format=torch.channels_last):
      o = o.contiguous()  # keep x's layout
    return self.gamma * self.o(o) + x


# ---------------------------------------------------------------------------------------------
# Batch norm variants
# ---------------------------------------------------------------------------------------------


def fused_bn(x, mean, var, gain=None, bias=None, eps=1e-5):
  """(x - mean) / sqrt(var + eps) * gain + bias as one scale and one shift."""
  scale = torch.rsqrt(var + eps)
  if gain is not None:
    scale = scale * gain
  shift = mean * scale
  if bias is not None:
    shift = shift - bias
  return x * scale - shift


def manual_bn(x, gain=None, bias=None, return_mean_var=False, eps=1e-5):
  """Batch norm with statistics computed in fp32 or better (biased variance, as the original's
  myBN; the original also rounded float64 input to fp32)."""
  float_x = x if x.dtype == torch.float64 else x.float()
  m = torch.mean(float_x, [0, 2, 3], keepdim=True)
  m2 = torch.mean(float_x ** 2, [0, 2, 3], keepdim=True)
  var = (m2 - m ** 2).to(x.dtype)
  m = m.to(x.dtype)
  out = fused_bn(x, m, var, gain, bias, eps)
  if return_mean_var:
    return out, m.squeeze(), var.squeeze()
  return out


class myBN(nn.Module):
  """The original's BN: running statistics, or "standing" statistics summed over
  accumulate_standing passes and averaged at eval time.

  accumulate_standing is a Python flag as in the original (not in the state_dict), so eval mode
  decides without reading a buffer back from the device. The original left the flag set after
  accumulating, so its checkpoints may hold sums: stored_* summed over accumulation_counter
  batches (accumulation_counter > 0). Those are turned into averages (counter 0) when loaded, see
  _load_from_state_dict; between begin and end of a standing pass is the only time the buffers
  hold sums here.
  """

  def __init__(self, num_channels, eps=1e-5, momentum=0.1):
    super(myBN, self).__init__()
    self.momentum = momentum
    self.eps = eps
    self.register_buffer('stored_mean', torch.zeros(num_channels))
    self.register_buffer('stored_var', torch.ones(num_channels))
    self.register_buffer('accumulation_counter', torch.zeros(1))
    self.accumulate_standing = False

  def reset_stats(self):
    self.stored_mean.zero_()
    self.stored_var.zero_()
    self.accumulation_counter.zero_()

  def forward(self, x, gain, bias):
    if self.training:
      out, mean, var = manual_bn(x, gain, bias, return_mean_var=True, eps=self.eps)
      with torch.no_grad():
        mean, var = mean.to(self.stored_mean.dtype), var.to(self.stored_var.dtype)
        if self.accumulate_standing:
          self.stored_mean += mean
          self.stored_var += var
          self.accumulation_counter += 1.0
        else:
          self.stored_mean.mul_(1 - self.momentum).add_(mean * self.momentum)
          self.stored_var.mul_(1 - self.momentum).add_(var * self.momentum)
      return out
    mean = self.stored_mean.view(1, -1, 1, 1)
    var = self.stored_var.view(1, -1, 1, 1)
    if self.accumulate_standing:  # the original's rule: sums while accumulating
      mean = mean / self.accumulation_counter
      var = var / self.accumulation_counter
    return fused_bn(x, mean, var, gain, bias, self.eps)

  def _average_sums(self):
    """Sums over accumulation_counter > 0 batches become averages (counter 0); no device sync."""
    with torch.no_grad():
      counter = self.accumulation_counter
      divisor = torch.where(counter > 0, counter, torch.ones_like(counter))
      self.stored_mean.div_(divisor)
      self.stored_var.div_(divisor)
      counter.zero_()

  def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
    # A checkpoint of the original saved after accumulating standing statistics holds sums
    # (it divided them at eval time only while its in-memory flag was set, which a new process
    # has lost). Averaging them here gives the statistics its eval mode used, and keeps
    # training (momentum updates), EMA blending and re-saving correct; a loaded checkpoint thus
    # always holds averages, which the original reads correctly too.
    super(myBN, self)._load_from_state_dict(state_dict, prefix, *args, **kwargs)
    if (prefix + 'accumulation_counter' not in state_dict
        or self.accumulation_counter.device.type == 'meta'):
      return
    for name in ('stored_mean', 'stored_var', 'accumulation_counter'):
      if getattr(self, name) is state_dict.get(prefix + name):  # load_state_dict(assign=True)
        setattr(self, name, getattr(self, name).clone())  # leave the caller's tensors alone
    self._average_sums()

  def finish_standing(self):
    """Turn the standing sums into statistics, so that training can go on from them."""
    self._average_sums()
    self.accumulate_standing = False


class CrossReplicaBN(nn.BatchNorm2d):
  """Batch norm over the batches of all processes: nn.SyncBatchNorm's maths and state_dict
  (running_mean, running_var, num_batches_tracked), no affine part.

  In one process it is plain BN. The statistics are combined with differentiable all-reduces
  (the global mean first, then the global variance around it, which avoids the cancellation of
  E[x^2] - E[x]^2). Written here rather than using nn.SyncBatchNorm because that one refuses
  CPU/gloo and DDP refuses it on CPU modules.
  """

  def __init__(self, num_features, eps=1e-5, momentum=0.1):
    super(CrossReplicaBN, self).__init__(num_features, eps=eps, momentum=momentum, affine=False)

  sync = True  # switched off by local_batch_statistics()

  def forward(self, x):
    distributed = (self.training and CrossReplicaBN.sync and dist.is_available()
                   and dist.is_initialized() and dist.get_world_size() > 1)
    if not distributed:
      return super(CrossReplicaBN, self).forward(x)
    from torch.distributed.nn.functional import all_reduce
    float_x = x if x.dtype == torch.float64 else x.float()
    count = torch.tensor([float(x.numel() // x.size(1))], device=x.device, dtype=float_x.dtype)
    sums = all_reduce(torch.cat([float_x.sum([0, 2, 3]), count]))
    total = sums[-1]
    mean = sums[:-1] / total
    centered = float_x - mean.view(1, -1, 1, 1)
    var = all_reduce((centered * centered).sum([0, 2, 3])) / total
    with torch.no_grad():
      self.num_batches_tracked += 1
      factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
      self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype) * factor)
      unbiased = var.detach() * total / (total - 1).clamp_min(1)
      self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype) * factor)
    out = centered * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
    return out.to(x.dtype)


def _momentum(module):
  """BN momentum; while accumulating standing statistics, 1/k on the k-th batch (an equal-weight
  average of the batch statistics)."""
  count = getattr(module, 'standing_count', None)
  if count is None or not module.training:
    return module.momentum
  module.standing_count = count + 1
  return 1.0 / module.standing_count


def begin_standing_stats(net):
  """Reset every BN's statistics; train-mode passes then average their batch statistics."""
  for m in net.modules():
    if isinstance(m, myBN):
      m.reset_stats()
      m.accumulate_standing = True
    elif isinstance(m, CrossReplicaBN):
      m.reset_running_stats()
      m.standing_momentum, m.momentum = m.momentum, None  # PyTorch's cumulative average
    elif isinstance(m, (ccbn, bn)) and hasattr(m, 'stored_mean'):
      m.stored_mean.zero_()
      m.stored_var.zero_()
      m.standing_count = 0


def end_standing_stats(net):
  for m in net.modules():
    if isinstance(m, myBN):
      m.finish_standing()
    elif isinstance(m, CrossReplicaBN) and hasattr(m, 'standing_momentum'):
      m.momentum = m.standing_momentum
      del m.standing_momentum
    elif isinstance(m, (ccbn, bn)):
      m.standing_count = None


@contextlib.contextmanager
def local_batch_statistics():
  """Cross-replica BN uses this process's batch alone, e.g. while only one process samples."""
  previous, CrossReplicaBN.sync = CrossReplicaBN.sync, False
  try:
    yield
  finally:
    CrossReplicaBN.sync = previous


def groupnorm(x, norm_style, eps=1e-5):
  """Group norm with the group count from norm_style: gn (16 groups), gn_grp_{G}, gn_ch_{C}."""
  if 'ch' in norm_style:
    ch = int(norm_style.split('_')[-1])
    groups = max(int(x.shape[1]) // ch, 1)
  elif 'grp' in norm_style:
    groups = int(norm_style.split('_')[-1])
  else:
    groups = 16
  return F.group_norm(x, groups, eps=eps)


NORM_STYLES = ('bn', 'in', 'ln', 'gn', 'nonorm')


class ccbn(nn.Module):
  """Class-conditional BN: normalise, then multiply by 1 + gain(y) and add bias(y).

  gain/bias are `which_linear(input_size, output_size)`: bias-free linears of the shared embedding
  (+ z chunk) with --G_shared, else embeddings of the class index.
  """

  def __init__(self, output_size, input_size, which_linear, eps=1e-5, momentum=0.1,
               cross_replica=False, mybn=False, norm_style='bn'):
    super(ccbn, self).__init__()
    self.output_size, self.input_size = output_size, input_size
    self.gain = which_linear(input_size, output_size)
    self.bias = which_linear(input_size, output_size)
    self.eps = eps
    self.momentum = momentum
    self.cross_replica = cross_replica
    self.mybn = mybn
    self.norm_style = norm_style
    if norm_style.split('_')[0] not in NORM_STYLES:
      raise ValueError('unknown norm_style %r; use one of %s'
                       % (norm_style, ', '.join(NORM_STYLES)))
    if self.cross_replica:
      self.bn = CrossReplicaBN(output_size, eps=self.eps, momentum=self.momentum)
    elif self.mybn:
      self.bn = myBN(output_size, self.eps, self.momentum)
    elif self.norm_style in ['bn', 'in']:
      self.register_buffer('stored_mean', torch.zeros(output_size))
      self.register_buffer('stored_var', torch.ones(output_size))

  def forward(self, x, y):
    gain = (1 + self.gain(y)).view(y.size(0), -1, 1, 1)
    bias = self.bias(y).view(y.size(0), -1, 1, 1)
    if self.mybn:
      return self.bn(x, gain=gain, bias=bias)
    if self.cross_replica:
      out = self.bn(x)
    elif self.norm_style == 'bn':
      out = F.batch_norm(x, self.stored_mean, self.stored_var, None, None, self.training,
                         _momentum(self), self.eps)
    elif self.norm_style == 'in':
      out = F.instance_norm(x, self.stored_mean, self.stored_var, None, None, self.training,
                            _momentum(self), self.eps)
    elif self.norm_style == 'ln':
      out = F.group_norm(x, 1, eps=self.eps)
    elif self.norm_style.startswith('gn'):
      out = groupnorm(x, self.norm_style, eps=self.eps)
    else:  # nonorm
      out = x
    return out * gain + bias

  def extra_repr(self):
    return 'out: {output_size}, in: {input_size}, cross_replica={cross_replica}'.format(
        **self.__dict__)


class bn(nn.Module):
  """Unconditional BN with learned gain and bias (G's output layer)."""

  def __init__(self, output_size, eps=1e-5, momentum=0.1, cross_replica=False, mybn=False):
    super(bn, self).__init__()
    self.output_size = output_size
    self.gain = P(torch.ones(output_size), requires_grad=True)
    self.bias = P(torch.zeros(output_size), requires_grad=True)
    self.eps = eps
    self.momentum = momentum
    self.cross_replica = cross_replica
    self.mybn = mybn
    if cross_replica:
      self.bn = CrossReplicaBN(output_size, eps=self.eps, momentum=self.momentum)
    elif mybn:
      self.bn = myBN(output_size, self.eps, self.momentum)
    else:
      self.register_buffer('stored_mean', torch.zeros(output_size))
      self.register_buffer('stored_var', torch.ones(output_size))

  def forward(self, x, y=None):
    gain = self.gain.view(1, -1, 1, 1)
    bias = self.bias.view(1, -1, 1, 1)
    if self.mybn:
      return self.bn(x, gain=gain, bias=bias)
    if self.cross_replica:
      return self.bn(x) * gain + bias
    return F.batch_norm(x, self.stored_mean, self.stored_var, self.gain, self.bias, self.training,
                        _momentum(self), self.eps)


class identity(nn.Module):
  def forward(self, input):
    return input


# ---------------------------------------------------------------------------------------------
# Residual blocks
# ---------------------------------------------------------------------------------------------


class GBlock(nn.Module):
  """G's residual block: bn-act-(upsample)-conv-bn-act-conv plus a (1x1 conv) shortcut."""

  def __init__(self, in_channels, out_channels, which_conv=nn.Conv2d, which_bn=bn, activation=None,
               upsample=None, fold=True):
    super(GBlock, self).__init__()
    self.in_channels, self.out_channels = in_channels, out_channels
    self.which_conv, self.which_bn = which_conv, which_bn
    self.activation = activation
    self.upsample = upsample
    self.fold = fold  # folded resampling (upsample_conv)
    self.conv1 = self.which_conv(self.in_channels, self.out_channels)
    self.conv2 = self.which_conv(self.out_channels, self.out_channels)
    self.learnable_sc = in_channels != out_channels or bool(upsample)
    if self.learnable_sc:
      self.conv_sc = self.which_conv(in_channels, out_channels, kernel_size=1, padding=0)
    self.bn1 = self.which_bn(in_channels)
    self.bn2 = self.which_bn(out_channels)

  def forward(self, x, y):
    h = self.activation(self.bn1(x, y))
    h = upsample_conv(self.upsample, self.conv1, h, self.fold)
    h = self.activation(self.bn2(h, y))
    h = self.conv2(h)
    if self.learnable_sc:
      x = upsample_conv(self.upsample, self.conv_sc, x, self.fold)
    elif self.upsample:
      x = self.upsample(x)
    return h + x


class DBlock(nn.Module):
  """D's residual block: (relu)-conv-act-conv-(downsample) plus a (1x1 conv) shortcut."""

  def __init__(self, in_channels, out_channels, which_conv=SNConv2d, wide=True,
               preactivation=False, activation=None, downsample=None, fold=True):
    super(DBlock, self).__init__()
    self.in_channels, self.out_channels = in_channels, out_channels
    self.hidden_channels = self.out_channels if wide else self.in_channels
    self.which_conv = which_conv
    self.preactivation = preactivation
    self.activation = activation
    self.downsample = downsample
    self.fold = fold  # folded resampling (conv_downsample)
    self.conv1 = self.which_conv(self.in_channels, self.hidden_channels)
    self.conv2 = self.which_conv(self.hidden_channels, self.out_channels)
    self.learnable_sc = (in_channels != out_channels) or bool(downsample)
    if self.learnable_sc:
      self.conv_sc = self.which_conv(in_channels, out_channels, kernel_size=1, padding=0)

  def shortcut(self, x):
    if self.preactivation:
      if self.learnable_sc:
        x = conv_downsample(self.conv_sc, self.downsample, x, self.fold)
      elif self.downsample:
        x = self.downsample(x)
    else:
      if self.downsample:
        x = self.downsample(x)
      if self.learnable_sc:
        x = self.conv_sc(x)
    return x

  def forward(self, x):
    # The original applies a plain ReLU here whatever D_nl is; kept for identical numbers.
    h = F.relu(x) if self.preactivation else x
    h = self.conv1(h)
    h = conv_downsample(self.conv2, self.downsample, self.activation(h), self.fold)
    return h + self.shortcut(x)


def upsample_nearest2x(x):
  """Nearest-neighbour x2 upsampling (the original's F.interpolate(scale_factor=2))."""
  return F.interpolate(x, scale_factor=2)


# ---------------------------------------------------------------------------------------------
# Fast paths: the same maths as the original's op sequence, other float rounding. Both are on by
# default; the config keys cpu_channels_last and fold_resampling (models.py passes them to the
# layers they concern) set to False give the original's ops: the speed reference of
# bench/bench_train.py and the comparison in tests/test_speed_options.py.
# ---------------------------------------------------------------------------------------------
# On CPU, oneDNN convolutions of channels_last activations skip the reorders between NCHW and its
# blocked layout (bench/bench_train.py measures it). G and D convert their input with
# activation_layout; weights keep their layout and G returns images in the standard one. float64
# (no oneDNN kernels) stays NCHW.


def activation_layout(x, channels_last=True):
  """x in the layout its device's convolutions run fastest with (channels_last=False: as is)."""
  if channels_last and x.device.type == 'cpu' and x.dtype != torch.float64:
    return x.contiguous(memory_format=torch.channels_last)
  return x


# Nearest x2 upsampling followed by a 3x3 conv repeats every input pixel, and a 3x3 conv followed
# by 2x2 average pooling computes outputs that are only averaged: both are one stride-2 conv with
# a 4x4 kernel of summed taps, 4/9 of the multiplications (the same sums, other float rounding).
# 1x1 convs commute with both resamplings and run at the low resolution (4x fewer). Weights,
# buffers and state_dict are untouched.


def _plain_conv(conv, size):
  """A (SN)Conv2d whose forward is the plain size x size 'same' convolution."""
  return (type(conv) in (nn.Conv2d, SNConv2d) and conv.kernel_size == (size, size)
          and conv.stride == (1, 1) and conv.padding == (size // 2, size // 2)
          and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == 'zeros')


def _four_taps(weight):
  """The 4x4 kernel of a folded resampling from a 3x3 one: along each axis the taps (w0, w1, w2)
  become (w0, w0 + w1, w1 + w2, w2). For 2x2 average pooling after the conv, these are the taps
  of conv2d(stride 2, padding 1) (then / 4); for nearest upsampling before it, applied to the
  flipped kernel with in/out swapped, those of conv_transpose2d(stride 2, padding 1). Two shifted
  zero-paddings added: contiguous whatever the input's strides, and their gradients are slices
  (narrow-and-cat filled a zero kernel per tap)."""
  for before, after in (((0, 0, 1, 0), (0, 0, 0, 1)), ((1, 0), (0, 1))):  # rows, then columns
    weight = F.pad(weight, after) + F.pad(weight, before)
  return weight


def _weight(conv):
  return conv.W_() if isinstance(conv, SN) else conv.weight


def upsample_conv(upsample, conv, x, fold=True):
  """conv(upsample(x)), folded (see above) for nearest x2 upsampling unless fold=False."""
  if upsample is None:
    return conv(x)
  if fold and upsample is upsample_nearest2x:
    if _plain_conv(conv, 3):
      weight = _four_taps(_weight(conv).transpose(0, 1).flip(2, 3))
      return F.conv_transpose2d(x, weight, conv.bias, stride=2, padding=1)
    if _plain_conv(conv, 1):
      return upsample(conv(x))
  return conv(upsample(x))


def _is_avg_pool2(pool):
  return (type(pool) is nn.AvgPool2d and pool.kernel_size in (2, (2, 2))
          and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0)) and not pool.ceil_mode
          and pool.divisor_override is None)


def conv_downsample(conv, downsample, x, fold=True):
  """downsample(conv(x)), folded (see above) for 2x2 average pooling unless fold=False."""
  if downsample is None:
    return conv(x)
  if fold and _is_avg_pool2(downsample):
    if _plain_conv(conv, 3):
      weight = _four_taps(_weight(conv)) * 0.25
      return F.conv2d(x, weight, conv.bias, stride=2, padding=1)
    if _plain_conv(conv, 1):
      return conv(downsample(x))
  return downsample(conv(x))


def which_layers(param, num_svs, num_itrs, eps):
  """(conv 3x3, linear, embedding) constructors: spectrally normalised for param 'SN', else
  plain."""
  if param == 'SN':
    sn = dict(num_svs=num_svs, num_itrs=num_itrs, eps=eps)
    return (functools.partial(SNConv2d, kernel_size=3, padding=1, **sn),
            functools.partial(SNLinear, **sn),
            functools.partial(SNEmbedding, **sn))
  return functools.partial(nn.Conv2d, kernel_size=3, padding=1), nn.Linear, nn.Embedding


INIT_STYLES = ('ortho', 'N02', 'glorot', 'xavier')


def init_weights(model, init):
  """Re-initialise the weight of every conv, linear and embedding (biases keep PyTorch's default),
  in module order as the original, so one seed gives the original's weights. Returns the number of
  parameters of those layers (the original printed it)."""
  if init not in INIT_STYLES:
    raise ValueError('unknown init %r; use one of %s' % (init, ', '.join(INIT_STYLES)))
  param_count = 0
  for module in model.modules():
    if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
      if init == 'ortho':
        nn.init.orthogonal_(module.weight)
      elif init == 'N02':
        nn.init.normal_(module.weight, 0, 0.02)
      else:
        nn.init.xavier_uniform_(module.weight)
      param_count += sum(p.numel() for p in module.parameters())
  return param_count
