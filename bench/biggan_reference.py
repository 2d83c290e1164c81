"""An independent, straightforward functional BigGAN and BigGAN-deep written from the equations in
../shared/reference/biggan-pytorch.md: the speed baseline of bench/bench_models.py and
bench/bench_attention.py and the oracle of tests/test_BigGAN.py and tests/test_BigGANdeep.py (it
lives here: bench/ imports nothing from tests/). It reads every weight from a state_dict and
records the buffers (u{i}, sv{i}, BN statistics) a train-mode pass would write in `new`.
"""
import torch
import torch.nn.functional as F


def up(t):
  """Nearest-neighbour x2 upsampling, written as pixel repetition."""
  return t.repeat_interleave(2, 2).repeat_interleave(2, 3)


def normalize(t, eps):
  return t / t.norm().clamp_min(eps)


def orthogonalise(t, others):
  """Gram-Schmidt, one vector at a time: remove from t its component along each of others."""
  for o in others:
    t = t - (t @ o.t()) / (o @ o.t()) * o
  return t


class Ref(object):
  """Functional BigGAN from a state_dict, following the equations in the reference notes.

  num_itrs power iterations per forward; every singular vector u{i} found in the state_dict is
  iterated (Gram-Schmidt against the earlier ones). In train mode each iteration starts from the
  previous one's u; in eval mode the buffers stay, so every iteration repeats the first."""

  def __init__(self, sd, train, sn_eps, bn_eps, chunk=0, num_itrs=1):
    self.sd = {k: v.clone() for k, v in sd.items()}
    self.train, self.sn_eps, self.bn_eps, self.chunk = train, sn_eps, bn_eps, chunk
    self.num_itrs = num_itrs
    self.new = {}  # buffers after the forward pass

  def w(self, name):
    """Spectrally normalised weight: W / sv0, the gradient flowing through sv0 only."""
    W = self.sd[name + '.weight']
    Wm = W.reshape(W.shape[0], -1)
    n_svs = 0
    while '%s.u%d' % (name, n_svs) in self.sd:
      n_svs += 1
    us = [self.sd['%s.u%d' % (name, i)] for i in range(n_svs)]
    for _ in range(self.num_itrs):
      new_us, new_vs, svs = [], [], []
      for i in range(n_svs):
        with torch.no_grad():
          v = normalize(orthogonalise(us[i] @ Wm, new_vs), self.sn_eps)
          u = normalize(orthogonalise(v @ Wm.t(), new_us), self.sn_eps)
        new_vs.append(v)
        new_us.append(u)
        svs.append((v @ Wm.t() @ u.t()).squeeze())
      if self.train:
        us = new_us
    if self.train:
      for i in range(n_svs):
        self.new['%s.u%d' % (name, i)] = us[i]
        self.new['%s.sv%d' % (name, i)] = svs[i].detach().reshape(1)
    return W / svs[0]

  def conv(self, name, x, pad=1):
    return F.conv2d(x, self.w(name), self.sd.get(name + '.bias'), padding=pad)

  def linear(self, name, x):
    return x @ self.w(name).t() + (self.sd[name + '.bias'] if name + '.bias' in self.sd else 0)

  def norm(self, name, x):
    """Batch norm of x. Plain BN (F.batch_norm's rule) keeps name.stored_*, updated with the
    unbiased variance; --mybn keeps name.bn.stored_*, updated with the biased one (its
    E[x^2] - E[x]^2). Both normalise with the biased variance, momentum 0.1."""
    mybn = name + '.bn.stored_mean' in self.sd
    stats = name + ('.bn' if mybn else '')
    if self.train:
      mean = x.mean([0, 2, 3])
      var = x.var([0, 2, 3], unbiased=False)
      n = x.numel() / x.shape[1]
      self.new[stats + '.stored_mean'] = 0.9 * self.sd[stats + '.stored_mean'] + 0.1 * mean
      self.new[stats + '.stored_var'] = (0.9 * self.sd[stats + '.stored_var']
                                         + 0.1 * var * (1 if mybn else n / (n - 1)))
    else:
      mean, var = self.sd[stats + '.stored_mean'], self.sd[stats + '.stored_var']
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

  def output(self, h):
    """bn (learned gain and bias) -> relu -> 3x3 conv -> tanh."""
    gain, bias = self.sd['output_layer.0.gain'], self.sd['output_layer.0.bias']
    h = self.norm('output_layer.0', h) * gain.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    return torch.tanh(self.conv('output_layer.2', F.relu(h)))

  def G(self, z, y, n_blocks, attn_block):
    e = self.sd['shared.weight'][y] if 'shared.weight' in self.sd else y
    zs = torch.split(z, self.chunk, 1) if self.chunk else [z] * (n_blocks + 1)
    h = self.linear('linear', zs[0]).reshape(z.shape[0], -1, 4, 4)
    for i in range(n_blocks):
      b = 'blocks.%d.0.' % i
      yi = torch.cat([e, zs[i + 1]], 1) if self.chunk else e
      x = self.conv(b + 'conv_sc', up(h), 0)
      h = self.conv(b + 'conv1', up(F.relu(self.ccbn(b + 'bn1', h, yi))))
      h = self.conv(b + 'conv2', F.relu(self.ccbn(b + 'bn2', h, yi))) + x
      if i == attn_block:
        h = self.attention('blocks.%d.1' % i, h)
    return self.output(h)

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
    return self.project(h, y)

  def project(self, h, y):
    """relu, sum over H, W, linear + projection onto the class embedding."""
    h = F.relu(h).sum([2, 3])
    embed = self.w('embed')[y]
    return self.linear('linear', h) + (embed * h).sum(1, keepdim=True)

  # --- BigGAN-deep ------------------------------------------------------------------------------

  def G_deep(self, z, y, n_stages, depth, attn_stages, hier=True):
    """Stage s has `depth` bottleneck blocks blocks.{s*depth+d}.0; the last one upsamples (x and
    h) and its output has conv4's channels, the shortcut keeping the first of x's channels.
    With hier every block and the linear layer see [shared(y), z], else linear z and blocks
    shared(y)."""
    e = self.sd['shared.weight'][y]
    if hier:
      z = torch.cat([e, z], 1)
      e = z
    h = self.linear('linear', z).reshape(z.shape[0], -1, 4, 4)
    for s in range(n_stages):
      for d in range(depth):
        k = s * depth + d
        b = 'blocks.%d.0.' % k
        out_channels = self.sd[b + 'conv4.weight'].shape[0]
        r = self.conv(b + 'conv1', F.relu(self.ccbn(b + 'bn1', h, e)), 0)  # 1x1 down to in/4
        r = F.relu(self.ccbn(b + 'bn2', r, e))
        x = h[:, :out_channels]  # channel drop
        if d == depth - 1:
          r, x = up(r), up(x)
        r = self.conv(b + 'conv2', r)
        r = self.conv(b + 'conv3', F.relu(self.ccbn(b + 'bn3', r, e)))
        r = self.conv(b + 'conv4', F.relu(self.ccbn(b + 'bn4', r, e)), 0)
        h = r + x
      if s in attn_stages:
        h = self.attention('blocks.%d.1' % (s * depth + depth - 1), h)
    return self.output(h)

  def D_deep(self, x, y, downsample, depth, attn_stages):
    """input_conv, then stage s: `depth` blocks blocks.{s}.{d} (the first downsamples when the
    stage does), attention as blocks.{s}.{depth}. Block: relu-1x1-relu-3x3-relu-3x3-relu-(pool)-
    1x1; shortcut (pool), then cat([x, conv_sc(x)]) where conv_sc exists (in != out)."""
    h = self.conv('input_conv', x)
    for s, down in enumerate(downsample):
      for d in range(depth):
        b = 'blocks.%d.%d.' % (s, d)
        pool = down and d == 0
        r = self.conv(b + 'conv1', F.relu(h), 0)
        r = self.conv(b + 'conv2', F.relu(r))
        r = F.relu(self.conv(b + 'conv3', F.relu(r)))
        r = self.conv(b + 'conv4', F.avg_pool2d(r, 2) if pool else r, 0)
        sc = F.avg_pool2d(h, 2) if pool else h
        if b + 'conv_sc.weight' in self.sd:
          sc = torch.cat([sc, self.conv(b + 'conv_sc', sc, 0)], 1)
        h = r + sc
      if s in attn_stages:
        h = self.attention('blocks.%d.%d' % (s, depth), h)
    return self.project(h, y)
