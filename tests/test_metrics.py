"""metrics.py on synthetic features, each metric against a float64 re-derivation written here:
KID with the kernel written out (and one subset of all N = the full unbiased MMD^2), PR and DC
against brute-force k-NN, IFID = the mean of per-class FIDs, IS and FID as inception_utils
computes them; the registry; the one pass with a cheap network: independent of the batch size
and of the number of ranks (2 gloo ranks = 1); the reference cache."""
import multiprocessing
import os
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import torch
import torch.distributed as dist
import torch.nn as nn

import errors
import inception_utils as iu
import metrics
from test_distributed import free_port

CONFIG = {'kid_subsets': 4, 'kid_subset_size': 20}


def gaussians(n, m, d=8, seed=0):
  """Toy features: REF ~ N(0, I), SOURCE ~ N(0.4, 1.3^2 I), float32."""
  rng = np.random.default_rng(seed)
  real = rng.standard_normal((m, d)).astype(np.float32)
  fake = (0.4 + 1.3 * rng.standard_normal((n, d))).astype(np.float32)
  return fake, real


def kernel(x, y):
  """k(x, y) = (x.y / d + 1)^3, element by element in float64."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return np.array([[(np.dot(a, b) / len(a) + 1) ** 3 for b in y] for a in x])


def mmd2_reference(x, y):
  """Binkowski et al.'s unbiased estimator: means over i != j within, all pairs across."""
  m = len(x)
  off = ~np.eye(m, dtype=bool)
  return kernel(x, x)[off].mean() + kernel(y, y)[off].mean() - 2 * kernel(x, y).mean()


# ---------------------------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------------------------


def test_kid_equals_the_kernel_written_out_on_seeded_subsets():
  fake, real = gaussians(60, 50)
  rng = np.random.RandomState(metrics.KID_SEED)  # subsets: SOURCE's, then REF's, each time
  expected = []
  for _ in range(CONFIG['kid_subsets']):
    a = fake[rng.choice(60, 20, replace=False)]
    b = real[rng.choice(50, 20, replace=False)]
    expected.append(mmd2_reference(a, b))
  mean, std = metrics.kid(torch.from_numpy(fake), torch.from_numpy(real), 4, 20)
  assert mean == pytest.approx(np.mean(expected), rel=1e-5)
  assert std == pytest.approx(np.std(expected), rel=1e-4)
  assert mean > 2 * std > 0  # the shifted set is measurably apart


def test_kid_of_one_subset_of_all_images_is_the_full_unbiased_mmd():
  fake, real = gaussians(30, 30, seed=1)
  mean, std = metrics.kid(torch.from_numpy(fake), torch.from_numpy(real), 1, 30)
  assert mean == pytest.approx(mmd2_reference(fake, real), rel=1e-5) and std == 0
  # Unbiased: two samples of one distribution score about 0, possibly below.
  same = gaussians(30, 30, seed=2)[1]
  assert abs(metrics.kid(torch.from_numpy(real), torch.from_numpy(same), 1, 30)[0]) < 0.2 * mean


# ---------------------------------------------------------------------------------------------
# Precision, recall, density, coverage
# ---------------------------------------------------------------------------------------------


def brute_force(fake, real):
  """The four values from full float64 distance matrices (authors' comparisons: <= for PR,
  < for DC); k-th neighbour = column k of each sorted row, column 0 being the point itself."""
  fake, real = fake.astype(np.float64), real.astype(np.float64)
  cross = scipy.spatial.distance.cdist(fake, real)
  r_real = np.sort(scipy.spatial.distance.cdist(real, real), 1)
  r_fake = np.sort(scipy.spatial.distance.cdist(fake, fake), 1)[:, 3]
  r3, r5 = r_real[:, 3], r_real[:, 5]
  return {'precision': (cross <= r3[None]).any(1).mean(),
          'recall': (cross <= r_fake[:, None]).any(0).mean(),
          'density': (cross < r5[None]).sum() / (5. * len(fake)),
          'coverage': (cross.min(0) < r5).mean()}


def test_knn_distances_in_blocks_equal_sorted_brute_force():
  x = gaussians(1, 53, d=6, seed=3)[1]
  full = np.sort(scipy.spatial.distance.cdist(x, x, 'sqeuclidean'), 1)[:, 1:6]
  for block in (7, 53, 4096):  # diagonal and off-diagonal blocks, uneven edges, one block
    got = metrics.knn_sq_distances(torch.from_numpy(x), 5, block=block).numpy()
    np.testing.assert_allclose(got, full, rtol=1e-5, atol=1e-5)


