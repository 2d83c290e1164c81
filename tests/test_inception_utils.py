"""inception_utils: exact FID, IS, streaming statistics, the two networks, weights and moments."""
import hashlib
import os
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import torch
import torch.nn.functional as F
import torchvision

import errors
import inception_utils as iu


def _spd(rng, d, cond=10.):
  q, _ = np.linalg.qr(rng.standard_normal((d, d)))
  return (q * np.geomspace(1., cond, d)) @ q.T


def _eig_trace_sqrt(s1, s2):
  """Independent float64 reference: tr sqrt(S1^1/2 S2 S1^1/2) by symmetric eigendecompositions."""
  w, v = np.linalg.eigh(s1)
  root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  e = np.linalg.eigvalsh(root @ s2 @ root)
  return np.sqrt(np.clip(e, 0, None)).sum()


def _fid_from(mu1, s1, mu2, s2, trace_sqrt):
  diff = mu1 - mu2
  return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt


# ---------------------------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------------------------


def test_fid_of_a_set_with_itself_is_zero():
  rng = np.random.default_rng(0)
  for n in (500, 30):  # full rank and rank-deficient
    x = np.maximum(rng.standard_normal((n, 64)) @ rng.standard_normal((64, 64)), 0)
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    fid = iu.numpy_calculate_frechet_distance(mu, sigma, mu, sigma)
    assert abs(fid) < 1e-10 * np.trace(sigma)


def test_fid_closed_form_gaussians():
  rng = np.random.default_rng(1)
  d = 48
  a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  q, _ = np.linalg.qr(rng.standard_normal((d, d)))  # commuting covariances, any basis
  for s1, s2 in [(np.diag(a), np.diag(b)), ((q * a) @ q.T, (q * b) @ q.T)]:
    assert iu.numpy_calculate_frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected,
                                                                                  rel=1e-12)
  # Scalars: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2.
  assert iu.numpy_calculate_frechet_distance(1., 4., 3., 9.) == pytest.approx(4. + 1., rel=1e-12)


def test_fid_matches_scipy_sqrtm_on_well_conditioned_pairs():
  rng = np.random.default_rng(2)
  for d in (8, 64, 128):
    s1, s2 = _spd(rng, d), _spd(rng, d, cond=50.)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    reference = _fid_from(mu1, s1, mu2, s2, np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)
    assert iu.numpy_calculate_frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference,
                                                                                  rel=1e-9)


def test_fid_rank_deficient_is_finite_and_matches_eigen_reference():
  rng = np.random.default_rng(3)
  d = 96
  proj = rng.standard_normal((d, d))
  for n1, n2 in [(40, 60), (20, 500), (500, 20)]:
    x = np.maximum(rng.standard_normal((n1, d)) @ proj, 0)
    y = np.maximum(rng.standard_normal((n2, d)) @ proj + 0.5, 0)
    mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    with warnings.catch_warnings():
      warnings.simplefilter('error')  # rank deficiency is legitimate: no warning
      fid = iu.numpy_calculate_frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(fid)
    assert fid == pytest.approx(_fid_from(mu1, s1, mu2, s2, _eig_trace_sqrt(s1, s2)), rel=1e-6)
    # Exact reference from the data: tr sqrt(A^T A B^T B) = nuclear norm of B A^T.
    a = (x - mu1) / np.sqrt(n1 - 1)
    b = (y - mu2) / np.sqrt(n2 - 1)
    exact = np.linalg.svd(b @ a.T, compute_uv=False).sum()
    assert fid == pytest.approx(_fid_from(mu1, s1, mu2, s2, exact), rel=1e-9)


def test_torch_fid_agrees_and_follows_device():
  rng = np.random.default_rng(4)
  s1, s2 = _spd(rng, 32), _spd(rng, 32)
  mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
  expected = iu.numpy_calculate_frechet_distance(mu1, s1, mu2, s2)
  args = [torch.tensor(a, dtype=torch.float32) for a in (mu1, s1, mu2, s2)]
  fid = iu.torch_calculate_frechet_distance(*args)
  assert fid.dtype == torch.float64 and fid.device == args[0].device and fid.dim() == 0
  assert float(fid) == pytest.approx(expected, rel=1e-5)  # float32 inputs


