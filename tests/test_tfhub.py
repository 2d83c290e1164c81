"""TFHub/converter.py without TensorFlow: synthetic dumps with TF-Hub's variable names and shapes
(random values), converted, then checked against a numpy generator that computes in TF's layout
(NHWC, (in, out) weights, [z, y] conditioning) straight from the dumped arrays."""
import os
import sys
import types

import h5py
import numpy as np
import pytest
import torch

import BigGANdeep
import checkpoints
import config as configuration
import errors
import models
from TFHub import converter

EMA = {'biggan': 'ema_b999900', 'biggan-deep': 'ema_0.9999'}
TRAINABLE = ('w', 'b', 'gamma', 'beta', 'scale', 'offset')
# Channel multiples of the G stages (TF-Hub's tables), and where the attention sits.
STAGES = {128: ([16, 16, 8, 4, 2], [16, 8, 4, 2, 1]),
          256: ([16, 16, 8, 8, 4, 2], [16, 8, 8, 4, 2, 1]),
          512: ([16, 16, 8, 8, 4, 2, 1], [16, 8, 8, 4, 2, 1, 1])}
ATTENTION_BEFORE = {('biggan', 128): 4, ('biggan', 256): 5, ('biggan', 512): 4,
                    ('biggan-deep', 128): 8, ('biggan-deep', 256): 8, ('biggan-deep', 512): 8}
STATS = 51  # truncations with BN statistics in biggan-deep


# ---------------------------------------------------------------------------------------------
# Synthetic dumps in TF-Hub's layout
# ---------------------------------------------------------------------------------------------


def gblocks(kind, res, ch):
  """(in, out, upsample) of every TF GBlock."""
  ins, outs = STAGES[res]
  if kind == 'biggan':
    return [(ch * i, ch * o, True) for i, o in zip(ins, outs)]
  return [b for i, o in zip(ins, outs) for b in [(ch * i, ch * i, False), (ch * i, ch * o, True)]]


