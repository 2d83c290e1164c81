"""Glow.py: every layer and the whole flow invert exactly (float32 and float64, also under bf16
autocast) and their log-determinants equal the slogdet of the autograd Jacobian; the objective
adds the priors' densities (scipy) and the class bits; the untrained model's bits/dim on uniform
noise is the value derived below; actnorm's data-dependent init (statistics, never again after
loading, identical on 2 gloo ranks); the reversible backward pass (glow_checkpoint) gives the plain
pass's gradients and keeps nothing per step; a short training run on Shapes lowers held-out
bits/dim; a sample whose inverse overflows comes out finite; bad options are one-line errors."""
import math
import multiprocessing

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from scipy import special, stats

import datasets
import Glow
from errors import UserError

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors: threads only wait
COMBOS = [(lu, coupling, ycond) for lu in (False, True) for coupling in ('affine', 'additive')
          for ycond in (False, True)]


def tiny(resolution=8, levels=2, depth=2, hidden=8, n_classes=5, **options):
  return Glow.Glow(resolution=resolution, n_classes=n_classes, glow_levels=levels,
                   glow_depth=depth, glow_hidden=hidden, **options)


def images(n, resolution=8, dtype=torch.float32, seed=0):
  """Images as the loaders give them: 2 * (pixel / 255 - 0.5) for uniform random pixels."""
  g = torch.Generator().manual_seed(seed)
  pixels = torch.randint(0, 256, (n, 3, resolution, resolution), generator=g)
  return ((pixels.to(dtype) / 255) - 0.5) * 2