def test_fid_degenerate_inputs_warn():
  rng = np.random.default_rng(5)
  s = _spd(rng, 16)
  mu = np.zeros(16)
  bad = s.copy()
  bad[0, 0] = -1.
  with pytest.warns(RuntimeWarning, match='positive semi-definite'):
    iu.numpy_calculate_frechet_distance(mu, bad, mu, s)
  with pytest.warns(RuntimeWarning, match='positive semi-definite'):
    iu.numpy_calculate_frechet_distance(mu, s, mu, s - 2 * np.eye(16))
  nan = s.copy()
  nan[3, 4] = np.nan
  with pytest.warns(RuntimeWarning, match='non-finite'):
    assert np.isnan(iu.numpy_calculate_frechet_distance(mu, nan, mu, s))
  with pytest.raises(ValueError):
    iu.numpy_calculate_frechet_distance(mu, s, mu[:8], s[:8, :8])
  assert iu.numpy_calculate_frechet_distance(mu, 0 * s, mu, s) == pytest.approx(np.trace(s))


def test_newton_schulz_and_torch_cov_compatibility():
  rng = np.random.default_rng(6)
  s = _spd(rng, 16, cond=5.)
  root = iu.sqrt_newton_schulz(torch.tensor(s)[None], 50)[0].numpy()
  np.testing.assert_allclose(root, scipy.linalg.sqrtm(s).real, rtol=1e-8, atol=1e-8)
  x = torch.tensor(rng.standard_normal((50, 7)))
  kept = x.clone()
  np.testing.assert_allclose(iu.torch_cov(x).numpy(), np.cov(kept.numpy(), rowvar=False),
                             rtol=1e-12)
  assert torch.equal(x, kept)  # the original's version centred its input in place


# ---------------------------------------------------------------------------------------------
# IS and streaming statistics
# ---------------------------------------------------------------------------------------------


def _reference_is(pred, splits):
  """The papers' formula, split boundaries i*N//splits."""
  scores = []
  n = len(pred)
  for i in range(splits):
    part = pred[i * n // splits:(i + 1) * n // splits]
    py = part.mean(0, keepdims=True)
    scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), 1))))
  return np.mean(scores), np.std(scores)


def test_inception_score_closed_forms_and_reference():
  assert iu.calculate_inception_score(np.full((100, 1000), 1e-3)) == pytest.approx((1., 0.))
  onehot = np.eye(10)[np.arange(100) % 10]  # every split holds each class once
  assert iu.calculate_inception_score(onehot, 10) == pytest.approx((10., 0.), rel=1e-12)
  rng = np.random.default_rng(7)
  pred = rng.dirichlet(np.full(20, 0.3), size=103)
  np.testing.assert_allclose(iu.calculate_inception_score(pred, 10), _reference_is(pred, 10),
                             rtol=1e-12)


def test_streaming_stats_equal_one_shot_reference():
  rng = np.random.default_rng(8)
  n, d, classes = 157, 12, 9
  feats = (np.maximum(rng.standard_normal((n, d)), 0) + 3.).astype(np.float32)
  logits = rng.standard_normal((n, classes)).astype(np.float32) * 3
  stats = iu.InceptionStats(n, num_splits=10)
  start = 0
  for size in (1, 50, 7, 64, 35):  # uneven batches crossing split boundaries
    stats.update(torch.from_numpy(feats[start:start + size]),
                 torch.from_numpy(logits[start:start + size]))
    start += size
  assert stats.count == n
  mu, sigma = stats.moments()
  np.testing.assert_allclose(mu, feats.astype(np.float64).mean(0), rtol=1e-13)
  np.testing.assert_allclose(sigma, np.cov(feats.astype(np.float64), rowvar=False),
                             rtol=1e-10, atol=1e-12)
  probs = scipy.special.softmax(logits.astype(np.float64), axis=1)
  np.testing.assert_allclose(stats.inception_score(), _reference_is(probs, 10), rtol=1e-10)
  with pytest.raises(ValueError):
    stats.update(torch.from_numpy(feats[:1]), torch.from_numpy(logits[:1]))


