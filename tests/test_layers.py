"""layers.py: spectral norm against torch.linalg, attention against its written-out formula,
conditional and standing-statistics BN against the normalisation written out, and the folded
resampling against the separate ops."""
import os
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import layers
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, 'bench'))  # the functional oracle, shared with the benches
from biggan_reference import Ref  # noqa: E402


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


@pytest.mark.parametrize('dtype,layout', [(torch.float64, torch.contiguous_format),
                                          (torch.float32, torch.contiguous_format),
                                          (torch.float32, torch.channels_last)])
def test_attention_equals_the_plain_formula_with_gradients(dtype, layout):
  # The layer zero-pads theta and phi for the fused kernel; the scores, outputs and gradients
  # must still be those of softmax(theta^T phi) written out.
  torch.manual_seed(0)
  attn = layers.Attention(32).to(dtype)
  with torch.no_grad():
    attn.gamma.fill_(0.7)
  attn.eval()  # SN leaves u alone: both sides normalise by the same estimate
  x = torch.randn(2, 32, 8, 8, dtype=dtype).contiguous(memory_format=layout).requires_grad_()
  names = ['theta.weight', 'phi.weight', 'g.weight', 'o.weight', 'gamma']
  sd = {'a.' + k: v.clone().requires_grad_(k in names) for k, v in attn.state_dict().items()}
  out, expected = attn(x), Ref(sd, False, 1e-12, 1e-5).attention('a', x)
  tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
  torch.testing.assert_close(out, expected, **tol)
  assert out.is_contiguous(memory_format=layout)
  weight = torch.randn_like(out)
  params = dict(attn.named_parameters())
  grads = torch.autograd.grad((out * weight).sum(), [x] + [params[n] for n in names])
  expected_grads = torch.autograd.grad((expected * weight).sum(),
                                       [x] + [sd['a.' + n] for n in names])
  for name, got, want in zip(['x'] + names, grads, expected_grads):
    assert want.abs().sum() > 0, name
    torch.testing.assert_close(got, want, **tol, msg=lambda m: '%s: %s' % (name, m))


@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last])
def test_attention_runs_the_fused_kernel_on_cpu(layout):
  # Unequal head sizes or strided channels send SDPA to its math path, which stores the whole
  # attention map.
  x = torch.randn(1, 32, 8, 8).contiguous(memory_format=layout).requires_grad_()
  attn = layers.Attention(32)
  with torch.profiler.profile() as prof:
    attn(x).sum().backward()
  names = {e.key for e in prof.key_averages()}
  assert any('flash_attention' in n for n in names), sorted(n for n in names if 'attention' in n)
  assert not any('attention_math' in n for n in names)


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
  # Finishing turns the sums into the averages: same eval output, and training goes on from them
  # with momentum updates (the original kept summing).
  bn.finish_standing()
  assert not bn.accumulate_standing and bn.accumulation_counter.item() == 0
  torch.testing.assert_close(bn.stored_mean, mean)
  torch.testing.assert_close(bn(x, 1, 0), expected, rtol=1e-5, atol=1e-5)
  bn.train()
  bn(xs[0], 1, 0)
  torch.testing.assert_close(bn.stored_mean, 0.9 * mean + 0.1 * xs[0].mean([0, 2, 3]))
  assert bn.accumulation_counter.item() == 0


# ---------------------------------------------------------------------------------------------
# Folded resampling against the separate ops
# ---------------------------------------------------------------------------------------------

CONVS = {
    'SN 3x3': lambda: layers.SNConv2d(5, 7, kernel_size=3, padding=1),
    'plain 3x3': lambda: nn.Conv2d(5, 7, kernel_size=3, padding=1),
    'SN 1x1': lambda: layers.SNConv2d(5, 7, kernel_size=1, padding=0),
    'plain 1x1 no bias': lambda: nn.Conv2d(5, 7, kernel_size=1, bias=False),
    'dilated (not folded)': lambda: nn.Conv2d(5, 7, kernel_size=3, padding=2, dilation=2),
}


@pytest.mark.parametrize('kind', ['upsample', 'downsample'])
@pytest.mark.parametrize('conv_name', list(CONVS))
def test_folded_resampling_equals_the_separate_ops(kind, conv_name):
  """Output and every gradient of upsample_conv / conv_downsample equal the original's two ops
  (float64: any difference beyond rounding is a wrong tap)."""
  torch.manual_seed(0)
  conv = CONVS[conv_name]().double().eval()  # eval: SN leaves u alone, both runs see the same
  x = torch.randn(2, 5, 6, 8, dtype=torch.float64, requires_grad=True)
  pool = nn.AvgPool2d(2)
  if kind == 'upsample':
    run = lambda: layers.upsample_conv(layers.upsample_nearest2x, conv, x)  # noqa: E731
    expected = conv(F.interpolate(x, scale_factor=2))
  else:
    run = lambda: layers.conv_downsample(conv, pool, x)  # noqa: E731
    expected = F.avg_pool2d(conv(x), 2)
  out = run()
  assert out.shape == expected.shape
  torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
  weights = torch.randn_like(out)
  tensors = [x] + list(conv.parameters())
  got = torch.autograd.grad((out * weights).sum(), tensors)
  want = torch.autograd.grad((expected * weights).sum(), tensors)
  for a, b in zip(got, want):
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
  separate = (layers.upsample_conv(layers.upsample_nearest2x, conv, x, fold=False)
              if kind == 'upsample' else layers.conv_downsample(conv, pool, x, fold=False))
  assert torch.equal(separate, expected)  # switched off: literally the separate ops


def test_other_resampling_is_left_alone():
  conv = nn.Conv2d(3, 4, 3, padding=1)
  x = torch.randn(1, 3, 8, 8)
  assert torch.equal(layers.conv_downsample(conv, nn.MaxPool2d(2), x), F.max_pool2d(conv(x), 2))
  assert torch.equal(layers.upsample_conv(None, conv, x), conv(x))
  assert torch.equal(layers.conv_downsample(conv, None, x), conv(x))
