"""models.py, the base of the model families: checkpoint compatibility with the original for both
families (the golden counts, and every state_dict entry and parameter in order against layouts
derived from the documented rules), layers created in module order, initialisation and its seed,
the optimizers inside the models, G_D, plain layers without spectral norm, bad options. Each
family's own architecture and equations: tests/test_BigGAN.py, tests/test_BigGANdeep.py; their
layers: tests/test_layers.py."""
import copy

import pytest
import torch

import BigGAN
import BigGANdeep
import checkpoints
from conftest import DEEP, RELEASED, TINY, build_meta, make_config

CIFAR = '--G_attn 0 --D_attn 0 --G_init N02 --D_init N02 --ema'


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


# ---------------------------------------------------------------------------------------------
# Construction: initialisation, layer order, layer kinds, optimizers, bad options
# ---------------------------------------------------------------------------------------------


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


def test_fused_optim_takes_the_same_steps_and_survives_loading_a_plain_checkpoint(tmp_path):
  """--fused_optim: Adam's fused kernel gives the default implementation's update up to float
  rounding, and a checkpoint written without it (its optimizer file records foreach/fused None)
  loads into a fused run without switching the run back."""
  base = TINY + ' --G_lr 1e-3 --D_lr 1e-3'
  nets = {}
  for fused in (False, True):
    torch.manual_seed(0)
    config = make_config(base + (' --fused_optim' if fused else ''))
    G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
    assert D.optim.param_groups[0]['fused'] is (True if fused else None)
    torch.manual_seed(1)
    for _ in range(3):
      for net in (G, D):
        for p in net.parameters():
          p.grad = torch.randn_like(p)
        net.optim.step()
    nets[fused] = (G, D)
  for plain, fused in zip(nets[False], nets[True]):
    for (name, a), b in zip(plain.named_parameters(), fused.parameters()):
      torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
  G, D = nets[False]
  state = {'itr': 3, 'epoch': 0, 'save_num': 0, 'save_best_num': 0, 'best_IS': 0, 'best_FID': 1e5,
           'config': {}}
  checkpoints.save_weights(G, D, state, str(tmp_path), 'exp')
  G_fused, D_fused = nets[True]
  checkpoints.load_weights(G_fused, D_fused, dict(state), str(tmp_path), 'exp')
  for net, source in ((G_fused, G), (D_fused, D)):
    assert net.optim.param_groups[0]['fused'] is True
    assert net.optim.state_dict()['state'][0]['step'] == 3
    torch.testing.assert_close(net.optim.state_dict()['state'][0]['exp_avg'],
                               source.optim.state_dict()['state'][0]['exp_avg'])
    net.optim.step()  # steps with the loaded moments in the fused kernel


# ---------------------------------------------------------------------------------------------
# G and D in one module
# ---------------------------------------------------------------------------------------------


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