def test_shuffled_splits_score_a_permutation():
  onehot = np.eye(10)[np.repeat(np.arange(10), 10)]  # label-ordered: every split is one class
  assert iu.calculate_inception_score(onehot, 10) == pytest.approx((1., 0.))
  pred = 0.9 * onehot + 0.01
  stats = iu.InceptionStats(100, 10, shuffle_seed=3)
  stats.update(log_probs=torch.tensor(np.log(pred)))
  order = torch.randperm(100, generator=torch.Generator().manual_seed(3)).numpy()
  shuffled = np.empty_like(pred)
  shuffled[order] = pred  # image j goes to position order[j]
  np.testing.assert_allclose(stats.inception_score(), _reference_is(shuffled, 10), rtol=1e-12)
  assert stats.inception_score()[0] > 2 * iu.calculate_inception_score(pred, 10)[0]


def test_few_samples_warn_and_one_sample_is_an_error():
  stats = iu.InceptionStats(5)
  stats.update(torch.rand(5, 8))
  with pytest.warns(RuntimeWarning, match='rank-deficient'):
    stats.moments()
  one = iu.InceptionStats(1)
  one.update(torch.rand(1, 8))
  with pytest.raises(errors.UserError):
    one.moments()


def test_quantize_images_rounds_to_uint8_levels():
  levels = torch.arange(256, dtype=torch.float32)
  x = levels / 127.5 - 1 + torch.empty(256).uniform_(-0.49, 0.49) / 127.5
  q = iu.quantize_images(x.view(1, 1, 16, 16)).flatten()
  assert torch.allclose((q + 1) * 127.5, levels, atol=1e-4)
  assert torch.equal(iu.quantize_images(torch.tensor([-3., 5.])), torch.tensor([-1., 1.]))
  u8 = torch.tensor([0, 128, 255], dtype=torch.uint8)
  assert torch.allclose(iu.quantize_images(u8), u8.float() / 127.5 - 1)
  assert iu.quantize_images(x.half()).dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


def _tf1_resize_loops(img, out_h, out_w):
  """TF 1.x ResizeBilinear (align_corners=False) written out per pixel."""
  in_h, in_w = img.shape
  out = np.zeros((out_h, out_w))
  sy, sx = np.float32(in_h) / np.float32(out_h), np.float32(in_w) / np.float32(out_w)
  for i in range(out_h):
    y = np.float32(i) * sy
    y0, y1 = int(np.floor(y)), min(int(np.ceil(y)), in_h - 1)
    for j in range(out_w):
      x = np.float32(j) * sx
      x0, x1 = int(np.floor(x)), min(int(np.ceil(x)), in_w - 1)
      top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * (x - x0)
      bottom = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * (x - x0)
      out[i, j] = top + (bottom - top) * (y - y0)
  return out


def test_tf1_resize_matches_per_pixel_reference():
  rng = np.random.default_rng(10)
  for (h, w), (oh, ow) in [((5, 7), (9, 4)), ((32, 32), (299, 299)), ((8, 8), (24, 24))]:
    img = rng.uniform(0, 255, (h, w))
    out = iu.tf1_resize_bilinear(torch.tensor(img).view(1, 1, h, w), (oh, ow))[0, 0].numpy()
    np.testing.assert_allclose(out, _tf1_resize_loops(img, oh, ow), rtol=1e-6, atol=1e-4)
  img = torch.rand(2, 3, 8, 8)  # integer upscaling: every 3rd output pixel is an input pixel
  assert torch.allclose(iu.tf1_resize_bilinear(img, (24, 24))[:, :, ::3, ::3], img, atol=1e-6)


def _bicubic_matrix(n_in, n_out, a=-0.5):
  """PIL's bicubic resampling (Keys kernel a = -0.5, pixel centres (i + 0.5) * n_in / n_out,
  weights renormalised where the window leaves the image) as an n_out x n_in matrix."""
  def kernel(x):
    x = abs(x)
    return (((a + 2) * x - (a + 3)) * x * x + 1 if x < 1 else
            (((x - 5) * x + 8) * x - 4) * a if x < 2 else 0.)
  scale = n_in / n_out
  support = 2. * max(scale, 1.)
  w = np.zeros((n_out, n_in))
  for i in range(n_out):
    centre = (i + 0.5) * scale
    lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
    taps = [kernel((j - centre + 0.5) / max(scale, 1.)) for j in range(lo, hi)]
    w[i, lo:hi] = np.array(taps) / sum(taps)
  return w