def test_pr_and_dc_equal_brute_force_knn_in_any_blocks():
  fake, real = gaussians(90, 110, d=5, seed=4)
  expected = brute_force(fake, real)
  assert all(0.2 < v < 1 for v in expected.values())  # neither all nor nothing
  f, r = torch.from_numpy(fake), torch.from_numpy(real)
  for block in (16, 4096):
    got = metrics.manifold_scores(f, r, metrics.knn_sq_distances(r, 5, block),
                                  metrics.knn_sq_distances(f, 3, block), block=block)
    assert got == pytest.approx(expected, abs=1e-12)
  # Through the registry: PR and DC alone, or both from one pass.
  ref = metrics.Reference('toy', len(real), features=r, labels=torch.zeros(len(real)).long())
  source = metrics.Collection(None, f)
  for names in (['PR'], ['DC'], ['PR', 'DC']):
    got = metrics.compute(names, source, ref, CONFIG)
    assert set(got) == set(metrics.value_keys(names))
    assert got == pytest.approx({k: expected[k] for k in got}, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# IS, FID, IFID
# ---------------------------------------------------------------------------------------------


def fid_reference(x, y):
  """FID from numpy moments and scipy's matrix square root, float64."""
  x, y = x.astype(np.float64), y.astype(np.float64)
  mu1, mu2 = x.mean(0), y.mean(0)
  s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  return ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)


def collection(features, labels=None, logits=None):
  stats = iu.InceptionStats(len(features), num_splits=2)
  stats.update(torch.from_numpy(features), None if logits is None else torch.from_numpy(logits))
  return metrics.Collection(stats, torch.from_numpy(features),
                            None if labels is None else torch.from_numpy(labels))


def test_is_fid_and_ifid_against_their_definitions():
  rng = np.random.default_rng(5)
  d, classes = 6, 3
  fake_labels, real_labels = np.arange(90) % classes, np.repeat(np.arange(classes), 40)
  fake = (rng.standard_normal((90, d)) + 0.3 * fake_labels[:, None]).astype(np.float32)
  real = (rng.standard_normal((120, d)) * 1.1 + 0.5 * real_labels[:, None]).astype(np.float32)
  logits = rng.standard_normal((90, 7)).astype(np.float32)
  source = collection(fake, fake_labels, logits)
  ref = metrics.Reference('toy', 120, features=torch.from_numpy(real),
                          labels=torch.from_numpy(real_labels), class_names=['a', 'b', 'c'])
  got = metrics.compute(['IS', 'FID', 'IFID'], source, ref, CONFIG)
  per_class = {name: fid_reference(fake[fake_labels == c], real[real_labels == c])
               for c, name in enumerate('abc')}
  assert got['IFID_classes'] == pytest.approx(per_class, rel=1e-8)
  assert got['IFID'] == pytest.approx(np.mean(list(per_class.values())), rel=1e-8)
  assert got['FID'] == pytest.approx(fid_reference(fake, real), rel=1e-8)
  probs = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
  assert (got['IS_mean'], got['IS_std']) == pytest.approx(iu.calculate_inception_score(probs, 2),
                                                          rel=1e-12)


def test_ifid_leaves_out_a_short_class_with_a_warning():
  rng = np.random.default_rng(6)
  real = rng.standard_normal((40, 4)).astype(np.float32)
  real_labels = np.arange(40) % 2
  fake = rng.standard_normal((9, 4)).astype(np.float32)
  fake_labels = np.array([0] * 8 + [1])  # one image of class 1: no covariance
  ref = metrics.Reference('toy', 40, features=torch.from_numpy(real),
                          labels=torch.from_numpy(real_labels))
  with pytest.warns(RuntimeWarning, match='IFID over 1 classes'):
    got = metrics.compute(['IFID'], collection(fake, fake_labels), ref, CONFIG)
  assert list(got['IFID_classes']) == ['0']
  assert got['IFID'] == pytest.approx(fid_reference(fake[:8], real[real_labels == 0]), rel=1e-8)
  with pytest.raises(errors.UserError, match='at least 2 images of every class.*1 of class 1'):
    metrics.check_class_counts(fake_labels, real_labels)


# ---------------------------------------------------------------------------------------------
# The registry and the checks
# ---------------------------------------------------------------------------------------------


def test_registry_names_directions_and_consumers():
  assert list(metrics.METRICS) == ['IS', 'FID', 'KID', 'PR', 'DC', 'IFID']
  assert metrics.parse_metrics('KID, IS,PR') == ['IS', 'KID', 'PR']
  with pytest.raises(errors.UserError, match='unknown metric FOO'):
    metrics.parse_metrics('IS,FOO')
  assert metrics.best_metric('IS') == ('IS_mean', True, 'best_IS')
  assert metrics.best_metric('FID') == ('FID', False, 'best_FID')
  assert metrics.best_metric('KID') == ('KID_mean', False, 'best_KID_mean')
  assert metrics.best_metric('PR') == ('recall', True, 'best_recall')
  assert metrics.best_metric('precision') == ('precision', True, 'best_precision')
  assert metrics.consumes(['IS', 'FID']) == {'logits', 'moments'}
  assert metrics.consumes(['IS'], ref=True) == set()
  assert metrics.consumes(['IFID'], ref=True) == {'features', 'labels'}
  base = {'metrics': 'IS,FID', 'no_fid': False, 'which_best': 'IS'}
  assert metrics.monitored(dict(base, metrics='KID')) == ['IS', 'KID']
  assert metrics.monitored(dict(base, metrics='FID,DC', no_fid=True)) == ['IS', 'DC']
  assert metrics.initial_best(dict(base, which_best='IS')) == {}
  assert metrics.initial_best(dict(base, which_best='KID')) == {'best_KID_mean': float('inf')}


