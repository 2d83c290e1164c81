"""The model families (models.py, BigGAN.py, BigGANdeep.py): checkpoint compatibility with the
original (keys, shapes, parameter order, counts), the original's equations (written out
independently here), and behaviour. Their layers: tests/test_layers.py."""
import copy
import os
import re
import sys

import pytest
import torch

import BigGAN
import BigGANdeep
from conftest import ROOT, make_config

sys.path.insert(0, os.path.join(ROOT, 'bench'))  # the functional oracle, shared with the benches
from biggan_reference import Ref  # noqa: E402

RELEASED = ('--G_shared --hier --dim_z 120 --shared_dim 128 --G_ch 96 --D_ch 96 --G_attn 64 '
            '--D_attn 64 --G_nl inplace_relu --D_nl inplace_relu --SN_eps 1e-6 --adam_eps 1e-6')
CIFAR = '--G_attn 0 --D_attn 0 --G_init N02 --D_init N02 --ema'
DEEP = ('--model BigGANdeep --G_ch 128 --D_ch 128 --G_depth 2 --D_depth 2 --G_shared --hier '
        '--dim_z 128 --shared_dim 128 --G_attn 64 --D_attn 64')


def build_meta(module, flags, resolution=128, n_classes=1000):
  """Big configs are built on the meta device: shapes without memory or init time."""
  config = make_config(flags, resolution, n_classes, skip_init=True)
  with torch.device('meta'):
    return module.Generator(**config), module.Discriminator(**config)


def n_params(model):
  return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Golden checkpoint layouts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('module,flags,res,classes,counts', [
    (BigGAN, RELEASED, 128, 1000, (166, 70433988, 88, 87982370)),
    (BigGAN, CIFAR, 32, 10, (72, 4304387, 47, 4207361)),
    (BigGANdeep, DEEP, 128, 1000, (506, 50244484, 200, 34590210)),
])
def test_golden_counts(module, flags, res, classes, counts):
  G, D = build_meta(module, flags, res, classes)
  assert (len(G.state_dict()), n_params(G), len(D.state_dict()), n_params(D)) == counts


def sn(prefix, bias=True):
  return [prefix + '.weight'] + ([prefix + '.bias'] if bias else [])


def test_released_parameter_order_and_shapes():
  """Parameter order decides the optimizer state indices of G_optim.pth / D_optim.pth."""
  G, D = build_meta(BigGAN, RELEASED)
  expected = ['shared.weight'] + sn('linear')
  for i in range(5):
    b = 'blocks.%d.0.' % i
    expected += sn(b + 'conv1') + sn(b + 'conv2') + sn(b + 'conv_sc')
    expected += [b + 'bn1.gain.weight', b + 'bn1.bias.weight', b + 'bn2.gain.weight',
                 b + 'bn2.bias.weight']
    if i == 3:  # attention at 64 px, after the block whose output is 64 x 64
      expected += ['blocks.3.1.gamma'] + [('blocks.3.1.%s.weight' % k)
                                          for k in 'theta phi g o'.split()]
  expected += ['output_layer.0.gain', 'output_layer.0.bias'] + sn('output_layer.2')
  assert [name for name, _ in G.named_parameters()] == expected

  expected = []
  for i in range(6):
    b = 'blocks.%d.0.' % i
    expected += sn(b + 'conv1') + sn(b + 'conv2') + (sn(b + 'conv_sc') if i < 5 else [])
    if i == 0:
      expected += ['blocks.0.1.gamma'] + [('blocks.0.1.%s.weight' % k)
                                          for k in 'theta phi g o'.split()]
  expected += sn('linear') + ['embed.weight']
  assert [name for name, _ in D.named_parameters()] == expected

  g, d = G.state_dict(), D.state_dict()
  shapes = {'shared.weight': (1000, 128), 'linear.weight': (24576, 20), 'linear.u0': (1, 24576),
            'linear.sv0': (1,), 'blocks.0.0.bn1.gain.weight': (1536, 148),
            'blocks.4.0.bn2.bias.weight': (96, 148), 'blocks.0.0.bn1.stored_mean': (1536,),
            'blocks.3.1.theta.weight': (24, 192, 1, 1), 'output_layer.0.stored_var': (96,),
            'output_layer.2.weight': (3, 96, 3, 3)}
  assert {k: tuple(g[k].shape) for k in shapes} == shapes
  shapes = {'blocks.0.1.theta.weight': (12, 96, 1, 1), 'blocks.0.1.g.weight': (48, 96, 1, 1),
            'blocks.0.1.o.weight': (96, 48, 1, 1), 'linear.weight': (1, 1536),
            'embed.weight': (1000, 1536), 'embed.u0': (1, 1000), 'blocks.5.0.conv2.sv0': (1,)}
  assert {k: tuple(d[k].shape) for k in shapes} == shapes
  # Every SN layer has exactly u0/sv0; nothing else is a buffer in G but the BN statistics.
  buffers = {k.rsplit('.', 1)[1] for k in g if k not in dict(G.named_parameters())}
  assert buffers == {'u0', 'sv0', 'stored_mean', 'stored_var'}