def test_resize_policies():
  assert [iu.resize_policy(n) for n in ('tf', 'torchvision')] == ['tf', 'torch']
  assert iu.resize_policy('tf', 'clean') == 'clean'
  with pytest.raises(errors.UserError, match='--inception_resize'):
    iu.resize_policy('tf', 'lanczos')
  x = iu.quantize_images(torch.rand(2, 3, 16, 12) * 2 - 1)
  # clean-fid's: bicubic on the 0..255 levels of each channel, clipped.
  levels = ((x.double() + 1) * 127.5).numpy()
  expected = np.clip(_bicubic_matrix(16, 299) @ levels @ _bicubic_matrix(12, 299).T, 0, 255)
  clean = iu.resize_images(x, 'clean')
  assert clean.shape == (2, 3, 299, 299) and clean.dtype == torch.float32
  np.testing.assert_allclose((clean.double().numpy() + 1) * 127.5, expected, atol=2e-3)
  assert torch.allclose(iu.resize_images(x, 'torch'), F.interpolate(
      x, (299, 299), mode='bilinear', align_corners=True))
  assert torch.allclose(iu.resize_images(x, 'tf'), iu.tf1_resize_bilinear(x, (299, 299)))
  big = torch.rand(1, 3, 299, 299)
  assert all(iu.resize_images(big, p) is big for p in iu.RESIZE_POLICIES)


_random_weights = iu.save_random_weights  # the name the other test files import


def _pytorch_fid_layout():
  """pytorch-fid's FID Inception: torchvision's Inception3, 1008 classes, no aux head."""
  net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False,
                                        init_weights=False)
  return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_tf_network_has_the_pytorch_fid_state_dict():
  layout = {k: tuple(v.shape) for k, v in iu.TFInception().state_dict().items()}
  assert layout == _pytorch_fid_layout()
  assert layout['Conv2d_1a_3x3.conv.weight'] == (32, 3, 3, 3)
  assert layout['Mixed_7c.branch_pool.conv.weight'] == (192, 2048, 1, 1)
  assert layout['fc.weight'] == (1008, 2048) and layout['fc.bias'] == (1008,)
  assert not any(k.startswith('AuxLogits') for k in layout)


def test_tf_network_loads_weights_and_gives_unbiased_logits(tmp_path):
  path = str(tmp_path / 'pt_inception.pth')
  reference = _random_weights('tf', path)
  # A file without BN counters (older PyTorch) loads too.
  stripped = {k: v for k, v in torch.load(path).items() if 'num_batches_tracked' not in k}
  torch.save(stripped, str(tmp_path / 'stripped.pth'))
  for weights in (path, str(tmp_path / 'stripped.pth')):
    net = iu.load_inception_net(network='tf', weights=weights, device='cpu')
    for k, v in reference.state_dict().items():
      assert torch.equal(net.state_dict()[k], v), k
  x = torch.rand(1, 3, 32, 32) * 2 - 1
  with torch.no_grad():
    pool, logits = net(x)
    # The graph's own input pipeline: 0..255 pixels, TF resize, (p - 128) / 128.
    pixels = iu.tf1_resize_bilinear((x + 1) * 127.5, (299, 299))
    expected = iu._pool_features(reference, (pixels - 128) / 128)
  assert pool.shape == (1, 2048) and logits.shape == (1, 1008)
  assert torch.allclose(pool, expected, rtol=1e-4, atol=1e-5)
  assert pool.abs().mean() > 1e-3
  assert torch.allclose(logits, pool @ net.fc.weight.T, rtol=1e-5, atol=1e-5)
  assert not torch.allclose(logits, net.fc(pool), atol=1e-3)


