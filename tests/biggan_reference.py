"""An independent, straightforward functional BigGAN written from the equations in
../shared/reference/biggan-pytorch.md: the oracle of tests/test_models.py and the speed baseline of
bench/bench_models.py. It reads every weight from a state_dict and records the buffers
(u0, sv0, BN statistics) a train-mode pass would write in `new`.
"""
import torch
import torch.nn.functional as F


class Ref(object):
  """Functional BigGAN from a state_dict, following the equations in the reference notes."""

  def __init__(self, sd, train, sn_eps, bn_eps, chunk=0):
    self.sd = {k: v.clone() for k, v in sd.items()}
    self.train, self.sn_eps, self.bn_eps, self.chunk = train, sn_eps, bn_eps, chunk
    self.new = {}  # buffers after the forward pass

  def w(self, name):
    """Spectrally normalised weight: one power iteration from u0 (no gradient through u, v)."""
    W = self.sd[name + '.weight']
    Wm = W.reshape(W.shape[0], -1)
    with torch.no_grad():
      u = self.sd[name + '.u0']
      v = u @ Wm
      v = v / v.norm().clamp_min(self.sn_eps)
      u = v @ Wm.t()
      u = u / u.norm().clamp_min(self.sn_eps)
    sv = (v @ Wm.t() @ u.t()).squeeze()
    if self.train:
      self.new[name + '.u0'] = u
      self.new[name + '.sv0'] = sv.detach().reshape(1)
    return W / sv

  def conv(self, name, x, pad=1):
    return F.conv2d(x, self.w(name), self.sd.get(name + '.bias'), padding=pad)

  def linear(self, name, x):
    return x @ self.w(name).t() + (self.sd[name + '.bias'] if name + '.bias' in self.sd else 0)

  def norm(self, name, x):
    if self.train:
      mean = x.mean([0, 2, 3])
      var = x.var([0, 2, 3], unbiased=False)
      n = x.numel() / x.shape[1]
      self.new[name + '.stored_mean'] = 0.9 * self.sd[name + '.stored_mean'] + 0.1 * mean
      self.new[name + '.stored_var'] = (0.9 * self.sd[name + '.stored_var']
                                        + 0.1 * var * n / (n - 1))
    else:
      mean, var = self.sd[name + '.stored_mean'], self.sd[name + '.stored_var']
    return (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + self.bn_eps)

  def ccbn(self, name, x, y):
    if name + '.gain.u0' in self.sd:  # --G_shared: SN linear projections of the embedding
      gain = 1 + self.linear(name + '.gain', y)
      bias = self.linear(name + '.bias', y)
    else:  # class embeddings looked up by label
      gain = 1 + self.sd[name + '.gain.weight'][y]
      bias = self.sd[name + '.bias.weight'][y]
    return self.norm(name, x) * gain[:, :, None, None] + bias[:, :, None, None]

  def attention(self, name, x):
    B, C, H, W = x.shape
    theta = self.conv(name + '.theta', x, 0).reshape(B, C // 8, H * W)
    phi = F.max_pool2d(self.conv(name + '.phi', x, 0), 2).reshape(B, C // 8, H * W // 4)
    g = F.max_pool2d(self.conv(name + '.g', x, 0), 2).reshape(B, C // 2, H * W // 4)
    beta = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)   # (B, HW, HW/4)
    o = self.conv(name + '.o', (g @ beta.transpose(1, 2)).reshape(B, C // 2, H, W), 0)
    return self.sd[name + '.gamma'] * o + x

  def G(self, z, y, n_blocks, attn_block):
    e = self.sd['shared.weight'][y] if 'shared.weight' in self.sd else y
    zs = torch.split(z, self.chunk, 1) if self.chunk else [z] * (n_blocks + 1)
    h = self.linear('linear', zs[0]).reshape(z.shape[0], -1, 4, 4)
    for i in range(n_blocks):
      b = 'blocks.%d.0.' % i
      yi = torch.cat([e, zs[i + 1]], 1) if self.chunk else e
      up = lambda t: t.repeat_interleave(2, 2).repeat_interleave(2, 3)  # noqa: E731
      x = self.conv(b + 'conv_sc', up(h), 0)
      h = self.conv(b + 'conv1', up(F.relu(self.ccbn(b + 'bn1', h, yi))))
      h = self.conv(b + 'conv2', F.relu(self.ccbn(b + 'bn2', h, yi))) + x
      if i == attn_block:
        h = self.attention('blocks.%d.1' % i, h)
    gain, bias = self.sd['output_layer.0.gain'], self.sd['output_layer.0.bias']
    h = self.norm('output_layer.0', h) * gain.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    return torch.tanh(self.conv('output_layer.2', F.relu(h)))

  def D(self, x, y, downsample, attn_blocks):
    h = x
    for i, down in enumerate(downsample):
      b = 'blocks.%d.0.' % i
      r = F.relu(h) if i > 0 else h
      r = self.conv(b + 'conv2', F.relu(self.conv(b + 'conv1', r)))
      sc = h
      if i > 0:  # preactivation: conv_sc then pool
        sc = self.conv(b + 'conv_sc', sc, 0) if b + 'conv_sc.weight' in self.sd else sc
        sc = F.avg_pool2d(sc, 2) if down else sc
      else:
        sc = F.avg_pool2d(sc, 2) if down else sc
        sc = self.conv(b + 'conv_sc', sc, 0)
      h = (F.avg_pool2d(r, 2) if down else r) + sc
      if i in attn_blocks:
        h = self.attention('blocks.%d.1' % i, h)
    h = F.relu(h).sum([2, 3])
    embed = self.w('embed')[y]
    return self.linear('linear', h) + (embed * h).sum(1, keepdim=True)
