"""Model core: checkpoint compatibility with the original (keys, shapes, parameter order, counts),
the original's equations (written out independently here), spectral norm, and behaviour."""
import copy

import pytest
import torch

import BigGAN
import BigGANdeep
import layers
import losses
from biggan_reference import Ref
from conftest import make_config

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
      expected += ['blocks.3.1.gamma'] + [('blocks.3.1.%s.weight' % k) for k in 'theta phi g o'.split()]
  expected += ['output_layer.0.gain', 'output_layer.0.bias'] + sn('output_layer.2')
  assert [name for name, _ in G.named_parameters()] == expected

  expected = []
  for i in range(6):
    b = 'blocks.%d.0.' % i
    expected += sn(b + 'conv1') + sn(b + 'conv2') + (sn(b + 'conv_sc') if i < 5 else [])
    if i == 0:
      expected += ['blocks.0.1.gamma'] + [('blocks.0.1.%s.weight' % k) for k in 'theta phi g o'.split()]
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


def test_bn_variant_keys():
  G, _ = build_meta(BigGAN, RELEASED + ' --mybn')
  keys = set(G.state_dict())
  assert {'blocks.0.0.bn1.bn.stored_mean', 'blocks.0.0.bn1.bn.stored_var',
          'blocks.0.0.bn1.bn.accumulation_counter', 'output_layer.0.bn.stored_mean'} <= keys
  assert 'blocks.0.0.bn1.stored_mean' not in keys
  G, _ = build_meta(BigGAN, RELEASED + ' --cross_replica')
  keys = set(G.state_dict())
  assert {'blocks.0.0.bn1.bn.running_mean', 'blocks.0.0.bn1.bn.running_var',
          'blocks.0.0.bn1.bn.num_batches_tracked', 'output_layer.0.bn.running_var'} <= keys
  assert not any('stored' in k for k in keys)
  G, _ = build_meta(BigGAN, '--G_ch 96 --D_ch 96')  # no G_shared: class embeddings per BN
  sd = G.state_dict()
  assert tuple(sd['blocks.0.0.bn1.gain.weight'].shape) == (1000, 1536)
  assert tuple(sd['blocks.0.0.bn1.bias.weight'].shape) == (1000, 1536)
  assert not any(k.startswith('shared') for k in sd)
  assert not any(k.startswith('blocks.0.0.bn1.gain.u') for k in sd)  # plain embeddings


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
        elif not name.endswith('sv0'):
          t.add_(0.1 * torch.randn_like(t))


@pytest.mark.parametrize('train', [True, False])
def test_G_and_D_follow_the_original_equations(train):
  torch.manual_seed(0)
  config = make_config(TINY)
  # float64, so that the comparison is tight and any difference is a real one.
  G, D = BigGAN.Generator(**config).double(), BigGAN.Discriminator(**config).double()
  randomise(G)
  randomise(D)
  G.train(train)
  D.train(train)
  z, y = torch.randn(6, G.dim_z, dtype=torch.float64), torch.randint(0, 10, (6,))
  ref = Ref(G.state_dict(), train, 1e-6, 1e-4, chunk=G.z_chunk_size)
  for k, v in ref.sd.items():
    v.requires_grad_(v.is_floating_point() and k in dict(G.named_parameters()))
  expected = ref.G(z, y, n_blocks=3, attn_block=1)
  out = G(z, G.shared(y))
  assert G.z_chunk_size == 5 and out.shape == (6, 3, 32, 32)
  torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
  # Gradients of the same scalar reach the weights identically (through sv, not through u/v).
  weights = torch.randn_like(out)
  (out * weights).sum().backward()
  (expected * weights).sum().backward()
  for name, p in G.named_parameters():
    torch.testing.assert_close(p.grad, ref.sd[name].grad, rtol=1e-9, atol=1e-10, msg=name)
  sd = G.state_dict()
  assert ref.new if train else not ref.new
  for k, v in ref.new.items():
    torch.testing.assert_close(sd[k].reshape(v.shape), v.detach(), rtol=1e-10, atol=1e-12, msg=k)
  if not train:  # eval mode leaves every buffer alone
    for k, v in ref.sd.items():
      assert torch.equal(sd[k], v.detach()), k

  x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
  dref = Ref(D.state_dict(), train, 1e-6, 1e-4)
  expected = dref.D(x, y, downsample=[True, True, False, False], attn_blocks={0, 1, 2, 3})
  torch.testing.assert_close(D(x, y), expected, rtol=1e-10, atol=1e-12)
  sd = D.state_dict()
  for k, v in dref.new.items():
    torch.testing.assert_close(sd[k].reshape(v.shape), v, rtol=1e-10, atol=1e-12, msg=k)