def tf_spec(kind, res, ch, z, S, n_classes=1000):
  """{TF name: shape} of a generator: z is biggan's z chunk or biggan-deep's dim_z."""
  deep = kind == 'biggan-deep'
  cond = z + S
  spec = {'linear/w': (n_classes, S)}

  def sn(scope, shape, bias=True):
    spec[scope + '/w'] = shape
    spec[scope + '/u0'] = (1, shape[-1])
    spec[scope + '/u1'] = (1, int(np.prod(shape[:-1])))  # dumped, not needed
    if bias:
      spec[scope + '/b'] = (shape[-1],)

  sn('Generator/%s/G_linear' % ('GenZ' if deep else 'G_Z'), (cond if deep else z, 16 * 16 * ch))
  blocks = gblocks(kind, res, ch)
  for i, (cin, cout, _) in enumerate(blocks):
    scope = block_scope(i)
    if deep:
      h = cin // 4
      for k, shape in enumerate([(1, 1, cin, h), (3, 3, h, h), (3, 3, h, h), (1, 1, h, cout)]):
        sn('%s/conv%d' % (scope, k), shape)
      for k, c in enumerate([cin, h, h, h]):
        bn = scope + '/BatchNorm' + ('_%d' % k if k else '')
        sn(bn + '/scale', (cond, c), bias=False)
        sn(bn + '/offset', (cond, c), bias=False)
        spec[bn + '/accumulated_mean'] = spec[bn + '/accumulated_var'] = (c,)
    else:
      sn(scope + '/conv0', (3, 3, cin, cout))
      sn(scope + '/conv1', (3, 3, cout, cout))
      sn(scope + '/conv_sc', (1, 1, cin, cout))
      for k, c in enumerate([cin, cout]):
        sfx = '_%d' % k if k else ''
        sn('%s/HyperBN%s/gamma' % (scope, sfx), (cond, c), bias=False)
        sn('%s/HyperBN%s/beta' % (scope, sfx), (cond, c), bias=False)
        for stat in ['accumulated_mean', 'accumulated_var']:
          spec['%s/CrossReplicaBN%s/%s' % (scope, sfx, stat)] = (c,)
        spec['%s/CrossReplicaBN%s/accumulation_counter' % (scope, sfx)] = ()
  a = blocks[ATTENTION_BEFORE[kind, res] - 1][1]
  for name, shape in [('theta', (a, a // 8)), ('phi', (a, a // 8)), ('g', (a, a // 2)),
                      ('o_conv', (a // 2, a))]:
    sn('Generator/attention/' + name, (1, 1) + shape, bias=False)
  spec['Generator/attention/gamma'] = ()
  out_bn = 'Generator/BatchNorm' if deep else 'Generator/ScaledCrossReplicaBN'
  for name in (['scale', 'offset'] if deep else ['gamma', 'beta']):
    spec['%s/%s' % (out_bn, name)] = (ch,) if deep else (1, 1, 1, ch)
  for stat in ['accumulated_mean', 'accumulated_var']:
    spec['%s/%s' % (out_bn if deep else out_bn + 'bn', stat)] = (ch,)
  sn('Generator/conv_to_rgb' if deep else 'Generator/conv_2d', (3, 3, ch, ch if deep else 3))
  return spec


def random_values(spec, rng):
  values = {}
  for name, shape in spec.items():
    if name.endswith('_var'):
      values[name] = rng.uniform(0.5, 1.5, shape)
    elif name.endswith('counter'):
      values[name] = np.array(7.0)
    elif name.endswith('/gamma') and not shape:  # attention gamma (0 in a fresh G)
      values[name] = np.array(0.7)
    elif name.endswith(('ScaledCrossReplicaBN/gamma', 'BatchNorm/scale')):
      values[name] = rng.uniform(0.5, 1.5, shape)
    else:
      values[name] = rng.normal(0, 0.3 if name.endswith('/w') else 0.1, shape)
  return {k: np.asarray(v, np.float32) for k, v in values.items()}


def block_scope(i):
  return 'Generator/GBlock' + ('_%d' % i if i else '')


def deep_bn_scopes(n_blocks):
  """biggan-deep's BNs in the order of its statistics stacks: 4 per GBlock, then the output BN."""
  return ['%s/BatchNorm%s' % (block_scope(i), '_%d' % k if k else '')
          for i in range(n_blocks) for k in range(4)] + ['Generator/BatchNorm']


def stat_stacks(spec, rng, n_blocks):
  """biggan-deep's statistics per truncation: {BN scope: (means, vars)}, each (51, C)."""
  stacks = {}
  for bn in deep_bn_scopes(n_blocks):
    c = spec[bn + '/accumulated_mean'][0]
    stacks[bn] = (rng.normal(0, 0.1, (STATS, c)).astype(np.float32),
                  rng.uniform(0.5, 1.5, (STATS, c)).astype(np.float32))
  return stacks


def write_dump(path, kind, res=128, ch=4, z=None, S=8, seed=0, stacks=True, drop=()):
  """Write a dump as stage 1 does (module/<name>:0, raw and EMA copies); return the EMA arrays,
  the raw arrays and the stacks by clean name."""
  z = z or (4 if kind == 'biggan' else 6)
  rng = np.random.RandomState(seed)
  spec = tf_spec(kind, res, ch, z, S)
  ema, raw = random_values(spec, rng), random_values(spec, rng)
  n_blocks = len(gblocks(kind, res, ch))
  bn_stacks = stat_stacks(spec, rng, n_blocks) if kind == 'biggan-deep' and stacks else {}
  with h5py.File(path, 'w') as h5:
    for name in spec:
      if name in drop:
        continue
      h5['module/%s:0' % name] = raw[name]
      if name.rsplit('/', 1)[-1] in TRAINABLE:
        h5['module/%s/%s:0' % (name, EMA[kind])] = ema[name]
    for k, (mean, var) in enumerate(bn_stacks.values()):
      base = (k // 2) * 10 + (1, 6)[k % 2]
      h5['module_apply_default/stack_%d:0' % base] = mean
      h5['module_apply_default/stack_%d:0' % (base + 2)] = var
  return {n: (ema[n] if n.rsplit('/', 1)[-1] in TRAINABLE else raw[n]) for n in spec}, raw, \
      bn_stacks


# ---------------------------------------------------------------------------------------------
# The generator in TF's layout, in numpy (float64)
# ---------------------------------------------------------------------------------------------


def sigma(W, u):
  """Spectral norm's estimate, TF style: W (in, out), u (1, out), one power iteration."""
  v = u @ W.T
  v = v / np.linalg.norm(v)
  u2 = v @ W
  u2 = u2 / np.linalg.norm(u2)
  return float((v @ W @ u2.T).item())


class TFGenerator(object):
  def __init__(self, values, kind, res, truncation=None, stacks=None):
    self.v, self.kind, self.res = values, kind, res
    self.truncation, self.stacks = truncation, stacks

  def w(self, scope):
    w = self.v[scope + '/w'].astype(np.float64)
    return w / sigma(w.reshape(-1, w.shape[-1]), self.v[scope + '/u0'].astype(np.float64))

  def dense(self, scope, x, bias=True):
    return x @ self.w(scope) + (self.v[scope + '/b'] if bias else 0)

  def conv(self, scope, x, bias=True):
    w = self.w(scope)
    k = w.shape[0]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    H, W = x.shape[1:3]
    out = sum(xp[:, dy:dy + H, dx:dx + W] @ w[dy, dx] for dy in range(k) for dx in range(k))
    return out + (self.v[scope + '/b'] if bias else 0)

  def stats(self, scope, stats_scope):
    if self.stacks:
      grid = np.linspace(0, 1, STATS)
      mean, var = self.stacks[scope]
      return [np.array([np.interp(self.truncation, grid, t[:, c]) for c in range(t.shape[1])])
              for t in (mean, var)]
    return self.v[stats_scope + '/accumulated_mean'], self.v[stats_scope + '/accumulated_var']

  def bn(self, x, mean, var, gain, bias):
    if gain.ndim == 2:
      gain, bias = gain[:, None, None, :], bias[:, None, None, :]
    return (x - mean) / np.sqrt(var + 1e-4) * gain + bias

  def hyper_bn(self, x, cond, scope, gain, bias, stats_scope):
    mean, var = self.stats(scope, stats_scope)
    return self.bn(x, mean, var, 1 + self.dense(scope + '/' + gain, cond, False),
                   self.dense(scope + '/' + bias, cond, False))

  def attention(self, x):
    B, H, W, C = x.shape
    a = 'Generator/attention/'

    def pool(t):
      return t.reshape(B, H // 2, 2, W // 2, 2, -1).max((2, 4)).reshape(B, H * W // 4, -1)
    theta = self.conv(a + 'theta', x, False).reshape(B, H * W, -1)
    phi = pool(self.conv(a + 'phi', x, False))
    g = pool(self.conv(a + 'g', x, False))
    logits = theta @ phi.transpose(0, 2, 1)
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    o = self.conv(a + 'o_conv', (attn @ g).reshape(B, H, W, -1), False)
    return x + self.v[a + 'gamma'] * o

  def __call__(self, z, y):
    """z: (B, dim_z), y: class indices -> images (B, 3, H, W) as NCHW for comparison."""

    def relu(t):
      return np.maximum(t, 0)

    def up(t):
      return t.repeat(2, 1).repeat(2, 2)
    emb = self.v['linear/w'][y].astype(np.float64)
    z = z.astype(np.float64)
    deep = self.kind == 'biggan-deep'
    n = len(STAGES[self.res][0]) * (2 if deep else 1)
    if deep:
      cond = np.concatenate([z, emb], 1)
      h = self.dense('Generator/GenZ/G_linear', cond)
    else:
      codes = np.split(z, n + 1, 1)
      h = self.dense('Generator/G_Z/G_linear', codes[0])
    h = h.reshape(len(z), 4, 4, -1)
    for i in range(n):
      if i == ATTENTION_BEFORE[self.kind, self.res]:
        h = self.attention(h)
      s = block_scope(i)
      if deep:
        x0 = h
        bns = [s + '/BatchNorm' + ('_%d' % k if k else '') for k in range(4)]
        h = self.conv(s + '/conv0', relu(self.hyper_bn(h, cond, bns[0], 'scale', 'offset', bns[0])))
        h = relu(self.hyper_bn(h, cond, bns[1], 'scale', 'offset', bns[1]))
        upsample = i % 2 == 1
        h = self.conv(s + '/conv1', up(h) if upsample else h)
        h = self.conv(s + '/conv2', relu(self.hyper_bn(h, cond, bns[2], 'scale', 'offset', bns[2])))
        h = self.conv(s + '/conv3', relu(self.hyper_bn(h, cond, bns[3], 'scale', 'offset', bns[3])))
        x0 = x0[..., :h.shape[-1]]
        h = h + (up(x0) if upsample else x0)
      else:
        cond = np.concatenate([codes[i + 1], emb], 1)
        x0 = h
        h = relu(self.hyper_bn(h, cond, s + '/HyperBN', 'gamma', 'beta', s + '/CrossReplicaBN'))
        h = self.conv(s + '/conv0', up(h))
        h = relu(self.hyper_bn(h, cond, s + '/HyperBN_1', 'gamma', 'beta', s + '/CrossReplicaBN_1'))
        h = self.conv(s + '/conv1', h) + self.conv(s + '/conv_sc', up(x0))
    if deep:
      mean, var = self.stats('Generator/BatchNorm', 'Generator/BatchNorm')
      h = self.bn(h, mean, var, self.v['Generator/BatchNorm/scale'],
                  self.v['Generator/BatchNorm/offset'])
      h = self.conv('Generator/conv_to_rgb', relu(h))[..., :3]
    else:
      o = 'Generator/ScaledCrossReplicaBN'
      h = self.bn(h, self.v[o + 'bn/accumulated_mean'], self.v[o + 'bn/accumulated_var'],
                  self.v[o + '/gamma'].reshape(-1), self.v[o + '/beta'].reshape(-1))
      h = self.conv('Generator/conv_2d', relu(h))
    return np.tanh(h).transpose(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def forward(G, z, y):
  with torch.no_grad():
    return G(torch.from_numpy(z).float(), G.shared(torch.from_numpy(y))).double().numpy()


def inputs(G, batch=2, seed=1):
  rng = np.random.RandomState(seed)
  return rng.normal(0, 1, (batch, G.dim_z)).astype(np.float32), rng.randint(0, 1000, batch)


def test_biggan_layers_land_where_tf_has_them(tmp_path):
  path = str(tmp_path / 'biggan-128.h5')
  tf, _, _ = write_dump(path, 'biggan', ch=4, z=4, S=8)
  G, config = converter.convert(path)
  ref = TFGenerator(tf, 'biggan', 128)
  z, y = inputs(G)
  chunks = np.split(z.astype(np.float64), 6, 1)
  emb = tf['linear/w'][y].astype(np.float64)
  with torch.no_grad():
    # The first linear layer, including TF's NHWC reshape of its output.
    h = G.linear(torch.from_numpy(chunks[0]).float()).view(2, -1, 4, 4)
    expected = ref.dense('Generator/G_Z/G_linear', chunks[0]).reshape(2, 4, 4, -1)
    np.testing.assert_allclose(h.numpy(), expected.transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-5)
    # A conditional BN: TF projects [z_chunk, y], this project [y, z_chunk].
    x = np.random.RandomState(2).normal(0, 1, (2, 4, 4, 64))
    bn = G.blocks[1][0].bn1
    out = bn(torch.from_numpy(x.transpose(0, 3, 1, 2)).float(),
             torch.from_numpy(np.concatenate([emb, chunks[2]], 1)).float())
    expected = ref.hyper_bn(x, np.concatenate([chunks[2], emb], 1), 'Generator/GBlock_1/HyperBN',
                            'gamma', 'beta', 'Generator/GBlock_1/CrossReplicaBN')
    np.testing.assert_allclose(out.numpy(), expected.transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-4)
    # A spectrally normalised 3x3 conv.
    out = G.blocks[0][0].conv1(torch.from_numpy(x.transpose(0, 3, 1, 2)).float())
    expected = ref.conv('Generator/GBlock/conv0', x)
    np.testing.assert_allclose(out.numpy(), expected.transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-4)
  # The whole generator.
  np.testing.assert_allclose(forward(G, z, y), ref(z, y), atol=2e-4)
  assert (config['model'], config['G_ch'], config['dim_z'], config['shared_dim']) == \
      ('BigGAN', 4, 24, 8)
  assert config['hier'] and config['G_shared'] and config['G_attn'] == '64'
  assert (config['BN_eps'], config['SN_eps'], config['dataset']) == (1e-4, 1e-4, 'I128')


def test_no_ema_converts_the_raw_weights(tmp_path):
  path = str(tmp_path / 'dump.h5')
  tf, raw, _ = write_dump(path, 'biggan', ch=4)
  G, config = converter.convert(path, ema=False)
  assert config['experiment_name'] == 'biggan-128_noema'
  np.testing.assert_array_equal(G.shared.weight.detach().numpy(), raw['linear/w'])
  np.testing.assert_array_equal(G.blocks[0][0].conv1.bias.detach().numpy(),
                                raw['Generator/GBlock/conv0/b'])
  z, y = inputs(G)
  np.testing.assert_allclose(forward(G, z, y), TFGenerator(
      dict(tf, **{k: raw[k] for k in raw if k.rsplit('/', 1)[-1] in TRAINABLE}), 'biggan', 128)(
      z, y), atol=2e-4)


def test_biggan_deep_matches_tf_at_each_truncation(tmp_path):
  path = str(tmp_path / 'biggan-deep-128.h5')
  tf, _, stacks = write_dump(path, 'biggan-deep', ch=4, z=6, S=8)
  G, config = converter.convert(path, truncation=0.37)
  assert (config['model'], config['G_tfhub'], config['G_depth'], config['dim_z']) == \
      ('BigGANdeep', True, 2, 6)
  assert config['hier'] and config['G_attn'] == '64' and config['dataset'] == 'I128'
  # TF-Hub's output conv has G_ch channels: all are kept (spectral norm sees them all).
  assert G.output_layer[2].weight.shape == (4, 4, 3, 3)
  z, y = inputs(G)
  emb = tf['linear/w'][y].astype(np.float64)
  with torch.no_grad():  # first linear: TF's input is [z, y], its output NHWC
    h = G.linear(torch.from_numpy(np.concatenate([emb, z], 1)).float()).view(2, -1, 4, 4)
  expected = TFGenerator(tf, 'biggan-deep', 128).dense(
      'Generator/GenZ/G_linear', np.concatenate([z, emb], 1)).reshape(2, 4, 4, -1)
  np.testing.assert_allclose(h.numpy(), expected.transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-5)
  for t in [0.37, 0.4, 0.02]:
    if t != 0.37:
      assert G.set_truncation(t)
    out = forward(G, z, y)
    assert out.shape == (2, 3, 128, 128)
    np.testing.assert_allclose(out, TFGenerator(tf, 'biggan-deep', 128, t, stacks)(z, y),
                               atol=2e-4)
  # 0.4 * 50 is not exactly 20 in floating point: still exactly the stored row 20.
  G.set_truncation(0.4)
  np.testing.assert_array_equal(G.blocks[3][0].bn2.stored_mean.numpy(),
                                stacks['Generator/GBlock_3/BatchNorm_1'][0][20])


def test_truncation_rows_interpolate_linearly():
  grid = np.linspace(0, 1, STATS)
  table = np.random.RandomState(0).normal(0, 1, STATS)
  for t in list(np.linspace(0, 1, 137)) + [0.4, 0.02 * 7, 1.0, 0.0, 0.5 + 1e-9]:
    lo, hi, w = BigGANdeep.truncation_rows(t)
    assert 0 <= lo <= hi <= STATS - 1 and hi - lo <= 1 and 0 <= w < 1
    assert (1 - w) * table[lo] + w * table[hi] == pytest.approx(np.interp(t, grid, table),
                                                                abs=1e-9)
  assert BigGANdeep.truncation_rows(0.4) == (20, 21, 0.0)
  for bad in [-0.1, 1.01]:
    with pytest.raises(ValueError, match='truncation'):
      BigGANdeep.truncation_rows(bad)


def test_tfhub_variant_keeps_default_deep_unchanged():
  from conftest import make_config
  flags = ('--model BigGANdeep --G_shared --hier --G_ch 4 --G_depth 2 --dim_z 6 --shared_dim 8 '
           '--G_attn 64')
  plain = BigGANdeep.Generator(**make_config(flags, 128, 1000))
  tfhub = BigGANdeep.Generator(**make_config(flags + ' --G_tfhub', 128, 1000))
  extra = set(tfhub.state_dict()) - set(plain.state_dict())
  assert set(plain.state_dict()) <= set(tfhub.state_dict())
  assert extra and all(k.endswith(('truncation_mean', 'truncation_var')) for k in extra)
  assert len(extra) == 2 * len(tfhub.truncation_bns()) == 2 * (4 * 10 + 1)
  assert not plain.set_truncation(0.5)
  assert plain.output_layer[2].weight.shape[0] == 3 and tfhub.output_layer[2].weight.shape[0] == 4
  z = torch.randn(2, 6)
  y = plain.shared(torch.tensor([1, 2]))
  with torch.no_grad():
    assert plain(z, y).shape == tfhub(z, tfhub.shared(torch.tensor([1, 2]))).shape == \
        (2, 3, 128, 128)


def test_weights_folder_loads_as_sample_py_would(tmp_path):
  """main() writes weights/<exp>/{G.pth, state_dict.pth}; a G rebuilt from the stored config
  (through prepare_config, as sample.py) loads G.pth with load_weights and draws the same."""
  path = str(tmp_path / 'dump.h5')
  tf, _, _ = write_dump(path, 'biggan-deep', ch=4)
  root = str(tmp_path / 'weights')
  errors.run_main(converter.main, ['--hdf5', path, '--weights_root', root, '--truncation', '0.5'])
  G0, _ = converter.convert(path, truncation=0.5)
  state = checkpoints.safe_load(os.path.join(root, 'biggan-deep-128', 'state_dict.pth'))
  config = state['config']
  assert state['tfhub_module'] == 'biggan-deep-128' and config == checkpoints.plain_config(config)
  assert config['G_eval_mode'] and not config['use_ema']
  config = configuration.prepare_config(dict(config))
  assert (config['resolution'], config['n_classes']) == (128, 1000)
  G = models.load_model_module(config['model']).Generator(**dict(config, skip_init=True))
  loaded = {'itr': None, 'config': None}
  checkpoints.load_weights(G, None, loaded, root, config['experiment_name'], load_optim=False)
  assert loaded['itr'] == 0
  z, y = inputs(G)
  np.testing.assert_array_equal(forward(G.eval(), z, y), forward(G0, z, y))
  # The sv buffers hold what spectral norm computes from the dumped w and u0.
  w = tf['Generator/GenZ/G_linear/w'].astype(np.float64)
  assert float(G.linear.sv0) == pytest.approx(sigma(w, tf['Generator/GenZ/G_linear/u0']),
                                              rel=1e-5)
  # Converting again replaces the conversion; a training run's folder is never overwritten.
  errors.run_main(converter.main, ['--hdf5', path, '--weights_root', root])
  train_dir = tmp_path / 'weights' / 'mine'
  train_dir.mkdir()
  torch.save({}, str(train_dir / 'G.pth'))
  torch.save({'itr': 5, 'config': {}}, str(train_dir / 'state_dict.pth'))
  with pytest.raises(errors.UserError, match='not a TF-Hub conversion'):
    converter.main(['--hdf5', path, '--weights_root', root, '--experiment_name', 'mine'])
  assert torch.load(str(train_dir / 'G.pth')) == {}


@pytest.mark.parametrize('kind,res,blocks,dim_z,attn', [
    ('biggan', 256, 6, 28, '128'), ('biggan', 512, 7, 32, '64'),
    ('biggan-deep', 256, 12, 6, '64'), ('biggan-deep', 512, 14, 6, '64')])
def test_every_tfhub_resolution_converts(tmp_path, kind, res, blocks, dim_z, attn):
  path = str(tmp_path / 'dump.h5')
  tf, _, _ = write_dump(path, kind, res=res, ch=2 if kind == 'biggan' and res == 512 else 4)
  G, config = converter.convert(path)
  assert (config['resolution'], config['dim_z'], config['G_attn']) == (res, dim_z, attn)
  assert len(G.blocks) == blocks and sum(len(b) > 1 for b in G.blocks) == 1
  assert config['experiment_name'] == '%s-%d' % (kind, res)
  np.testing.assert_array_equal(G.output_layer[2].bias.detach().numpy(), tf[
      'Generator/conv_to_rgb/b' if kind == 'biggan-deep' else 'Generator/conv_2d/b'])


def test_deep_dump_without_statistics_stacks_uses_accumulated_ones(tmp_path, capsys):
  path = str(tmp_path / 'dump.h5')
  tf, _, _ = write_dump(path, 'biggan-deep', ch=4, stacks=False)
  G, _ = converter.convert(path)
  assert 'no statistics per truncation' in capsys.readouterr().out
  bn = G.blocks[2][0].bn3
  G.set_truncation(0.3)
  np.testing.assert_array_equal(bn.stored_var.numpy(),
                                tf['Generator/GBlock_2/BatchNorm_2/accumulated_var'])
  z, y = inputs(G)
  np.testing.assert_allclose(forward(G, z, y), TFGenerator(tf, 'biggan-deep', 128)(z, y),
                             atol=2e-4)


def test_bad_dumps_and_flags_are_user_errors(tmp_path, capsys):
  missing = str(tmp_path / 'nothing.h5')
  with pytest.raises(errors.UserError, match='does not exist'):
    converter.main(['--hdf5', missing])
  not_h5 = tmp_path / 'text.h5'
  not_h5.write_text('hello')
  with pytest.raises(errors.UserError, match='not an HDF5 file'):
    converter.convert(str(not_h5))
  cut = str(tmp_path / 'cut.h5')
  write_dump(cut, 'biggan', ch=4, drop=('Generator/GBlock_2/conv_sc/u0',))
  with pytest.raises(errors.UserError, match='GBlock_2/conv_sc/u0'):
    converter.convert(cut)
  stacks = str(tmp_path / 'stacks.h5')
  write_dump(stacks, 'biggan-deep', ch=4)
  with h5py.File(stacks, 'a') as h5:
    del h5['module_apply_default/stack_3:0']
  with pytest.raises(errors.UserError, match='statistics stacks'):
    converter.convert(stacks)
  with pytest.raises(errors.UserError, match='truncation'):
    converter.convert(stacks, truncation=1.5)
  raw_only = str(tmp_path / 'raw.h5')
  with h5py.File(raw_only, 'w') as h5:
    h5['module/linear/w:0'] = np.zeros((3, 2), np.float32)
  with pytest.raises(errors.UserError, match='--no_ema'):
    converter.convert(raw_only)
  with pytest.raises(errors.UserError, match='neither a biggan nor a biggan-deep'):
    converter.convert(raw_only, ema=False)
  # Through the script: one line, exit status 2, nothing written.
  with pytest.raises(SystemExit) as e:
    errors.run_main(converter.main, ['--hdf5', cut, '--weights_root', str(tmp_path / 'w')])
  assert e.value.code == 2 and capsys.readouterr().err.count('\n') == 1
  assert not (tmp_path / 'w').exists()


# ---------------------------------------------------------------------------------------------
# Stage 1 with a stand-in for tensorflow / tensorflow_hub (tests/test_tfhub_tensorflow.py runs
# it on real TensorFlow)
# ---------------------------------------------------------------------------------------------


def dumped_arrays(path):
  """{h5 name: array} of a dump."""
  arrays = {}
  with h5py.File(path, 'r') as h5:
    h5.visititems(lambda n, o: arrays.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset)
                  else None)
  return arrays


def fake_module_reading(monkeypatch, reference, folder):
  """tensorflow importable, tensorflow_hub.resolve(handle) -> folder, and read_module giving
  the reference dump's arrays as the module's variables and stacks. Returns the handles
  resolved."""
  arrays = dumped_arrays(reference)
  variables = {n[len('module/'):-len(':0')]: v for n, v in arrays.items()
               if n.startswith('module/')}
  stacks = {int(n.split('_')[-1].split(':')[0]): v for n, v in arrays.items()
            if n.startswith('module_apply_default/')}
  resolved = []
  hub = types.ModuleType('tensorflow_hub')
  hub.resolve = lambda handle: resolved.append(handle) or str(folder)
  tf = types.ModuleType('tensorflow')

  def read_module(tf_module, path):
    assert tf_module is tf and path == str(folder)
    return variables, stacks
  monkeypatch.setitem(sys.modules, 'tensorflow', tf)
  monkeypatch.setitem(sys.modules, 'tensorflow_hub', hub)
  monkeypatch.setattr(converter, 'read_module', read_module)
  return resolved


def test_stage_one_dumps_what_stage_two_reads(tmp_path, monkeypatch):
  reference = str(tmp_path / 'reference.h5')
  write_dump(reference, 'biggan-deep', ch=4)
  resolved = fake_module_reading(monkeypatch, reference, tmp_path)
  weights_dir = tmp_path / 'pretrained'
  errors.run_main(converter.main, ['-r', '128', '--deep', '--weights_dir', str(weights_dir),
                                   '--weights_root', str(tmp_path / 'w'), '--generate_samples',
                                   '--samples_dir', str(tmp_path / 's'), '--batch_size', '2'])
  assert resolved == ['https://tfhub.dev/deepmind/biggan-deep-128/1']
  dumped = str(weights_dir / 'biggan-deep-128.h5')
  with h5py.File(dumped, 'r') as h5:
    assert h5.attrs['module'] == 'https://tfhub.dev/deepmind/biggan-deep-128/1'
  arrays, reference_arrays = dumped_arrays(dumped), dumped_arrays(reference)
  assert set(arrays) == set(reference_arrays)  # the names hub.Module gave (the original's)
  for name, value in arrays.items():
    np.testing.assert_array_equal(value, reference_arrays[name])
  G0, _ = converter.convert(reference)
  G1, _ = converter.convert(dumped)
  for key, value in G0.state_dict().items():
    assert torch.equal(value, G1.state_dict()[key]), key
  assert (tmp_path / 's' / 'biggan-deep128_samples.jpg').stat().st_size > 0
  assert (tmp_path / 'w' / 'biggan-deep-128' / 'G.pth').exists()
  # A local module folder needs no tensorflow_hub; --dump_only stops after stage 1.
  monkeypatch.setitem(sys.modules, 'tensorflow_hub', None)
  errors.run_main(converter.main, ['-r', '256', '--module_path', str(tmp_path), '--dump_only',
                                   '--weights_dir', str(weights_dir)])
  assert os.path.exists(weights_dir / 'biggan-256.h5') and len(resolved) == 1
  with pytest.raises(errors.UserError, match='needs tensorflow_hub'):
    converter.main(['-r', '128', '--dump_only', '--weights_dir', str(weights_dir)])


def test_stacks_in_a_biggan_dump_are_ignored_with_a_warning(tmp_path, capsys):
  """Stage 1 probes the statistics stacks of every module; biggan-* has nowhere to put them."""
  path = str(tmp_path / 'biggan-128.h5')
  tf, _, _ = write_dump(path, 'biggan', ch=4)
  with h5py.File(path, 'a') as h5:
    for index in converter.STACK_INDICES[:4]:
      h5[converter.STACK % index + ':0'] = np.full((STATS, 16), 9.0, np.float32)
  G, _ = converter.convert(path)
  assert 'holds 4 BN statistics stacks' in capsys.readouterr().out
  np.testing.assert_array_equal(G.blocks[0][0].bn1.stored_mean.numpy(),
                                tf['Generator/GBlock/CrossReplicaBN/accumulated_mean'])


def test_deep_stacks_beyond_the_bns_are_left_alone(tmp_path, capsys):
  path = str(tmp_path / 'deep.h5')
  _, _, stacks = write_dump(path, 'biggan-deep', ch=4)
  extra = converter.STACK_INDICES[2 * len(deep_bn_scopes(10))]
  with h5py.File(path, 'a') as h5:
    h5[converter.STACK % extra + ':0'] = np.full((STATS, 4), 9.0, np.float32)
  G, _ = converter.convert(path, truncation=0.3)
  assert 'stack_%d...' % extra in capsys.readouterr().out
  for bn, scope in [(G.blocks[0][0].bn1, 'Generator/GBlock/BatchNorm'),
                    (G.output_layer[0], 'Generator/BatchNorm')]:  # the first and the last BN
    mean, var = stacks[scope]
    np.testing.assert_array_equal(bn.truncation_var.numpy(), var)
    np.testing.assert_allclose(bn.stored_mean.numpy(), mean[15], rtol=1e-6)  # 0.3 = row 15


def test_stage_one_without_tensorflow_is_a_user_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'tensorflow', None)  # import fails, installed or not
  with pytest.raises(errors.UserError, match='tensorflow'):
    converter.main(['-r', '128', '--weights_dir', str(tmp_path)])
  assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize('kind,res,dims,n_params', [
    ('biggan', 128, (96, 20, 128), 70433988),  # = the released BigGAN-PyTorch G
    ('biggan', 256, (96, 20, 128), 82097604),
    # BigGANdeep's 128 px G with 125 more output channels; huggingface lists 50.4M and 56.2M.
    ('biggan-deep', 128, (128, 128, 128), 50244484 + 125 * 128 * 9 + 125),
    ('biggan-deep', 512, (128, 128, 128), 56163905)])
def test_real_size_configs_have_tfhub_parameter_counts(tmp_path, kind, res, dims, n_params):
  """A dump with TF-Hub's real shapes (no data stored) gives a G with as many parameters as the
  module has trainable variables."""
  spec = tf_spec(kind, res, *dims)
  path = str(tmp_path / 'shapes.h5')
  with h5py.File(path, 'w') as h5:
    for name, shape in spec.items():
      h5.create_dataset('module/%s:0' % name, shape, 'f4')
      if name.rsplit('/', 1)[-1] in TRAINABLE:
        h5.create_dataset('module/%s/%s:0' % (name, EMA[kind]), shape, 'f4')
  dump = converter.Dump(path)
  config = converter.read_config(dump)
  dump.close()
  with torch.device('meta'):
    G = converter.build_G(config)
  assert sum(p.numel() for p in G.parameters()) == n_params == sum(
      int(np.prod(s)) for n, s in spec.items() if n.rsplit('/', 1)[-1] in TRAINABLE)
  assert (config['G_ch'], config['dim_z'], config['shared_dim']) == (
      dims[0], dims[1] * (len(G.blocks) + 1) if kind == 'biggan' else dims[1], dims[2])


@pytest.mark.parametrize('kind,truncation', [('biggan', '0.5'), ('biggan-deep', '0.4')])
def test_a_conversion_samples_with_no_extra_flags(tmp_path, monkeypatch, capsys, kind,
                                                  truncation):
  """dump -> converter.py -> sample.py --config_from_name without --G_eval_mode: the images are
  the converted G's eval-mode output (train mode, with batch statistics, would differ)."""
  import sample
  import sampling
  path = str(tmp_path / 'dump.h5')
  write_dump(path, kind, ch=4)
  root = str(tmp_path / 'weights')
  errors.run_main(converter.main, ['--hdf5', path, '--weights_root', root, '--truncation',
                                   truncation])
  G0, _ = converter.convert(path, truncation=float(truncation))
  seen = []
  real_sample = sampling.sample

  def recording_sample(G, z_, y_, config):
    images, labels = real_sample(G, z_, y_, config)
    seen.append((z_.clone(), labels, images, G.training))
    return images, labels
  monkeypatch.setattr(sampling, 'sample', recording_sample)
  exp = '%s-128' % kind
  results = sample.main([
      '--experiment_name', exp, '--config_from_name', '--weights_root', root,
      '--samples_root', str(tmp_path / 'samples'), '--logs_root', str(tmp_path / 'logs'),
      '--data_root', str(tmp_path / 'data'), '--batch_size', '2', '--truncation', truncation,
      '--truncation_mode', 'tfhub', '--sample_npz', '--sample_num_npz', '2', '--sample_random'])
  printed = capsys.readouterr().out
  assert 'is a TF-Hub conversion; sampling with G in eval mode' in printed
  assert 'Putting G in eval mode' in printed
  assert os.path.getsize(results['random']) > 0
  assert results['random'] == str(tmp_path / 'samples' / exp / 'random_samples.jpg')
  assert len(seen) == 2 and not any(training for *_, training in seen)
  z, y, images, _ = seen[0]
  assert z.abs().max() <= 2 * float(truncation)
  with torch.no_grad():
    expected = G0.eval()(z, G0.shared(y))
    batch_stats = G0.train()(z, G0.shared(y))
  torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)
  assert (batch_stats - expected).abs().max() > 0.01
  with np.load(results['npz']) as f:
    np.testing.assert_array_equal(f['x'], sampling.to_uint8(images).numpy())
    np.testing.assert_array_equal(f['y'], y.numpy())