@torch.no_grad()
def perturb(module, std=0.05, seed=1):
  """Move every parameter off its initial value (zero convs, identity couplings and actnorms
  make many layers trivially invertible), keeping the maps well conditioned."""
  g = torch.Generator().manual_seed(seed)
  for p in module.parameters():
    p.add_(std * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
  return module


def initialised(module, x):
  """Run x through once (actnorm's data-dependent init), then perturb."""
  with torch.no_grad():
    module(x)
  return perturb(module)


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def flow_layers(channels=4):
  torch.manual_seed(0)
  return {'actnorm': Glow.ActNorm(channels), 'invconv': Glow.InvConv(channels),
          'invconv_lu': Glow.InvConv(channels, lu=True),
          'affine': Glow.Coupling(channels, 6, affine=True),
          'additive': Glow.Coupling(channels, 6, affine=False),
          'step': Glow.FlowStep(channels, 6, lu=True)}


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_every_layer_inverts(dtype):
  x = torch.randn(3, 4, 4, 6, dtype=dtype)
  for name, layer in flow_layers().items():
    layer = initialised(layer.to(dtype), x)
    y, _ = layer(x)
    assert (y - x).abs().max() > 1e-3, name  # not the identity
    torch.testing.assert_close(layer.reverse(y), x, rtol=0, atol=TOL[dtype], msg=name)
  torch.testing.assert_close(Glow.unsqueeze(Glow.squeeze(x)), x, rtol=0, atol=0)
  split = perturb(Glow.SplitPrior(4).to(dtype))
  z1, z2, _ = split(x)
  torch.testing.assert_close(split.reverse(z1, z2), x, rtol=0, atol=0)


def test_squeeze_moves_each_2x2_block_into_channels():
  x = torch.arange(2 * 3 * 4 * 6.).view(2, 3, 4, 6)
  s = Glow.squeeze(x)
  assert s.shape == (2, 12, 2, 3)
  for c in range(3):
    for dy in range(2):
      for dx in range(2):
        torch.testing.assert_close(s[:, 4 * c + 2 * dy + dx], x[:, c, dy::2, dx::2])


def jacobian_logdet(fn, x):
  """log|det| of the Jacobian of fn (one image -> any shape or list of shapes), by autograd."""
  def flat(v):
    out = fn(v.view_as(x))
    return torch.cat([t.reshape(-1) for t in (out if isinstance(out, list) else [out])])
  jac = torch.autograd.functional.jacobian(flat, x.reshape(-1))
  assert jac.shape[0] == jac.shape[1]
  sign, logabsdet = torch.linalg.slogdet(jac)
  assert sign != 0
  return logabsdet


def test_every_layer_logdet_is_the_jacobian_slogdet():
  x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
  for name, layer in flow_layers().items():
    layer = initialised(layer.double(), torch.randn(4, 4, 3, 3, dtype=torch.float64))
    _, logdet = layer(x)
    expected = jacobian_logdet(lambda v: layer(v)[0], x)
    assert (abs(expected) < 1e-12) == (name == 'additive'), name  # volume-preserving
    torch.testing.assert_close(logdet.reshape(()), expected, rtol=1e-10, atol=1e-10, msg=name)
  assert abs(jacobian_logdet(Glow.squeeze, x[:, :, :2, :2])) < 1e-12  # a permutation


def test_lu_invconv_starts_as_a_rotation_and_logs_its_matrix():
  torch.manual_seed(0)
  conv = Glow.InvConv(6, lu=True).double()
  w = conv.matrix().detach()
  torch.testing.assert_close(w @ w.T, torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-6)
  perturb(conv)
  torch.testing.assert_close(conv.log_det(), torch.linalg.slogdet(conv.matrix())[1], rtol=1e-12,
                             atol=1e-12)


# ---------------------------------------------------------------------------------------------
# The whole flow
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('lu,coupling,ycond', COMBOS)
def test_whole_flow_inverts(lu, coupling, ycond, dtype):
  torch.manual_seed(0)
  flow = tiny(glow_lu=lu, glow_coupling=coupling, glow_ycond=ycond).to(dtype)
  x, y = images(4, dtype=dtype), torch.tensor([0, 1, 4, 2])
  with torch.no_grad():
    flow(images(4, dtype=dtype, seed=1), y)  # initialises actnorm
  perturb(flow)
  zs, objective = flow(x, y, dequantize=False)
  assert [tuple(z.shape[1:]) for z in zs] == flow.shapes == [(6, 4, 4), (24, 2, 2)]
  torch.testing.assert_close(flow.reverse(zs, y), x, rtol=0, atol=TOL[dtype])
  if ycond:  # the labels enter the top prior: other labels, another objective
    assert (flow(x, y.flip(0), dequantize=False)[1] - objective).abs().max() > 1e-6


def test_under_autocast_the_flow_path_stays_fp32_and_still_inverts():
  """Only the coupling networks autocast to bf16; they see the same half of the channels in both
  directions, so the inverse stays exact to fp32 rounding."""
  torch.manual_seed(0)
  flow = tiny()
  x = images(4)
  with torch.no_grad():
    flow(images(4, seed=1))
  perturb(flow)
  with torch.autocast('cpu', dtype=torch.bfloat16):
    zs, objective = flow(x, dequantize=False)
    assert objective.dtype == torch.float32 and all(z.dtype == torch.float32 for z in zs)
    torch.testing.assert_close(flow.reverse(zs), x, rtol=0, atol=1e-5)
  plain = flow(x, dequantize=False)[1]
  assert 1e-4 < (objective - plain).abs().max() < 2  # the networks did run in bf16


@pytest.mark.parametrize('lu,coupling', [(False, 'affine'), (True, 'additive')])
def test_whole_flow_logdet_is_the_jacobian_slogdet_and_objective_adds_the_priors(lu, coupling):
  torch.manual_seed(0)
  flow = tiny(resolution=4, glow_lu=lu, glow_coupling=coupling, n_bits_x=5).double()
  initialised(flow, images(6, 4, torch.float64))
  x = images(1, 4, torch.float64, seed=2)
  v = flow.preprocess(x, dequantize=False)
  zs, logdet, _ = flow.encode(v)
  expected = jacobian_logdet(lambda u: flow.encode(u)[0], v)
  torch.testing.assert_close(logdet.reshape(()), expected, rtol=1e-10, atol=1e-10)
  # objective = log|det| + the priors' Gaussian log-densities (scipy) - D log 2^n_bits
  # The split prior is conditioned on the half that flows on: that half from the flow's own pass
  # up to the split; z scored under each prior with scipy.
  log_prior = 0.
  h = Glow.squeeze(v)
  for step in flow.levels[0]:
    h = step(h)[0]
  mean, logs = flow.splits[0].prior(h[:, :6])
  log_prior += stats.norm.logpdf(zs[0].detach().numpy(), mean.detach().numpy(),
                                 np.exp(logs.detach().numpy())).sum()
  mean, logs = flow.top.prior(None, zs[1].shape)
  log_prior += stats.norm.logpdf(zs[1].detach().numpy(), mean.detach().numpy(),
                                 np.exp(logs.detach().numpy())).sum()
  _, objective = flow(x, dequantize=False)
  assert abs(objective.item() - (expected.item() + log_prior - 48 * math.log(32))) < 1e-9


def test_dequantised_input_lies_in_the_pixels_bin():
  flow = tiny(n_bits_x=5)
  pixels = torch.arange(256.).repeat(3, 1).view(1, 3, 16, 16)
  x = (pixels / 255 - 0.5) * 2
  for bits in (8, 5):
    flow.n_bits_x, flow.n_bins = bits, 2 ** bits
    bins = np.floor(pixels.numpy() / 2 ** (8 - bits))
    low, high = bins / 2 ** bits - 0.5, (bins + 1) / 2 ** bits - 0.5
    v = flow.preprocess(x).numpy()
    assert (v >= low).all() and (v < high).all() and v.std() > 0.25
    v = flow.preprocess(x, dequantize=False).numpy()  # exactly invertible, in the closed bin
    assert (v >= low - 1e-7).all() and (v <= high + 1e-7).all()


def test_untrained_bits_per_dim_on_uniform_noise():
  """Uniform pixels dequantised are v ~ U[-0.5, 0.5)^D (density 1). At init every coupling's
  network outputs 0 (zero last conv) and the priors are N(0, 1), so the flow is linear,
  z = M v + c, with actnorm standardising each channel on the init batch and rotations keeping
  the covariance I; the affine coupling scales its second half by s = sigmoid(2). For a linear
  Gaussian model E[-log p(v)] = H(v) + KL(v || N(mu, Sigma)) + KL(N(mu, Sigma) || model), with
  H(v) = 0, the first KL D/2 log(2 pi e / 12) (uniform vs moment-matched Gaussian, per
  independent dimension) and the second, per dimension scaled by s as the last coupling of its
  level did (all split-off dims and half the top: a fraction 1 - 2^-L), s^2/2 - 1/2 - log s.
  In bits: n_bits_x + those / log 2.
  Tolerance: a fresh batch of B images is scored, so the mean of z^2/2 over its B*D values has a
  standard deviation <= sqrt(0.5 / (B D)) (each z is a rotation of independent uniforms:
  var(z^2) <= 2, the Gaussian value, and the z^2 are not positively correlated); 4 of those.
  Plus the misfit of statistics taken from the finite init batch: a Gaussian whose mean and full
  covariance are fitted to n samples of C channels loses (C + 3) / (4 n) nats per dimension in
  expectation; allowed per level for the dimensions passing through it (the per-channel fits
  here lose less: about a sixth of it, over 12 seeds). Between affine and additive, on the same
  data and weights, only the s scaling differs: that difference is checked to 10% of itself."""
  B, R, L = 256, 8, 2
  D = 3 * R * R
  s = 1 / (1 + math.exp(-2))
  gap = 0.5 * math.log(2 * math.pi * math.e / 12)
  scale_gap = (1 - 2 ** -L) * (s * s / 2 - 0.5 - math.log(s))
  bias = sum(2 ** -level * (C + 3) / (4 * B * (R >> (level + 1)) ** 2)
             for level, C in enumerate([12, 24]))
  tol = (4 * math.sqrt(0.5 / (B * D)) + bias) / math.log(2)
  for bits in (8, 5):
    bpd = {}
    for coupling in ('affine', 'additive'):
      torch.manual_seed(0)
      flow = tiny(R, L, glow_coupling=coupling, n_bits_x=bits)
      with torch.no_grad():
        flow(images(B, R, seed=1))  # initialises actnorm
        bpd[coupling] = flow.bits_per_dim(flow(images(B, R, seed=2))[1]).mean().item()
    expected = bits + (gap + scale_gap) / math.log(2)
    assert abs(bpd['affine'] - expected) < tol, (bpd, expected, tol)
    assert abs(bpd['additive'] - (expected - scale_gap / math.log(2))) < tol, (bpd, tol)
    difference = bpd['affine'] - bpd['additive']
    assert abs(difference - scale_gap / math.log(2)) < 0.1 * scale_gap / math.log(2)


def test_samples_whose_inverse_overflows_come_out_finite():
  torch.manual_seed(0)
  flow = tiny(n_classes=0)
  with torch.no_grad():
    flow(images(8))
    for module in flow.modules():  # scale logits far below 0: the inverse divides by ~e^-200
      if isinstance(module, Glow.Coupling):
        module.net[-1].bias[module.net[-1].bias.shape[0] // 2:] = -200
  torch.manual_seed(1)
  raw = flow.decode(batch_size=4)
  assert not torch.isfinite(raw).all()  # the overflow happens ...
  torch.manual_seed(1)
  out = flow.reverse(batch_size=4)
  assert torch.isfinite(out).all() and out.abs().max() <= 1  # ... and is contained


def test_loss_adds_the_weighted_class_bits_and_sampling_follows_temperature():
  torch.manual_seed(0)
  flow = tiny(glow_ycond=True, glow_weight_y=0.5).double()
  x, y = images(4, dtype=torch.float64), torch.tensor([0, 1, 4, 2])
  with torch.no_grad():
    flow(x, y)
  perturb(flow)
  torch.manual_seed(3)
  out = flow.loss(x, y)
  torch.manual_seed(3)
  zs, objective = flow(x, y)
  logits = flow.top.class_logits(zs[-1]).detach().numpy()
  log_softmax = logits - special.logsumexp(logits, 1, keepdims=True)
  bits_y = -log_softmax[np.arange(4), y.numpy()].mean() / math.log(2)
  bpd = (-objective / (3 * 64 * math.log(2))).mean().item()
  assert abs(out['bits_y'].item() - bits_y) < 1e-12 and bits_y > 1e-3
  assert abs(out['loss'].item() - (bpd + 0.5 * bits_y)) < 1e-12
  # temperature 0: every latent is its prior's mean, the same for equal labels
  a = flow.reverse(None, torch.tensor([1, 1, 2]), temperature=0)
  assert torch.equal(a[0], a[1]) and not torch.equal(a[0], a[2])
  b = flow.reverse(None, torch.tensor([1, 1, 2]), temperature=0.7)
  assert not torch.equal(b[0], b[1]) and b.abs().max() <= 1
  with pytest.raises(ValueError, match='class-conditional'):
    flow.reverse(batch_size=2)


# ---------------------------------------------------------------------------------------------
# Actnorm's data-dependent initialisation
# ---------------------------------------------------------------------------------------------


def test_actnorm_standardises_the_init_batch_and_never_reinitialises_after_loading():
  x = 3 + 2 * torch.randn(16, 5, 4, 4) * torch.arange(1., 6.).view(1, 5, 1, 1)
  norm = Glow.ActNorm(5)
  y = norm(x)[0].detach().numpy()
  assert np.abs(y.mean((0, 2, 3))).max() < 1e-5
  assert np.abs(y.std((0, 2, 3)) - 1).max() < 1e-5
  other = Glow.ActNorm(5)
  other.load_state_dict(norm.state_dict())
  x2 = torch.randn(16, 5, 4, 4)
  torch.testing.assert_close(other(x2)[0], norm(x2)[0], rtol=0, atol=0)
  assert torch.equal(other.bias, norm.bias) and torch.equal(other.logs, norm.logs)
  # the whole flow: a loaded copy gives the original's output on a new batch, not its own init
  torch.manual_seed(0)
  flow = tiny()
  with torch.no_grad():
    flow(images(8))
  torch.manual_seed(5)
  copy = tiny()
  copy.load_state_dict(flow.state_dict())
  assert copy.initialized()
  new = images(8, seed=7) * 0.3
  torch.testing.assert_close(copy(new, dequantize=False)[1], flow(new, dequantize=False)[1])
  assert all(torch.equal(a, b) for a, b in zip(copy.state_dict().values(),
                                                flow.state_dict().values()))
  with pytest.raises(RuntimeError, match='seen no data'):
    tiny().reverse()


def test_folded_hidden_layers_equal_conv_then_scale():
  """The coupling network's conv + actnorm and the zero convs are computed as one convolution
  with the scale folded in: against the unfolded formulas."""
  x = torch.randn(4, 6, 5, 5, dtype=torch.float64)
  layer = Glow.ConvActNorm(6, 7, 3).double()
  y = layer(x).detach().numpy()  # initialises on x: zero mean, unit variance per channel
  assert np.abs(y.mean((0, 2, 3))).max() < 1e-9 and np.abs(y.std((0, 2, 3)) - 1).max() < 1e-5
  perturb(layer)
  b, logs = layer.norm.bias.detach().numpy(), layer.norm.logs.detach().numpy()
  h = F.conv2d(x, layer.conv.weight, padding=1).detach().numpy()
  np.testing.assert_allclose(layer(x).detach().numpy(), (h + b) * np.exp(logs), rtol=1e-12,
                             atol=1e-12)
  zeros = Glow.Conv2dZeros(6, 3, 3).double()
  assert not zeros(x).any()
  perturb(zeros)
  h = F.conv2d(x, zeros.weight, zeros.bias, padding=1).detach().numpy()
  scale = np.exp(3 * zeros.logs.detach().numpy())[:, None, None]
  np.testing.assert_allclose(zeros(x).detach().numpy(), h * scale, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('batch,channels_last', [(1, True), (2, False), (16, True)])
def test_float32_1x1_convolutions_in_onednn_match_float64(batch, channels_last):
  """Glow.conv sends float32 1x1 convolutions to oneDNN (PyTorch's own choice below batch 16 on
  one thread is its slower GEMM path): values and gradients against the float64 convolution."""
  gen = torch.Generator().manual_seed(3)
  x = torch.randn(batch, 24, 6, 5, generator=gen, dtype=torch.float64)
  w = torch.randn(9, 24, 1, 1, generator=gen, dtype=torch.float64) / 5
  b = torch.randn(9, generator=gen, dtype=torch.float64)
  g = torch.randn(batch, 9, 6, 5, generator=gen, dtype=torch.float64)
  xs = [x.clone().requires_grad_(), x.float().requires_grad_()]
  ws = [w.clone().requires_grad_(), w.float().requires_grad_()]
  bs = [b.clone().requires_grad_(), b.float().requires_grad_()]
  outs = []
  for i, dtype in enumerate([torch.float64, torch.float32]):
    inp = xs[i].contiguous(memory_format=torch.channels_last) if channels_last else xs[i]
    y = (F.conv2d if dtype == torch.float64 else Glow.conv)(inp, ws[i], bs[i], padding=0)
    assert y.dtype == dtype and y.shape == (batch, 9, 6, 5)
    (y * g.to(dtype)).sum().backward()
    outs.append([t.detach().double() for t in (y, xs[i].grad, ws[i].grad, bs[i].grad)])
  for ref, got in zip(*outs):
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
  with torch.backends.mkldnn.flags(enabled=False):  # the fallback: F.conv2d itself
    y = Glow.conv(x.float(), w.float(), b.float(), 0)
  np.testing.assert_allclose(y.double().numpy(), outs[0][0].numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('batch,channels_last', [(1, True), (3, False)])
def test_float32_thin_3x3_convolutions_as_shifted_taps_match_float64(batch, channels_last):
  """Without autograd Glow.conv computes a 3x3 convolution from many channels to few as a 1x1
  convolution to 9 x out channels whose taps are shifted and summed: against float64 F.conv2d,
  borders included; with autograd it is F.conv2d itself."""
  gen = torch.Generator().manual_seed(4)
  x = torch.randn(batch, 64, 7, 5, generator=gen, dtype=torch.float64)
  w = torch.randn(12, 64, 3, 3, generator=gen, dtype=torch.float64) / 20
  b = torch.randn(12, generator=gen, dtype=torch.float64)
  ref = F.conv2d(x, w, b, padding=1).numpy()
  xf = x.float().contiguous(memory_format=torch.channels_last) if channels_last else x.float()
  with torch.no_grad():
    y = Glow.conv(xf, w.float(), b.float(), 1)
  assert y.shape == (batch, 12, 7, 5)
  np.testing.assert_allclose(y.double().numpy(), ref, rtol=1e-4, atol=1e-4)
  wg = w.float().requires_grad_()
  y = Glow.conv(xf, wg, b.float(), (1, 1))
  y.sum().backward()
  np.testing.assert_allclose(y.detach().double().numpy(), ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(wg.grad.double().numpy(),
                             torch.func.grad(lambda v: F.conv2d(x, v, b, padding=1).sum())(w),
                             rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize('lu', [False, True])
def test_invconv_reverse_solves_for_few_pixels_as_the_inverse_does(lu):
  """With fewer pixels than channels InvConv.reverse solves W x = y instead of inverting W: the
  same x as the inverse (float64), and forward(reverse(y)) == y in float32."""
  torch.manual_seed(5)
  layer = Glow.InvConv(48, lu=lu).requires_grad_(False)
  perturb(layer)
  y = torch.randn(2, 48, 2, 3)  # 12 pixels < 48 channels
  x = layer.reverse(y)
  assert x.shape == y.shape and x.is_contiguous()
  w = layer.matrix().detach().double()
  expected = torch.einsum('oc,nchw->nohw', torch.linalg.inv(w), y.double())
  np.testing.assert_allclose(x.double().numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(layer(x)[0].detach().numpy(), y.numpy(), rtol=1e-4, atol=1e-4)
  many = torch.randn(2, 48, 6, 5)  # 60 pixels: the inverse itself
  np.testing.assert_allclose(layer.reverse(many).double().numpy(),
                             torch.einsum('oc,nchw->nohw', torch.linalg.inv(w), many.double()),
                             rtol=1e-5, atol=1e-5)


def init_on_rank(rank, store, out):
  dist.init_process_group('gloo', init_method='file://' + store, rank=rank, world_size=2)
  torch.set_num_threads(1)
  try:
    torch.manual_seed(0)
    flow = tiny().double()
    with torch.no_grad():
      flow(images(4, dtype=torch.float64, seed=10 + rank), dequantize=False)
    torch.save(flow.state_dict(), '%s.%d' % (out, rank))
  finally:
    dist.destroy_process_group()


def test_actnorm_init_is_identical_on_two_gloo_ranks_and_uses_both_batches(tmp_path):
  ctx = multiprocessing.get_context('fork')
  procs = [ctx.Process(target=init_on_rank, args=(r, str(tmp_path / 'store'),
                                                  str(tmp_path / 'out'))) for r in range(2)]
  for p in procs:
    p.start()
  for p in procs:
    p.join(60)
  assert [p.exitcode for p in procs] == [0, 0]
  ranks = [torch.load('%s.%d' % (tmp_path / 'out', r), weights_only=True) for r in range(2)]
  torch.manual_seed(0)
  whole = tiny().double()
  with torch.no_grad():
    whole(torch.cat([images(4, dtype=torch.float64, seed=10 + r) for r in range(2)]),
          dequantize=False)
  for key, value in whole.state_dict().items():
    assert torch.equal(ranks[0][key], ranks[1][key]), key
    torch.testing.assert_close(ranks[0][key], value, rtol=1e-9, atol=1e-12, msg=key)
  assert any('actnorm.bias' in k and v.abs().max() > 0.1 for k, v in ranks[0].items())


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def reversible_pair(dtype=torch.float64, depth=3, hidden=8, **options):
  """The same flow twice, plain and with glow_checkpoint (the reversible backward pass)."""
  pair = []
  for checkpoint in (False, True):
    torch.manual_seed(0)
    pair.append(tiny(depth=depth, hidden=hidden, glow_checkpoint=checkpoint, **options).to(dtype))
  return pair


def gradients(flow, x, y, requires=(), bf16=False):
  """d(loss)/d(parameters and the tensors in requires) of the flow's bits/dim on x without
  dequantisation noise (so float32 and float64 see the same input), plus the class bits; the
  forward pass under bf16 autocast with bf16, the backward pass never (as in training)."""
  with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
    zs, objective = flow(x, y, dequantize=False)
    loss = flow.bits_per_dim(objective).mean()
    if flow.ycond:
      loss = loss + F.cross_entropy(flow.top.class_logits(zs[-1]), y)
  names, params = zip(*[(n, p) for n, p in flow.named_parameters()] + list(requires))
  return dict(zip(names, torch.autograd.grad(loss, params)))


@pytest.mark.parametrize('lu,coupling,ycond', [(False, 'affine', True), (True, 'additive', False)])
def test_reversible_backward_gives_the_plain_initialisation_and_gradients_in_float64(lu, coupling,
                                                                                     ycond):
  """glow_checkpoint rebuilds each step's input from its output in the backward pass: the
  gradients of every parameter and of the input equal autograd's through the plain forward, in
  the first pass (actnorm initialising) and after the weights moved."""
  flows = reversible_pair(glow_lu=lu, glow_coupling=coupling, glow_ycond=ycond)
  x, y = images(4, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
  grads = []
  for flow in flows:
    torch.manual_seed(1)
    flow.loss(x, y)['loss'].backward()
    first = {n: p.grad for n, p in flow.named_parameters()}
    perturb(flow)
    v = x.clone().requires_grad_()
    grads.append((first, gradients(flow, v, y, [('input', v)])))
  states = [flow.state_dict() for flow in flows]
  for key in states[0]:
    torch.testing.assert_close(states[1][key], states[0][key], rtol=0, atol=0, msg=key)
  assert all(g.abs().max() > 0 for g in grads[0][1].values())  # after the first pass
  for plain, reversible in zip(*grads):
    for key in plain:
      torch.testing.assert_close(reversible[key], plain[key], rtol=1e-10, atol=1e-10, msg=key)


def test_reversible_backward_in_float32_and_bf16_autocast_is_as_accurate_as_the_plain_one():
  """float32: the rebuilt inputs are off by a few ulps (the inverse's rounding: reverse(forward(x))
  is exact to 1e-5, tests above), of the size of the rounding the plain pass's own float32
  forward already carries, so their gradients may be at most a small multiple (3x allowed; 0.97x
  here, 1.0-1.4x on other small models) as far from the float64 gradients as the plain float32
  ones (1.3e-6 here; bench/bench_glow.py measures trained models), each error the largest over
  the parameters of |difference| / max|float64 gradient|. Under bf16 autocast the coupling
  networks are recomputed in bf16 as in the forward pass (their inputs are the same but for those
  ulps), so the gradients stay far closer to the plain bf16 pass (3e-7 measured) than bf16 is to
  float32 (0.4); recomputed in float32 they would be 0.24 away."""
  plain, reversible = reversible_pair(torch.float32, glow_ycond=True)
  reference = reversible_pair(torch.float64, glow_ycond=True)[0]
  x, y = images(4), torch.tensor([0, 1, 2, 3])
  with torch.no_grad():
    reference(images(4, dtype=torch.float64, seed=1), y)
  perturb(reference)
  for flow in (plain, reversible):
    flow.load_state_dict({k: v.float() for k, v in reference.state_dict().items()})
  exact = gradients(reference, x.double(), y)

  def error(grads, against):
    return max(((grads[k].double() - against[k].double()).abs().max()
                / against[k].double().abs().max()).item() for k in grads)
  fp32 = [gradients(flow, x, y) for flow in (plain, reversible)]
  assert 0 < error(fp32[1], exact) < 3 * error(fp32[0], exact) < 1e-5
  bf16 = [gradients(flow, x, y, bf16=True) for flow in (plain, reversible)]
  assert error(bf16[1], bf16[0]) < 0.01 * error(bf16[0], fp32[0])


def test_reversible_forward_saves_nothing_per_step():
  """What autograd keeps for the backward pass (every tensor an op or ReversibleStep saves) does
  not grow with the depth under glow_checkpoint, and does without it."""
  def saved(depth, checkpoint):
    torch.manual_seed(0)
    flow = tiny(depth=depth, glow_checkpoint=checkpoint)
    x = images(4)
    with torch.no_grad():
      flow(x)
    sizes = []

    def pack(t):
      sizes.append(t.numel())
      return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
      loss = flow.loss(x)['loss']
    loss.backward()
    return sum(sizes)
  assert saved(1, True) == saved(4, True) < saved(1, False) < saved(4, False)


def test_training_on_shapes_lowers_held_out_bits_per_dim():
  data = datasets.Shapes(resolution=8, num_images=640)
  x = torch.stack([data[i][0] for i in range(len(data))])
  y = torch.as_tensor(data.labels)
  train, test = (x[:512], y[:512]), (x[512:], y[512:])
  torch.manual_seed(0)
  flow = tiny(levels=2, depth=2, hidden=16, n_classes=10, glow_ycond=True)

  def held_out():
    with torch.no_grad():
      torch.manual_seed(1)  # the same dequantisation noise each time
      return flow.bits_per_dim(flow(*test)[1]).mean().item()
  flow.loss(*train)  # initialise actnorm on a large batch
  before = held_out()
  optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
  for step in range(100):
    for group in optimizer.param_groups:
      group['lr'] = 3e-3 * min(1, (step + 1) / 30)  # warm-up
    batch = torch.randint(0, 512, (16,))
    loss = flow.loss(train[0][batch], train[1][batch])['loss']
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
  after = held_out()
  assert after < before - 1.0, (before, after)


def test_bad_options_are_one_line_user_errors():
  for options, match in [(dict(resolution=12, glow_levels=3), 'not divisible by 2\\^glow_levels'),
                         (dict(glow_coupling='volume'), 'glow_coupling volume is unknown'),
                         (dict(n_bits_x=9), 'n_bits_x must be 1 to 8'),
                         (dict(glow_depth=0), 'glow_depth must be at least 1'),
                         (dict(glow_ycond=True, n_classes=1), 'at least 2 classes')]:
    with pytest.raises(UserError, match=match) as e:
      Glow.Glow(**{'resolution': 32, 'n_classes': 10, **options})
    assert '\n' not in str(e.value)