# --- Layouts derived from the documented rules, independently of the model code ----------------
# Architecture tables of the reference notes, in multiples of ch. The deep D table is the
# original's BigGANdeep.D_arch (the notes give its golden counts, which the derived layout must
# reproduce).
T, F_ = True, False
G_TABLE = {32: ([4, 4, 4], [4, 4, 4]), 64: ([16, 16, 8, 4], [16, 8, 4, 2]),
           128: ([16, 16, 8, 4, 2], [16, 8, 4, 2, 1])}
D_TABLE = {32: ([3, 4, 4, 4], [4, 4, 4, 4], [T, T, F_, F_], [16, 16, 16, 16]),
           128: ([3, 1, 2, 4, 8, 16], [1, 2, 4, 8, 16, 16], [T] * 5 + [F_], [64, 32, 16, 8, 4, 4])}
DEEP_D_TABLE = {32: ([4, 4, 4], [4, 4, 4], [T, T, F_], [16, 16, 16]),
                64: ([1, 2, 4, 8], [2, 4, 8, 16], [T] * 4, [32, 16, 8, 4]),
                128: ([1, 2, 4, 8, 16], [2, 4, 8, 16, 16], [T] * 5, [64, 32, 16, 8, 4])}


class Layout(object):
  """state_dict entries in PyTorch's order (a module's own parameters, its own buffers, then its
  children); the parameters among them are named_parameters() in order."""

  def __init__(self):
    self.entries = []  # (name, shape, is_parameter)

  def p(self, name, *shape):
    self.entries.append((name, shape, True))

  def b(self, name, *shape):
    self.entries.append((name, shape, False))

  def sn(self, name, out, *rest, bias=True, svs=1):
    """SNConv2d / SNLinear (out x rest), or SNEmbedding when rest is (dim,) and bias=False."""
    self.p(name + '.weight', out, *rest)
    if bias:
      self.p(name + '.bias', out)
    for i in range(svs):
      self.b('%s.u%d' % (name, i), 1, out)
      self.b('%s.sv%d' % (name, i), 1)

  def bn_buffers(self, name, C, kind, own):
    if kind == 'bn' and own:
      self.b(name + '.stored_mean', C)
      self.b(name + '.stored_var', C)
    elif kind == 'mybn' and not own:
      self.b(name + '.bn.stored_mean', C)
      self.b(name + '.bn.stored_var', C)
      self.b(name + '.bn.accumulation_counter', 1)
    elif kind == 'cross_replica' and not own:
      self.b(name + '.bn.running_mean', C)
      self.b(name + '.bn.running_var', C)
      self.b(name + '.bn.num_batches_tracked')

  def ccbn(self, name, C, shared_in, n_classes, kind):
    """gain, bias: bias-free SN linears of shared_in inputs, or embeddings of the class."""
    self.bn_buffers(name, C, kind, own=True)
    for part in ('gain', 'bias'):
      if shared_in:
        self.sn('%s.%s' % (name, part), C, shared_in, bias=False)
      else:
        self.p('%s.%s.weight' % (name, part), n_classes, C)
    self.bn_buffers(name, C, kind, own=False)

  def output(self, C, kind):
    self.p('output_layer.0.gain', C)
    self.p('output_layer.0.bias', C)
    self.bn_buffers('output_layer.0', C, kind, own=True)
    self.bn_buffers('output_layer.0', C, kind, own=False)
    self.sn('output_layer.2', 3, C, 3, 3)

  def attention(self, name, C):
    self.p(name + '.gamma')
    self.sn(name + '.theta', C // 8, C, 1, 1, bias=False)
    self.sn(name + '.phi', C // 8, C, 1, 1, bias=False)
    self.sn(name + '.g', C // 2, C, 1, 1, bias=False)
    self.sn(name + '.o', C, C // 2, 1, 1, bias=False)

  def project(self, C, n_classes):
    self.sn('linear', 1, C)
    self.sn('embed', n_classes, C, bias=False)  # SNEmbedding: u has num_embeddings entries

  def parameters(self):
    return [(n, s) for n, s, is_p in self.entries if is_p]

  def state_dict(self):
    return [(n, s) for n, s, _ in self.entries]

  def n_params(self):
    return sum(int(torch.Size(s).numel()) for n, s, is_p in self.entries if is_p)


def G_rules(res, ch, n_classes=1000, dim_z=128, shared_dim=0, G_shared=False, hier=False,
            attn=(64,), kind='bn'):
  ins, outs = G_TABLE[res]
  n, shared_dim = len(ins), shared_dim or dim_z
  chunk = dim_z // (n + 1) if hier else 0
  L = Layout()
  if G_shared:
    L.p('shared.weight', n_classes, shared_dim)
  L.sn('linear', ins[0] * ch * 16, chunk if hier else dim_z)
  for i in range(n):
    b, cin, cout = 'blocks.%d.0.' % i, ins[i] * ch, outs[i] * ch
    L.sn(b + 'conv1', cout, cin, 3, 3)
    L.sn(b + 'conv2', cout, cout, 3, 3)
    L.sn(b + 'conv_sc', cout, cin, 1, 1)  # every block upsamples: always a learned shortcut
    for bn, C in (('bn1', cin), ('bn2', cout)):
      L.ccbn(b + bn, C, (shared_dim + chunk) if G_shared else 0, n_classes, kind)
    if 8 * 2 ** i in attn:  # the block's output resolution
      L.attention('blocks.%d.1' % i, cout)
  L.output(outs[-1] * ch, kind)
  return L


def D_rules(res, ch, n_classes=1000, attn=(64,), wide=True):
  ins, outs, down, labels = D_TABLE[res]
  L = Layout()
  for i in range(len(outs)):
    b, cin, cout = 'blocks.%d.0.' % i, (3 if i == 0 else ins[i] * ch), outs[i] * ch
    hidden = cout if wide else cin
    L.sn(b + 'conv1', hidden, cin, 3, 3)
    L.sn(b + 'conv2', cout, hidden, 3, 3)
    if cin != cout or down[i]:
      L.sn(b + 'conv_sc', cout, cin, 1, 1)
    if labels[i] in attn:
      L.attention('blocks.%d.1' % i, cout)
  L.project(outs[-1] * ch, n_classes)
  return L


def deep_G_rules(res, ch, depth, n_classes=1000, dim_z=128, shared_dim=128, attn=(64,),
                 kind='bn'):
  """Every block sees [shared(y), z]; a stage's blocks keep its input channels but the last,
  which has its output channels (the original's depth 2: in -> in, in -> out)."""
  ins, outs = G_TABLE[res]
  L = Layout()
  L.p('shared.weight', n_classes, shared_dim)
  L.sn('linear', ins[0] * ch * 16, dim_z + shared_dim)
  for s in range(len(ins)):
    cin = ins[s] * ch
    for d in range(depth):
      k, last = s * depth + d, d == depth - 1
      b, cout, hidden = 'blocks.%d.0.' % k, outs[s] * ch if last else cin, cin // 4
      L.sn(b + 'conv1', hidden, cin, 1, 1)
      L.sn(b + 'conv2', hidden, hidden, 3, 3)
      L.sn(b + 'conv3', hidden, hidden, 3, 3)
      L.sn(b + 'conv4', cout, hidden, 1, 1)
      for bn, C in (('bn1', cin), ('bn2', hidden), ('bn3', hidden), ('bn4', hidden)):
        L.ccbn(b + bn, C, shared_dim + dim_z, n_classes, kind)
      if last and 8 * 2 ** s in attn:
        L.attention('blocks.%d.1' % k, cout)
  L.output(outs[-1] * ch, kind)
  return L


def deep_D_rules(res, ch, depth, n_classes=1000, attn=(64,)):
  ins, outs, down, labels = DEEP_D_TABLE[res]
  L = Layout()
  L.sn('input_conv', ins[0] * ch, 3, 3, 3)
  for s in range(len(outs)):
    for d in range(depth):
      b = 'blocks.%d.%d.' % (s, d)
      cin, cout = (ins[s] if d == 0 else outs[s]) * ch, outs[s] * ch
      L.sn(b + 'conv1', cout // 4, cin, 1, 1)
      L.sn(b + 'conv2', cout // 4, cout // 4, 3, 3)
      L.sn(b + 'conv3', cout // 4, cout // 4, 3, 3)
      L.sn(b + 'conv4', cout, cout // 4, 1, 1)
      if cin != cout:  # concatenating shortcut: conv_sc makes the extra channels only
        L.sn(b + 'conv_sc', cout - cin, cin, 1, 1)
    if labels[s] in attn:
      L.attention('blocks.%d.%d' % (s, depth), outs[s] * ch)
  L.project(outs[-1] * ch, n_classes)
  return L


RELEASED_G = dict(res=128, ch=96, dim_z=120, shared_dim=128, G_shared=True, hier=True)
SNGAN = ('--G_attn 0 --D_attn 0 --D_thin --G_init xavier --D_init xavier --SN_eps 1e-8 '
         '--G_eval_mode')  # scripts/launch_SNGAN.sh (ch 64, I128)
LAYOUTS = {
    # name: (module, flags, res, n_classes, G rules, D rules, golden (G entries, G params,
    # D entries, D params) from the reference notes and the audit, or None)
    'released': (BigGAN, RELEASED, 128, 1000, lambda: G_rules(**RELEASED_G),
                 lambda: D_rules(128, 96), (166, 70433988, 88, 87982370)),
    'mybn': (BigGAN, RELEASED + ' --mybn', 128, 1000, lambda: G_rules(kind='mybn', **RELEASED_G),
             lambda: D_rules(128, 96), (177, 70433988, 88, 87982370)),
    'cross_replica': (BigGAN, RELEASED + ' --cross_replica', 128, 1000,
                      lambda: G_rules(kind='cross_replica', **RELEASED_G),
                      lambda: D_rules(128, 96), (177, 70433988, 88, 87982370)),
    'no_G_shared': (BigGAN, '--G_ch 96 --D_ch 96', 128, 1000, lambda: G_rules(128, 96),
                    lambda: D_rules(128, 96), (125, 85556164, 88, 87982370)),
    'cifar': (BigGAN, CIFAR, 32, 10, lambda: G_rules(32, 64, 10, attn=()),
              lambda: D_rules(32, 64, 10, attn=()), (72, 4304387, 47, 4207361)),
    'sngan_thin_D': (BigGAN, SNGAN, 128, 1000, lambda: G_rules(128, 64, attn=()),
                     lambda: D_rules(128, 64, attn=(), wide=False), None),
    'deep': (BigGANdeep, DEEP, 128, 1000, lambda: deep_G_rules(128, 128, 2),
             lambda: deep_D_rules(128, 128, 2), (506, 50244484, 200, 34590210)),
    'deep_mybn': (BigGANdeep, DEEP + ' --mybn', 128, 1000,
                  lambda: deep_G_rules(128, 128, 2, kind='mybn'),
                  lambda: deep_D_rules(128, 128, 2), None),
    # New: the original built these but its G crashed in forward (see BigGANdeep.Generator).
    'deep_other_depths': (BigGANdeep, DEEP.replace('--G_depth 2 --D_depth 2',
                                                   '--G_depth 1 --D_depth 3'), 128, 1000,
                          lambda: deep_G_rules(128, 128, 1), lambda: deep_D_rules(128, 128, 3),
                          None),
}


@pytest.mark.parametrize('name', list(LAYOUTS))
def test_layout_follows_the_documented_rules(name):
  """Ordered parameter names and shapes (the optimizer state indices of G_optim.pth /
  D_optim.pth) and every state_dict entry, against a layout built from the notes' rules."""
  module, flags, res, classes, G_layout, D_layout, golden = LAYOUTS[name]
  G, D = build_meta(module, flags, res, classes)
  for net, layout in ((G, G_layout()), (D, D_layout())):
    assert [(n, tuple(p.shape)) for n, p in net.named_parameters()] == layout.parameters()
    assert [(n, tuple(t.shape)) for n, t in net.state_dict().items()] == layout.state_dict()
  if golden:  # the rules reproduce the original's counts, and so does the model
    G_rules_, D_rules_ = G_layout(), D_layout()
    derived = (len(G_rules_.entries), G_rules_.n_params(), len(D_rules_.entries),
               D_rules_.n_params())
    assert derived == golden
    assert (len(G.state_dict()), n_params(G), len(D.state_dict()), n_params(D)) == golden


def test_deep_layout():
  G, D = build_meta(BigGANdeep, DEEP)
  g, d = G.state_dict(), D.state_dict()
  # G: one entry per block (5 stages x depth 2), attention appended to the last block of 64 px.
  assert {k.split('.')[1] for k in g if k.startswith('blocks.')} == {str(i) for i in range(10)}
  assert 'blocks.7.1.gamma' in g and 'blocks.6.1.gamma' not in g
  assert tuple(g['linear.weight'].shape) == (4 * 4 * 16 * 128, 256)
  assert tuple(g['blocks.0.0.bn1.gain.weight'].shape) == (2048, 256)
  assert tuple(g['output_layer.2.weight'].shape) == (3, 128, 3, 3)
  # D: input conv, blocks.{stage}.{d}, concatenating shortcut for the extra channels only.
  assert tuple(d['input_conv.weight'].shape) == (128, 3, 3, 3)
  assert tuple(d['blocks.0.0.conv_sc.weight'].shape) == (128, 128, 1, 1)
  assert 'blocks.0.1.conv_sc.weight' not in d and 'blocks.0.2.gamma' in d


# ---------------------------------------------------------------------------------------------
# The original's equations, written out independently
# ---------------------------------------------------------------------------------------------


TINY = ('--G_shared --hier --dim_z 20 --shared_dim 12 --G_ch 8 --D_ch 8 --G_attn 16 --D_attn 16 '
        '--SN_eps 1e-6 --BN_eps 1e-4')


def randomise(model):
  """Move every weight and buffer off its special initial value so the test sees all terms."""
  torch.manual_seed(1)
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if t.is_floating_point():
        if 'stored_var' in name:
          t.copy_(torch.rand_like(t) + 0.5)
        elif 'gamma' in name:
          t.fill_(0.7)
        elif name.endswith('accumulation_counter'):
          t.zero_()  # running (not standing) statistics, as after loading
        elif not name.endswith(('sv0', 'sv1')):
          t.add_(0.1 * torch.randn_like(t))


def assert_matches_reference(net, ref, run_net, run_ref):
  """Same output, same gradients for every parameter (through sv, not through u/v), and in
  train mode the same new buffers, no other buffer touched; in eval mode no buffer touched."""
  params = dict(net.named_parameters())
  for k, v in ref.sd.items():
    v.requires_grad_(v.is_floating_point() and k in params)
  before = {k: v.clone() for k, v in net.state_dict().items() if k not in params}
  expected = run_ref()
  out = run_net()
  torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
  weights = torch.randn_like(out)
  (out * weights).sum().backward()
  (expected * weights).sum().backward()
  for name, p in params.items():
    assert p.grad is not None and ref.sd[name].grad is not None, name
    torch.testing.assert_close(p.grad, ref.sd[name].grad, rtol=1e-9, atol=1e-10, msg=name)
  after = net.state_dict()
  changed = {k for k in before if not torch.equal(before[k], after[k])}
  if ref.train:
    assert ref.new and changed <= set(ref.new)
    for k, v in ref.new.items():
      torch.testing.assert_close(after[k].reshape(v.shape), v.detach(), rtol=1e-10, atol=1e-12,
                                 msg=k)
  else:
    assert not ref.new and not changed


def n_itrs(flags, net):
  """--num_{net}_SV_itrs of flags (default 1)."""
  found = re.search(r'--num_%s_SV_itrs (\d+)' % net, flags)
  return int(found.group(1)) if found else 1


# Narrower than TINY: float64 convolutions have no fast kernels.
EQ_TINY = TINY.replace('--G_ch 8 --D_ch 8', '--G_ch 4 --D_ch 4')
PLAIN_TINY = '--dim_z 20 --G_ch 4 --D_ch 4 --G_attn 16 --D_attn 16 --SN_eps 1e-6 --BN_eps 1e-4'
EQUATION_CASES = {
    'shared_hier': EQ_TINY,
    'class_embeddings_thin_D': PLAIN_TINY + ' --D_thin',  # ccbn gains are embeddings of y
    'mybn': EQ_TINY + ' --mybn',
    # Several power iterations, and two singular vectors in G (Gram-Schmidt). D keeps one: its
    # 1 x C linear has a single singular value.
    'sv_itrs': EQ_TINY + ' --num_G_SV_itrs 3 --num_D_SV_itrs 2 --num_G_SVs 2',
}


@pytest.mark.parametrize('train', [True, False])
@pytest.mark.parametrize('case', list(EQUATION_CASES))
def test_G_and_D_follow_the_original_equations(case, train, one_thread):
  flags = EQUATION_CASES[case]
  torch.manual_seed(0)
  config = make_config(flags, G_init='N02', D_init='N02')  # no QR: randomise() moves them anyway
  # float64, so that the comparison is tight and any difference is a real one.
  G, D = BigGAN.Generator(**config).double(), BigGAN.Discriminator(**config).double()
  randomise(G)
  randomise(D)
  G.train(train)
  D.train(train)
  z, y = torch.randn(4, G.dim_z, dtype=torch.float64), torch.randint(0, 10, (4,))
  ref = Ref(G.state_dict(), train, 1e-6, 1e-4, chunk=G.z_chunk_size, num_itrs=n_itrs(flags, 'G'))
  assert G.z_chunk_size == (5 if '--hier' in flags else 0)
  assert_matches_reference(G, ref, lambda: G(z, G.shared(y)),
                           lambda: ref.G(z, y, n_blocks=3, attn_block=1))
  if '--mybn' in flags and train:
    assert any(k.endswith('.bn.stored_var') for k in ref.new)
  if '--num_G_SVs 2' in flags and train:
    assert torch.all(G.blocks[0][0].conv1.sv1 > 0) and 'blocks.0.0.conv1.u1' in ref.new

  x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
  dref = Ref(D.state_dict(), train, 1e-6, 1e-4, num_itrs=n_itrs(flags, 'D'))
  assert_matches_reference(D, dref, lambda: D(x, y),
                           lambda: dref.D(x, y, downsample=[True, True, False, False],
                                          attn_blocks={0, 1, 2, 3}))


DEEP_TINY = ('--model BigGANdeep --G_shared --G_ch 4 --D_ch 4 --dim_z 6 --shared_dim 5 '
             '--G_attn 16 --D_attn 16_32 --SN_eps 1e-6 --BN_eps 1e-4')
DEEP_CASES = {
    # flags, train, (G depth, D depth)
    'original_train': (DEEP_TINY + ' --hier --G_depth 2 --D_depth 2', True, (2, 2)),
    'original_eval': (DEEP_TINY + ' --hier --G_depth 2 --D_depth 2', False, (2, 2)),
    'no_hier': (DEEP_TINY + ' --G_depth 2 --D_depth 2', True, (2, 2)),  # new: blocks see y only
    'mybn_sv_itrs': (DEEP_TINY + ' --hier --G_depth 2 --D_depth 2 --mybn --num_G_SV_itrs 2 '
                     '--num_D_SV_itrs 2', True, (2, 2)),
    'other_depths': (DEEP_TINY + ' --hier --G_depth 3 --D_depth 1', True, (3, 1)),
}


@pytest.mark.parametrize('case', list(DEEP_CASES))
def test_deep_G_and_D_follow_the_original_equations(case, one_thread):
  """BigGAN-deep at 64 px, where stages change channels: G's shortcut drops channels, D's
  concatenates conv_sc(x)."""
  flags, train, (g_depth, d_depth) = DEEP_CASES[case]
  torch.manual_seed(0)
  config = make_config(flags, 64, G_init='N02', D_init='N02')
  G, D = BigGANdeep.Generator(**config).double(), BigGANdeep.Discriminator(**config).double()
  randomise(G)
  randomise(D)
  G.train(train)
  D.train(train)
  sd = G.state_dict()
  assert 'blocks.%d.1.gamma' % (2 * g_depth - 1) in sd  # attention after stage 1 (16 px)
  # Stage 0 keeps 64 channels; the last block of stage 1 goes 64 -> 32 (hidden 64 / 4).
  assert tuple(sd['blocks.0.0.conv4.weight'].shape) == (64, 16, 1, 1)
  assert tuple(sd['blocks.%d.0.conv4.weight' % (2 * g_depth - 1)].shape) == (32, 16, 1, 1)
  z, y = torch.randn(4, G.dim_z, dtype=torch.float64), torch.randint(0, 10, (4,))
  ref = Ref(sd, train, 1e-6, 1e-4, num_itrs=n_itrs(flags, 'G'))
  assert_matches_reference(G, ref, lambda: G(z, G.shared(y)),
                           lambda: ref.G_deep(z, y, n_stages=4, depth=g_depth, attn_stages={1},
                                              hier='--hier' in flags))
  assert (G.linear.in_features, G.blocks[0][0].bn1.gain.in_features) == (
      (11, 11) if '--hier' in flags else (6, 5))

  x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
  sd = D.state_dict()
  assert tuple(sd['blocks.0.0.conv_sc.weight'].shape) == (4, 4, 1, 1)  # 4 -> 8 channels
  assert 'blocks.0.%d.gamma' % d_depth in sd and 'blocks.1.%d.gamma' % d_depth in sd
  dref = Ref(sd, train, 1e-6, 1e-4, num_itrs=n_itrs(flags, 'D'))
  assert_matches_reference(D, dref, lambda: D(x, y),
                           lambda: dref.D_deep(x, y, downsample=[True] * 4, depth=d_depth,
                                               attn_stages={0, 1}))


def test_same_seed_same_weights():
  config = make_config(TINY)
  torch.manual_seed(3)
  a = BigGAN.Generator(**config).state_dict()
  torch.manual_seed(3)
  b = BigGAN.Generator(**config).state_dict()
  assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize('module,flags,res', [
    (BigGAN, TINY, 32), (BigGAN, '--G_ch 4 --D_ch 4 --G_attn 32 --D_attn 32', 64),
    (BigGANdeep, '--G_ch 8 --D_ch 8 --G_attn 32 --D_attn 32 --G_depth 2 --D_depth 3', 64)])
def test_modules_are_created_in_module_order(module, flags, res, monkeypatch):
  """The original creates each layer where it registers it, so one seed draws the default biases
  (and SN vectors) of the layers in module order: a G or D that built its layers in another order
  would hold other weights than the original's for the same seed."""
  created = []
  for cls in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding):
    original = cls.reset_parameters
    monkeypatch.setattr(cls, 'reset_parameters',
                        lambda self, original=original: (created.append(self), original(self)))
  config = make_config(flags, resolution=res)
  for net in (module.Generator(**config), module.Discriminator(**config)):
    order = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear,
                                                          torch.nn.Embedding))]
    assert [id(m) for m in created[:len(order)]] == [id(m) for m in order]
    del created[:len(order)]

# ---------------------------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('res,dim_z,slots,chunk', [(128, 120, 6, 20), (256, 140, 7, 20),
                                                   (512, 128, 8, 16), (32, 20, 4, 5)])
def test_hierarchical_z(res, dim_z, slots, chunk):
  config = make_config('--G_shared --hier --dim_z %d --shared_dim 8 --G_ch 4' % dim_z, res,
                       skip_init=True, G_attn='0')
  with torch.device('meta'):
    G = BigGAN.Generator(**config)
  assert (G.num_slots, G.z_chunk_size, G.dim_z) == (slots, chunk, slots * chunk)
  assert G.linear.in_features == chunk
  assert G.blocks[0][0].bn1.gain.in_features == 8 + chunk


def test_hier_z_chunks_reach_their_blocks_only():
  torch.manual_seed(0)
  G = BigGAN.Generator(**make_config(TINY)).eval()
  z, y = torch.randn(2, G.dim_z), torch.tensor([1, 2])
  seen = {}
  G.linear.register_forward_hook(lambda m, i, o: seen.update(linear=i[0].clone()))
  G.blocks[2][0].bn1.register_forward_hook(lambda m, i, o: seen.update(b2=i[1].clone()))
  G(z, G.shared(y))
  torch.testing.assert_close(seen['linear'], z[:, :5])
  torch.testing.assert_close(seen['b2'], torch.cat([G.shared(y), z[:, 15:20]], 1))


def test_shared_embedding_and_output_range():
  torch.manual_seed(0)
  G = BigGAN.Generator(**make_config(TINY))
  y = torch.tensor([3, 3, 4])
  e = G.shared(y)
  assert e.shape == (3, 12) and torch.equal(e[0], e[1]) and not torch.equal(e[0], e[2])
  out = G(torch.randn(3, G.dim_z) * 10, e)
  assert out.min() >= -1 and out.max() <= 1


def test_mybn_eval_needs_no_device_sync_and_averages_the_originals_sums(monkeypatch, one_thread):
  """The original saved standing statistics as sums over accumulation_counter batches (dividing
  only while its in-memory flag was set). Loading averages them, so eval mode never reads a
  buffer back to decide (no .item() / bool() of a tensor: no GPU sync per forward)."""
  torch.manual_seed(0)
  config = make_config(EQ_TINY + ' --mybn', G_init='N02')
  G = BigGAN.Generator(**config)
  z, y = torch.randn(3, G.dim_z), torch.tensor([1, 2, 3])
  with torch.no_grad():
    G(z, G.shared(y))  # running statistics
  G.eval()
  reference = G(z, G.shared(y)).detach()
  counters = [k for k in G.state_dict() if k.endswith('accumulation_counter')]
  assert len(counters) == 7  # 3 blocks x 2 + the output layer

  def synchronising(*args):
    raise AssertionError('eval forward read a tensor back to the host')
  with monkeypatch.context() as m:
    m.setattr(torch.Tensor, 'item', synchronising)
    m.setattr(torch.Tensor, '__bool__', synchronising)
    out = G(z, G.shared(y))
  torch.testing.assert_close(out, reference)

  saved = {k: v.clone() for k, v in G.state_dict().items()}
  for k in counters:  # as the original wrote it after 16 standing batches
    prefix = k[:-len('accumulation_counter')]
    saved[prefix + 'stored_mean'] *= 16
    saved[prefix + 'stored_var'] *= 16
    saved[k].fill_(16)
  untouched = {k: v.clone() for k, v in saved.items()}
  for assign in (False, True):
    loaded = BigGAN.Generator(**{**config, 'skip_init': True}).eval()
    loaded.load_state_dict(saved, assign=assign)
    assert all(torch.equal(saved[k], untouched[k]) for k in saved)  # the caller's dict kept
    sd = loaded.state_dict()
    for k in counters:
      prefix = k[:-len('accumulation_counter')]
      assert sd[k].item() == 0
      torch.testing.assert_close(sd[prefix + 'stored_mean'], G.state_dict()[prefix + 'stored_mean'])
    torch.testing.assert_close(loaded(z, loaded.shared(y)), reference)
  # Without a counter the statistics are running averages and are used as they are.
  plain = BigGAN.Generator(**{**config, 'skip_init': True}).eval()
  plain.load_state_dict(G.state_dict())
  torch.testing.assert_close(plain(z, plain.shared(y)), reference)


def test_G_D_split_and_return_G_z():
  torch.manual_seed(0)
  config = make_config(TINY)
  G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
  GD = BigGAN.G_D(G, D).eval()
  z, y, x = torch.randn(3, G.dim_z), torch.tensor([0, 1, 2]), torch.randn(2, 3, 32, 32)
  fake, real = GD(z, y, x, torch.tensor([4, 5]))
  fake2, real2 = GD(z, y, x, torch.tensor([4, 5]), split_D=True)
  assert fake.shape == (3, 1) and real.shape == (2, 1)
  torch.testing.assert_close(fake, fake2)
  torch.testing.assert_close(real, real2)
  out, G_z = GD(z, y, return_G_z=True)
  torch.testing.assert_close(D(G_z, y), out)
  assert not G_z.requires_grad and GD(z, y, train_G=True).requires_grad


@pytest.mark.parametrize('res', [32, 64, 128, 256, 512])
def test_every_resolution_runs(res):
  torch.manual_seed(0)
  ch = 1 if res == 512 else 2
  config = make_config('--G_shared --hier --dim_z 32 --G_ch %d --D_ch %d --G_attn 0 --D_attn 0'
                       % (8 * ch, 8 * ch), res)
  G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
  y = torch.tensor([1])
  x = G(torch.randn(1, G.dim_z), G.shared(y))
  assert x.shape == (1, 3, res, res)
  assert D(x, y).shape == (1, 1)


@pytest.mark.parametrize('hier', [True, False])
def test_deep_runs_with_and_without_hier(hier):
  torch.manual_seed(0)
  config = make_config('--model BigGANdeep --G_shared --G_ch 16 --D_ch 16 --G_depth 2 --D_depth 2 '
                       '--dim_z 16 --G_attn 16 --D_attn 16' + (' --hier' if hier else ''), 32)
  G, D = BigGANdeep.Generator(**config), BigGANdeep.Discriminator(**config)
  y = torch.tensor([1, 2])
  x = G(torch.randn(2, G.dim_z), G.shared(y))
  assert x.shape == (2, 3, 32, 32) and D(x, y).shape == (2, 1)
  assert G.linear.in_features == 16 + (16 if hier else 0)
  GD = BigGANdeep.G_D(G, D)
  assert GD(torch.randn(2, G.dim_z), y).shape == (2, 1)


def test_plain_layers_without_spectral_norm():
  torch.manual_seed(0)
  config = make_config(TINY + ' --G_param none --D_param none')
  G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
  assert not any('u0' in k for k in list(G.state_dict()) + list(D.state_dict()))
  y = torch.tensor([0, 1])
  assert D(G(torch.randn(2, G.dim_z), G.shared(y)), y).shape == (2, 1)


@pytest.mark.parametrize('init', ['ortho', 'N02', 'glorot', 'xavier'])
def test_init_styles(init):
  torch.manual_seed(0)
  G = BigGAN.Generator(**make_config(TINY + ' --G_init ' + init))
  w = G.blocks[0][0].conv1.weight.detach().reshape(32, -1)
  if init == 'ortho':
    torch.testing.assert_close(w @ w.t(), torch.eye(32), atol=1e-5, rtol=0)
  elif init == 'N02':
    assert abs(w.std().item() - 0.02) < 0.003
  else:
    bound = (6.0 / (32 * 9 + 32 * 9)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


def test_bad_model_options_are_refused():
  with pytest.raises(ValueError, match='resolution 48'):
    BigGAN.Generator(**make_config(TINY, 48))
  with pytest.raises(ValueError, match='init'):
    BigGAN.Discriminator(**make_config(TINY, D_init='kaiming'))
  with pytest.raises(ValueError, match='norm_style'):
    BigGAN.Generator(**make_config('--norm_style batch'))


def test_optimizers_live_in_the_models():
  config = make_config(TINY + ' --G_lr 1e-4 --D_lr 4e-4 --D_B2 0.9 --adam_eps 1e-6')
  G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
  assert G.optim.defaults['lr'] == 1e-4 and D.optim.defaults['betas'] == (0.0, 0.9)
  assert D.optim.defaults['eps'] == 1e-6
  assert [id(p) for p in G.optim.param_groups[0]['params']] == [id(p) for p in G.parameters()]
  G_ema = BigGAN.Generator(**{**config, 'skip_init': True, 'no_optim': True})
  assert not hasattr(G_ema, 'optim')
  G_ema.load_state_dict(copy.deepcopy(G.state_dict()))