def test_counts_a_metric_cannot_use_are_refused():
  config = dict(CONFIG, kid_subset_size=50)
  with pytest.raises(errors.UserError, match='--kid_subset_size 50 is larger than the 40 images '
                                             'of REF'):
    metrics.check_counts(['KID'], 60, 40, config)
  with pytest.raises(errors.UserError, match='DC needs more than 5 images of REF'):
    metrics.check_counts(['DC'], 60, 5, CONFIG)
  metrics.check_counts(['IS'], 2, None, CONFIG)  # IS needs no REF


# ---------------------------------------------------------------------------------------------
# One pass: batch size and ranks
# ---------------------------------------------------------------------------------------------


class FakeNet(nn.Module):
  """The networks' interface, cheaply: images -> (features (N, d), logits (N, 5))."""

  def __init__(self, d=8):
    super().__init__()
    g = torch.Generator().manual_seed(0)
    self.w = nn.Parameter(torch.randn(3 * 4 * 4, d, generator=g))
    self.c = nn.Parameter(torch.randn(d, 5, generator=g))

  def forward(self, x):
    f = (x.flatten(1) @ self.w).relu()
    return f, f @ self.c


def images(n, seed=1):
  g = torch.Generator().manual_seed(seed)
  return torch.rand(n, 3, 4, 4, generator=g) * 2 - 1, torch.arange(n) % 3


def sampler(x, y, batch):
  """This rank's share of (x, y), in batches, as evaluate.py's data sources give them."""
  start, stop = iu.rank_share(len(x))
  parts = iter([(x[i:min(i + batch, stop)], y[i:min(i + batch, stop)])
                for i in range(start, stop, batch)])
  return lambda: next(parts)


NAMES = ['IS', 'FID', 'KID', 'PR', 'DC', 'IFID']
N, M = 31, 40


def all_metrics(batch):
  x, y = images(N)
  rx, ry = images(M, seed=2)
  net = FakeNet()
  with torch.no_grad():
    ref_features = net(iu.quantize_images(rx))[0]
  ref = metrics.Reference('toy', M, features=ref_features, labels=ry)
  config = dict(CONFIG, kid_subset_size=12)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)  # few images per dimension
    return metrics.measure(NAMES, sampler(x, y, batch), net, N, ref, config, shuffle_seed=3)


def rank_main(rank, port, out):
  os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
  torch.set_num_threads(1)
  dist.init_process_group('gloo', rank=rank, world_size=2)
  try:
    results = all_metrics(batch=4)
    torch.save(results, '%s.%d' % (out, rank))
  finally:
    dist.destroy_process_group()


def run_ranks(target, *args, world=2):
  """Exit codes of `world` forked processes running target(rank, port, *args)."""
  ctx = multiprocessing.get_context('fork')
  port = free_port()
  procs = [ctx.Process(target=target, args=(r, port) + args) for r in range(world)]
  for p in procs:
    p.start()
  for p in procs:
    p.join(120)
  return [p.exitcode for p in procs]


def assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    if isinstance(a[k], dict):
      assert a[k] == pytest.approx(b[k], rel=1e-6), k
    else:
      assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9), k


def test_metrics_do_not_depend_on_batch_size_or_rank_count(tmp_path):
  one = all_metrics(batch=5)
  assert set(one) == set(metrics.value_keys(NAMES)) | {'IFID_classes'}
  assert all(np.isfinite(v) for k, v in one.items() if k != 'IFID_classes')
  assert_same(all_metrics(batch=3), one)
  out = str(tmp_path / 'out')
  assert run_ranks(rank_main, out) == [0, 0]
  for rank in range(2):  # every rank gets rank 0's results
    assert_same(torch.load('%s.%d' % (out, rank), weights_only=False), one)


# ---------------------------------------------------------------------------------------------
# The reference cache
# ---------------------------------------------------------------------------------------------


def test_reference_cache_is_keyed_and_written_whole(tmp_path):
  real = torch.from_numpy(gaussians(1, 30, d=4, seed=7)[1])
  labels = torch.arange(30) % 3
  path = str(tmp_path / 'ref.npz')
  cache = metrics.ReferenceCache(path, {'source': 'a', 'num_images': 30})
  assert not cache.current()
  ref = metrics.Reference('toy', 30, features=real, labels=labels, cache=cache)
  ref.prepare(['DC', 'IFID'])
  assert cache.current() and sorted(os.listdir(tmp_path)) == ['ref.npz', 'ref_classes.h5']
  cached = metrics.Reference('toy', 30, cache=cache)
  assert torch.equal(cached.features(), real)
  assert torch.equal(cached.knn(), metrics.knn_sq_distances(real, 5))
  for (c, mu, sigma), (c2, mu2, sigma2) in zip(cached.class_moments(), ref.class_moments()):
    assert c == c2 and np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    x = real[labels == c].double().numpy()
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-10)
  assert not metrics.ReferenceCache(path, {'source': 'b', 'num_images': 30}).current()
