"""sampling.py: the truncation samplers against scipy, the z/y tensors, standing statistics with
the sampled z, slerp against its formula, labelled sheets, and G's batch and noise as train.py and
sample.py build them."""
import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn as nn
from PIL import Image

import BigGAN
import sampling
from conftest import make_config


def test_noise_has_z_var_as_standard_deviation_and_the_larger_batch():
  """--z_var is z's standard deviation, and G's batch is max(--G_batch_size, --batch_size)."""
  for G_batch, batch, expected in [(0, 6, 6), (4, 6, 6), (9, 6, 9)]:
    config = make_config('--z_var 3.0 --G_batch_size %d --batch_size %d' % (G_batch, batch))
    assert sampling.G_batch_size(config) == expected
  config = make_config('--z_var 3.0 --batch_size 4000')
  z_, y_ = sampling.prepare_noise(config, 16, 'cpu')
  assert z_.shape == (4000, 16) and y_.shape == (4000,)
  torch.manual_seed(0)
  z_.sample_()
  assert scipy.stats.kstest(z_.flatten().numpy(), scipy.stats.norm(scale=3.0).cdf).pvalue > 1e-3
  z, y = sampling.fixed_noise(5, 16, 10, 0, 'cpu', 3.0)
  again = sampling.fixed_noise(5, 16, 10, 0, 'cpu', 3.0)
  assert torch.equal(z, again[0]) and torch.equal(y, again[1])  # its own generator
  assert torch.equal(z, torch.randn(5, 16, generator=torch.Generator().manual_seed(0)) * 3.0)


def test_build_generator_copies_have_no_init_and_no_optimizer():
  config = make_config('--G_ch 4 --G_attn 0 --dim_z 16', model='BigGAN')
  G = sampling.build_generator(config, 'cpu')
  copy = sampling.build_generator(config, 'cpu', copy=True)
  assert isinstance(G, BigGAN.Generator) and hasattr(G, 'optim') and not hasattr(copy, 'optim')
  assert G.state_dict().keys() == copy.state_dict().keys()


@pytest.mark.parametrize('mode,t,bound,reference', [
    ('resample', 0.5, 0.5, scipy.stats.truncnorm(-0.5, 0.5)),
    ('resample', 1.7, 1.7, scipy.stats.truncnorm(-1.7, 1.7)),
    ('tfhub', 0.6, 1.2, scipy.stats.truncnorm(-2, 2, scale=0.6)),
    ('z_var', 0.3, None, scipy.stats.norm(scale=0.3)),
])
def test_truncation_samplers_follow_their_distributions(mode, t, bound, reference):
  z = torch.empty(200, 100)
  sampling.sample_truncated_(z, t, mode, generator=torch.Generator().manual_seed(0))
  values = z.double().flatten().numpy()
  if bound is not None:
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.99 * bound  # the whole range is used
  assert scipy.stats.kstest(values, reference.cdf).pvalue > 1e-3
  assert abs(values.std() - reference.std()) < 0.01 * reference.std()


def test_truncation_zero_and_the_distribution_tensor():
  for mode in ('resample', 'tfhub', 'z_var'):
    assert torch.equal(sampling.sample_truncated_(torch.ones(5, 3), 0.0, mode), torch.zeros(5, 3))
  z, y = sampling.prepare_z_y(64, 32, 10, device='cpu', z_var=2.0)
  z.set_truncation(0.25, 'resample')
  assert z.describe() == 'z ~ N(0, 1) resampled where |z| > 0.25'
  assert z.sample_().abs().max() <= 0.25 and z.draw(7, 32).abs().max() <= 0.25
  assert type(z.draw(7, 32)) is torch.Tensor and z.draw(7, 32).shape == (7, 32)
  z.set_truncation(0.5, 'tfhub')
  assert z.sample_().abs().max() <= 1.0 and z.abs().max() > 0.5
  # Without a truncation: z_var as before, also for sheets (draw).
  z.set_truncation(None)
  torch.manual_seed(1)
  z.sample_()
  torch.manual_seed(1)
  assert torch.equal(z, 2.0 * torch.randn(64, 32))
  assert torch.equal(z.draw(3, 32, generator=torch.Generator().manual_seed(2)),
                     2.0 * torch.randn(3, 32, generator=torch.Generator().manual_seed(2)))
  with pytest.raises(ValueError):
    z.set_truncation(0.5, 'clip')


class _RecordingG(nn.Module):
  """Just enough of a G for accumulate_standing_stats: records the z it is run on."""

  def __init__(self):
    super().__init__()
    self.shared = nn.Identity()
    self.seen = []

  def forward(self, z, y):
    self.seen.append(z.abs().max().item())