def test_tf_blocks_pool_like_tensorflow():
  torch.manual_seed(0)
  block = iu._TFInceptionA(8, pool_features=4).eval()
  plain = torchvision.models.inception.InceptionA(8, pool_features=4).eval()
  plain.load_state_dict(block.state_dict())
  x = torch.rand(1, 8, 5, 5)
  with torch.no_grad():
    ours, theirs = block(x), plain(x)
    pool_branch = block.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
  assert torch.equal(ours[:, :-4], theirs[:, :-4])  # only the pool branch differs
  assert torch.allclose(ours[:, -4:], pool_branch)
  e2 = iu.TFInception().Mixed_7c.eval()
  x = torch.rand(1, 2048, 3, 3)
  with torch.no_grad():
    assert torch.allclose(e2(x)[:, -192:],
                          e2.branch_pool(F.max_pool2d(x, 3, 1, 1)), atol=1e-6)


def test_torchvision_network_matches_the_original_preprocessing(tmp_path):
  path = str(tmp_path / 'tv.pth')
  reference = _random_weights('torchvision', path)
  # torchvision's own file also holds the aux head: it must load as well.
  aux = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
  aux.load_state_dict(reference.state_dict(), strict=False)
  torch.save(aux.state_dict(), str(tmp_path / 'with_aux.pth'))
  net = iu.load_inception_net(network='torchvision', weights=str(tmp_path / 'with_aux.pth'),
                              device='cpu')
  assert isinstance(net, iu.WrapInception)
  x = torch.rand(2, 3, 32, 32) * 2 - 1
  mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
  with torch.no_grad():
    pool, logits = net(x)
    y = F.interpolate(((x + 1) / 2 - mean) / std, size=(299, 299), mode='bilinear',
                      align_corners=True)
    expected = reference(y)  # torchvision's own forward, eval mode
  assert pool.shape == (2, 2048) and logits.shape == (2, 1000)
  assert torch.allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_weight_errors_are_user_errors(tmp_path, monkeypatch):
  with pytest.raises(errors.UserError, match='does not exist'):
    iu.load_inception_net(network='tf', weights=str(tmp_path / 'missing.pth'), device='cpu')
  (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
  with pytest.raises(errors.UserError, match='cannot read'):
    iu.load_inception_net(network='tf', weights=str(tmp_path / 'junk.pth'), device='cpu')
  torch.save({'fc.weight': torch.zeros(1008, 2048)}, str(tmp_path / 'partial.pth'))
  with pytest.raises(errors.UserError, match='--inception_net tf'):
    iu.load_inception_net(network='tf', weights=str(tmp_path / 'partial.pth'), device='cpu')
  tv = iu._build('torchvision')
  torch.save(tv.state_dict(), str(tmp_path / 'tv.pth'))  # fc is 1000-way: wrong network
  with pytest.raises(errors.UserError, match='--inception_net tf'):
    iu.load_inception_net(network='tf', weights=str(tmp_path / 'tv.pth'), device='cpu')
  with pytest.raises(errors.UserError, match='unknown Inception network'):
    iu.load_inception_net(network='tf2')
  # No weights file and no way to download: the offline error names the way out.
  monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'hub'))
  monkeypatch.setitem(iu.WEIGHTS_URLS, 'tf', (tmp_path / 'nowhere-12345678.pth').as_uri())
  with pytest.raises(errors.UserError, match='--inception_weights PATH'):
    iu.load_inception_net(network='tf', device='cpu')


def test_weights_download_into_the_hub_cache(tmp_path, monkeypatch):
  served = tmp_path / 'served.pth'
  reference = _random_weights('tf', str(served), seed=1)
  digest = hashlib.sha256(served.read_bytes()).hexdigest()[:8]
  named = tmp_path / ('pt_inception-test-%s.pth' % digest)  # hub checks this hash prefix
  os.rename(served, named)
  monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'hub'))
  monkeypatch.setitem(iu.WEIGHTS_URLS, 'tf', named.as_uri())
  net = iu.load_inception_net(network='tf', device='cpu')
  cached = tmp_path / 'hub' / 'hub' / 'checkpoints' / named.name
  assert cached.is_file()
  assert torch.equal(net.fc.weight, reference.fc.weight)
  os.remove(named)  # now served from the cache
  net = iu.load_inception_net(network='tf', device='cpu')
  assert torch.equal(net.fc.weight, reference.fc.weight)
  assert iu.WEIGHTS_URLS['torchvision'].endswith('inception_v3_google-0cc3c7bd.pth')