def test_same_seed_same_weights():
  config = make_config(TINY)
  torch.manual_seed(3)
  a = BigGAN.Generator(**config).state_dict()
  torch.manual_seed(3)
  b = BigGAN.Generator(**config).state_dict()
  assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------
# Spectral norm against torch.linalg
# ---------------------------------------------------------------------------------------------


def test_spectral_norm_converges_to_matrix_norm():
  torch.manual_seed(0)
  layer = layers.SNLinear(30, 20, num_svs=3, num_itrs=20, eps=1e-12)
  with torch.no_grad():
    layer.weight.copy_(torch.randn(20, 30) * torch.linspace(0.2, 3.0, 30))
  for _ in range(10):
    layer(torch.randn(2, 30))
  reference = torch.linalg.svdvals(layer.weight.detach())
  svs = torch.cat([sv for sv in layer.sv])
  torch.testing.assert_close(svs, reference[:3], rtol=1e-4, atol=0)
  assert torch.linalg.matrix_norm(layer.weight.detach(), 2) == pytest.approx(float(svs[0]), 1e-4)
  # The normalised weight has spectral norm 1.
  assert torch.linalg.matrix_norm(layer.W_().detach(), 2).item() == pytest.approx(1.0, abs=1e-4)


def test_spectral_norm_conv_and_embedding_shapes_and_eval():
  torch.manual_seed(0)
  conv = layers.SNConv2d(4, 6, kernel_size=3, padding=1)
  emb = layers.SNEmbedding(7, 5)
  assert conv.u0.shape == (1, 6) and emb.u0.shape == (1, 7)
  for _ in range(200):
    conv(torch.randn(1, 4, 5, 5))
    emb(torch.tensor([1]))
  W = conv.weight.detach().reshape(6, -1)
  assert conv.sv0.item() == pytest.approx(torch.linalg.matrix_norm(W, 2).item(), rel=1e-4)
  assert emb.sv0.item() == pytest.approx(
      torch.linalg.matrix_norm(emb.weight.detach(), 2).item(), rel=1e-4)
  conv.eval()
  before = conv.u0.clone()
  conv(torch.randn(1, 4, 5, 5))
  assert torch.equal(conv.u0, before)


# ---------------------------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------------------------


def test_attention_starts_as_identity_and_attends():
  torch.manual_seed(0)
  attn = layers.Attention(16)
  x = torch.randn(2, 16, 8, 8)
  assert torch.equal(attn(x), x)
  with torch.no_grad():
    attn.gamma.fill_(1.0)
  out = attn(x)
  assert out.shape == x.shape and not torch.allclose(out, x)
  # Each output position mixes the pooled values of the whole image: changing one corner of x
  # changes the output far away from it.
  x2 = x.clone()
  x2[:, :, 0, 0] += 5
  assert not torch.allclose(attn(x2)[:, :, 7, 7], out[:, :, 7, 7])


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