def test_standing_stats_are_accumulated_with_the_sampled_z():
  z, y = sampling.prepare_z_y(256, 8, 10, device='cpu')
  net = _RecordingG()
  sampling.accumulate_standing_stats(net, z.set_truncation(0.3, 'resample'), y, 10, 3)
  assert len(net.seen) == 3 and max(net.seen) <= 0.3
  sampling.accumulate_standing_stats(net, z.set_truncation(None), y, 10, 2)
  assert min(net.seen[3:]) > 2  # N(0, 1) again


def test_slerp_follows_the_great_circle():
  g = torch.Generator().manual_seed(0)
  x0, x1 = torch.randn(5, 1, 16, generator=g, dtype=torch.float64), torch.randn(
      5, 1, 16, generator=g, dtype=torch.float64)
  path = sampling.slerp(x0, x1, 6)
  assert path.shape == (5, 8, 16)
  torch.testing.assert_close(path[:, :1], x0)
  torch.testing.assert_close(path[:, -1:], x1)
  # The textbook formula, in numpy, per row.
  w = np.linspace(0, 1, 8)[:, None]
  for a, b, p in zip(x0[:, 0].numpy(), x1[:, 0].numpy(), path.numpy()):
    omega = np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    expected = (np.sin((1 - w) * omega) * a + np.sin(w * omega) * b) / np.sin(omega)
    np.testing.assert_allclose(p, expected, rtol=1e-10, atol=1e-12)
  # Unit endpoints stay on the sphere with equal angular steps; lerp cuts through it.
  u0, u1 = x0 / x0.norm(dim=-1, keepdim=True), x1 / x1.norm(dim=-1, keepdim=True)
  path = sampling.slerp(u0, u1, 6)
  torch.testing.assert_close(path.norm(dim=-1), torch.ones(5, 8, dtype=torch.float64))
  steps = (path[:, 1:] * path[:, :-1]).sum(-1)
  torch.testing.assert_close(steps, steps[:, :1].expand_as(steps))
  assert (sampling.interp(u0, u1, 6).norm(dim=-1)[:, 1:-1] < 1).all()
  # Parallel and zero endpoints fall back to lerp (no NaN).
  for a, b in [(u0, 3 * u0), (torch.zeros_like(u0), u1)]:
    torch.testing.assert_close(sampling.slerp(a, b, 6), sampling.interp(a, b, 6))


def test_slerp_sheets_of_a_G_without_shared_embedding(tmp_path):
  """Its class input is an index: not interpolable, it switches at the end (as with lerp)."""
  G = BigGAN.Generator(**make_config('--G_ch 4 --G_attn 0 --dim_z 16')).eval()
  y0, y1 = torch.tensor([[[1]], [[2]]]), torch.tensor([[[5]], [[6]]])
  assert torch.equal(sampling.slerp(y0, y1, 2), sampling.interp(y0, y1, 2))
  sampling.interp_sheet(G, 2, 2, 10, False, str(tmp_path), 'exp', 0, method='slerp')
  assert Image.open(tmp_path / 'exp' / '0' / 'interpZY0.jpg').size == (4 * 34 + 2, 2 * 34 + 2)


def test_labelled_sheet_is_the_plain_grid_plus_a_margin(tmp_path):
  images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
  sampling.save_grid(images, str(tmp_path / 'plain.png'), nrow=3)
  sampling.save_grid(images, str(tmp_path / 'labelled.png'), nrow=3,
                     row_labels=['red_circle', 'n01440764'])
  plain = np.asarray(Image.open(tmp_path / 'plain.png'))
  labelled = np.asarray(Image.open(tmp_path / 'labelled.png'))
  margin = labelled.shape[1] - plain.shape[1]
  assert labelled.shape[0] == plain.shape[0] and margin > 30
  np.testing.assert_array_equal(labelled[:, margin:], plain)
  for row in range(2):  # text in each row's band of the margin
    band = labelled[2 + row * 10: 2 + row * 10 + 8, :margin]
    assert (band > 128).any()


def test_distribution_tensors():
  z, y = sampling.prepare_z_y(6, 4, 3, device='cpu', z_var=2.0)
  torch.manual_seed(0)
  z.sample_()
  y.sample_()
  torch.manual_seed(0)
  assert torch.equal(z, torch.randn(6, 4) * 2.0)
  assert y.dtype == torch.int64 and 0 <= y.min() and y.max() < 3
  assert type(z[:2]) is torch.Tensor and type(z * 1) is torch.Tensor  # plain tensors out