def test_real_download_urls():
  # monkeypatch.setitem restores these after the tests above; they must stay the real ones.
  assert iu.WEIGHTS_URLS == {
      'torchvision': 'https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth',
      'tf': 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
            'pt_inception-2015-12-05-6726825d.pth'}


# ---------------------------------------------------------------------------------------------
# Moments files
# ---------------------------------------------------------------------------------------------


def _config(tmp_path, network='torchvision', **kw):
  return dict(dataset='Shapes', resolution=32, data_root=str(tmp_path / 'data'),
              inception_net=network, inception_weights='', **kw)


def test_moments_names_and_search_order(tmp_path, monkeypatch):
  assert iu.moments_filename('I128') == 'I128_inception_moments.npz'
  assert iu.moments_filename('I128', 'tf') == 'I128_inception_moments_tf.npz'
  assert iu.moments_filename('I128', 'torchvision', 'torch') == 'I128_inception_moments.npz'
  assert iu.moments_filename('I128', 'tf', 'clean') == 'I128_inception_moments_tf_clean.npz'
  monkeypatch.chdir(tmp_path)
  config = _config(tmp_path, 'tf')
  assert iu.moments_path(config) == os.path.join(config['data_root'],
                                                 'Shapes32_inception_moments_tf.npz')
  mu, sigma = np.arange(2048.), np.eye(2048)
  # The original's place, the working directory, without the new keys.
  np.savez('Shapes32_inception_moments.npz', mu=mu, sigma=sigma)
  got = iu.load_moments(_config(tmp_path))
  assert np.array_equal(got[0], mu) and np.array_equal(got[1], sigma)
  assert got[2] == 'Shapes32_inception_moments.npz'
  iu.save_moments(iu.moments_path(config), mu + 1, sigma, 'tf', 10)  # data_root wins
  got = iu.load_moments(config)
  assert np.array_equal(got[0], mu + 1) and got[2] == iu.moments_path(config)
  assert not os.path.exists(iu.moments_path(config) + '.tmp')


def test_moments_errors_name_the_command(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = _config(tmp_path, 'tf', )
  config['inception_weights'] = 'w.pth'
  with pytest.raises(errors.UserError) as e:
    iu.load_moments(config)
  assert ('python calculate_inception_moments.py --dataset Shapes --data_root %s --resolution 32 '
          '--inception_net tf --inception_weights w.pth' % config['data_root']) in str(e.value)
  with pytest.raises(errors.UserError, match='no Inception moments'):
    iu.prepare_inception_metrics('Shapes', False, data_root=config['data_root'], resolution=32)
  os.makedirs(config['data_root'])
  iu.save_moments(iu.moments_path(config), np.zeros(2048), np.eye(2048), 'torchvision', 10)
  with pytest.raises(errors.UserError, match='torchvision network'):
    iu.load_moments(config)
  iu.save_moments(iu.moments_path(config), np.zeros(64), np.eye(64), 'tf', 10)
  with pytest.raises(errors.UserError, match='2048 features'):
    iu.load_moments(config)
  clean = dict(config, inception_resize='clean')  # its own file, which records the policy
  iu.save_moments(iu.moments_path(clean), np.zeros(2048), np.eye(2048), 'tf', 10, 'clean')
  assert iu.moments_path(clean).endswith('Shapes32_inception_moments_tf_clean.npz')
  assert iu.load_moments(clean)[2] == iu.moments_path(clean)
  os.replace(iu.moments_path(clean), iu.moments_path(config))
  with pytest.raises(errors.UserError, match=r'tf network \(clean resize\).*--inception_resize'):
    iu.load_moments(dict(config, inception_resize='tf'))
  with open(iu.moments_path(config), 'wb') as f:
    f.write(b'garbage')
  with pytest.raises(errors.UserError, match='cannot read'):
    iu.load_moments(config)