@pytest.mark.parametrize('style', ['bn', 'in', 'ln', 'gn', 'gn_grp_4', 'gn_ch_2', 'nonorm'])
def test_ccbn_norm_styles(style):
  torch.manual_seed(0)
  bn = layers.ccbn(16, 10, torch.nn.Embedding, norm_style=style)
  x, y = torch.randn(4, 16, 6, 6) * 3 + 1, torch.tensor([0, 1, 2, 3])
  out = bn(x, y)
  gain = (1 + bn.gain(y))[:, :, None, None]
  bias = bn.bias(y)[:, :, None, None]
  normalised = (out - bias) / gain
  groups = {'bn': None, 'in': 16, 'ln': 1, 'gn': 16, 'gn_grp_4': 4, 'gn_ch_2': 8,
            'nonorm': 0}[style]
  if groups == 0:
    expected = x
  elif groups is None:
    expected = (x - x.mean([0, 2, 3], keepdim=True)) / torch.sqrt(
        x.var([0, 2, 3], unbiased=False, keepdim=True) + 1e-5)
  else:
    g = x.reshape(4, groups, -1)
    expected = ((g - g.mean(-1, keepdim=True)) / torch.sqrt(
        g.var(-1, unbiased=False, keepdim=True) + 1e-5)).reshape(x.shape)
  torch.testing.assert_close(normalised, expected, rtol=1e-4, atol=1e-4)


def test_cross_replica_is_plain_bn_in_one_process():
  torch.manual_seed(0)
  plain = layers.ccbn(8, 4, torch.nn.Embedding)
  cross = layers.ccbn(8, 4, torch.nn.Embedding, cross_replica=True)
  cross.load_state_dict({k: v for k, v in plain.state_dict().items() if 'stored' not in k},
                        strict=False)
  x, y = torch.randn(5, 8, 4, 4), torch.tensor([0, 1, 2, 3, 0])
  torch.testing.assert_close(cross(x, y), plain(x, y))
  torch.testing.assert_close(cross.bn.running_mean, plain.stored_mean)
  torch.testing.assert_close(cross.bn.running_var, plain.stored_var)
  cross.eval()
  plain.eval()
  torch.testing.assert_close(cross(x, y), plain(x, y))


def test_mybn_standing_statistics():
  torch.manual_seed(0)
  bn = layers.myBN(3)
  xs = [torch.randn(4, 3, 2, 2) * (i + 1) for i in range(3)]
  bn.reset_stats()
  bn.accumulate_standing = True
  for x in xs:
    bn(x, 1, 0)
  bn.eval()
  mean = torch.stack([x.mean([0, 2, 3]) for x in xs]).mean(0)
  var = torch.stack([x.var([0, 2, 3], unbiased=False) for x in xs]).mean(0)
  x = torch.randn(2, 3, 2, 2)
  expected = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-5)
  torch.testing.assert_close(bn(x, 1, 0), expected, rtol=1e-5, atol=1e-5)


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
    BigGAN.Discriminator(**make_config(TINY + ' --D_init kaiming'))
  with pytest.raises(ValueError, match='G_shared'):
    BigGAN.Generator(**make_config('--hier'))
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


def test_losses():
  fake, real = torch.tensor([[-2.0], [0.5]]), torch.tensor([[2.0], [0.2]])
  d_real, d_fake = losses.get_losses('hinge')[0](fake, real)
  assert d_real.item() == pytest.approx((0 + 0.8) / 2)
  assert d_fake.item() == pytest.approx((0 + 1.5) / 2)
  assert losses.get_losses('hinge')[1](fake).item() == pytest.approx(0.75)
  d_real, d_fake = losses.get_losses('dcgan')[0](fake, real)
  sig = torch.sigmoid
  assert d_real.item() == pytest.approx(-torch.log(sig(real)).mean().item(), rel=1e-6)
  assert d_fake.item() == pytest.approx(-torch.log(1 - sig(fake)).mean().item(), rel=1e-6)
  assert losses.get_losses('dcgan')[1](fake).item() == pytest.approx(
      -torch.log(sig(fake)).mean().item(), rel=1e-6)
  assert losses.discriminator_loss is losses.loss_hinge_dis
  with pytest.raises(ValueError):
    losses.get_losses('wgan')
