"""calculate_inception_moments.py end to end, prepare_inception_metrics, and statistics across
torch.distributed ranks."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from PIL import Image

import calculate_inception_moments
import datasets
import inception_utils as iu

N_IMAGES = 4


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """A 2-class image folder of N_IMAGES 32 px images, random TF weights, and the script's run."""
  root = tmp_path_factory.mktemp('moments')
  rng = np.random.default_rng(0)
  for i in range(N_IMAGES):
    folder = root / 'data' / 'tiny' / ('class%d' % (i % 2))
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / ('%d.png' % i))
  weights = str(root / 'tf_weights.pth')
  torch.manual_seed(0)
  net = iu._build('tf')
  for m in net.modules():  # keeps activations O(1); PyTorch's default init makes them vanish
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight)
  torch.save(net.state_dict(), weights)
  argv = ['--dataset', 'tiny', '--data_root', str(root / 'data'), '--resolution', '32',
          '--inception_net', 'tf', '--inception_weights', weights, '--batch_size', '3',
          '--num_workers', '0', '--device', 'cpu']
  calculate_inception_moments.main(argv)
  return {'root': root, 'weights': weights, 'argv': argv, 'data_root': str(root / 'data'),
          'path': str(root / 'data' / 'tiny32_inception_moments_tf.npz')}


def _dataset_images(tiny):
  dataset = datasets.open_dataset('tiny', tiny['data_root'], 32)
  return torch.stack([dataset[i][0] for i in range(len(dataset))])


def test_script_writes_the_moments_of_the_dataset(tiny):
  with np.load(tiny['path']) as f:
    mu, sigma = f['mu'], f['sigma']
    assert str(f['network']) == 'tf' and int(f['num_images']) == N_IMAGES
  assert mu.shape == (2048,) and sigma.shape == (2048, 2048) and mu.dtype == np.float64
  # Independently: the network on every image, then numpy's mean and covariance.
  net = iu.load_inception_net(network='tf', weights=tiny['weights'], device='cpu')
  with torch.no_grad():
    pool = net(_dataset_images(tiny))[0].double().numpy()
  np.testing.assert_allclose(mu, pool.mean(0), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(sigma, np.cov(pool, rowvar=False), rtol=1e-4,
                             atol=1e-5 * np.abs(sigma).max())
  assert iu.load_moments(dict(dataset='tiny', data_root=tiny['data_root'], resolution=32,
                              inception_net='tf'))[2] == tiny['path']


def test_metrics_of_the_dataset_against_its_own_moments(tiny, monkeypatch):
  images = _dataset_images(tiny)
  batches = iter([(images[:3], torch.zeros(3)), (images[3:], torch.zeros(1))])
  get_metrics = iu.prepare_inception_metrics('tiny', False, network='tf',
                                             weights=tiny['weights'], data_root=tiny['data_root'],
                                             resolution=32, device='cpu')
  assert get_metrics.network == 'tf'
  with pytest.warns(RuntimeWarning, match='rank-deficient'):
    IS_mean, IS_std, FID = get_metrics(lambda: next(batches), N_IMAGES, num_splits=2)
  with np.load(tiny['path']) as f:
    scale = np.trace(f['sigma'])
  assert abs(FID) < 1e-4 * scale  # the same images: FID 0 up to float32 features
  assert np.isfinite(IS_mean) and IS_mean >= 1 and IS_std >= 0
  # --no_fid needs no moments file and reports the original's placeholder.
  monkeypatch.setattr(iu, 'load_inception_net', lambda *args, **kwargs: _FakeNet())
  no_fid = iu.prepare_inception_metrics('elsewhere', False, no_fid=True)
  stats = iu.accumulate_inception_stats(_batches(_images(), 3), _FakeNet(), 7, num_splits=2)
  result = no_fid(_batches(_images(), 3), 7, num_splits=2, prints=False)
  assert result == (*stats.inception_score(), 9999.0)


def test_script_errors_are_one_line_and_write_nothing(tiny, repo_root):
  argv = list(tiny['argv'])
  argv[argv.index('--inception_weights') + 1] = str(tiny['root'] / 'missing.pth')
  argv[argv.index('--data_root') + 1] = str(tiny['root'] / 'elsewhere')
  os.makedirs(tiny['root'] / 'elsewhere' / 'tiny' / 'a', exist_ok=True)
  Image.new('RGB', (8, 8)).save(tiny['root'] / 'elsewhere' / 'tiny' / 'a' / 'x.png')
  result = subprocess.run([sys.executable, 'calculate_inception_moments.py'] + argv, cwd=repo_root,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and 'missing.pth' in lines[0]
  assert not any(name.endswith('.npz') for name in os.listdir(tiny['root'] / 'elsewhere'))


# ---------------------------------------------------------------------------------------------
# Across ranks
# ---------------------------------------------------------------------------------------------


class _FakeNet(nn.Module):
  """A cheap stand-in with the networks' interface: x -> (features, logits)."""

  def __init__(self):
    super().__init__()
    self.w = nn.Parameter(torch.randn(3 * 4 * 4, 5, generator=torch.Generator().manual_seed(0)))

  def forward(self, x):
    f = x.flatten(1) @ self.w
    return f.relu(), f


def _images():
  return torch.rand(7, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _batches(images, size):
  it = iter([(images[i:i + size], torch.zeros(len(images[i:i + size])))
             for i in range(0, len(images), size)])
  return lambda: next(it)


def _rank_main(rank, init_file, out_file):
  dist.init_process_group('gloo', init_method='file://' + init_file, rank=rank, world_size=2)
  try:
    images = _images()
    mine = images[:4] if rank == 0 else images[4:]  # shares of 7 images: 4 and 3
    stats = iu.accumulate_inception_stats(_batches(mine, 2), _FakeNet(), 7, num_splits=1)
    if rank == 0:
      mu, sigma = stats.moments()
      np.savez(out_file, mu=mu, sigma=sigma, count=stats.count, IS=stats.inception_score())
  finally:
    dist.destroy_process_group()


def test_statistics_are_summed_across_ranks(tmp_path):
  out = str(tmp_path / 'out.npz')
  mp.spawn(_rank_main, args=(str(tmp_path / 'init'), out), nprocs=2, join=True)
  single = iu.accumulate_inception_stats(_batches(_images(), 3), _FakeNet(), 7, num_splits=1)
  with np.load(out) as f:
    assert int(f['count']) == 7
    mu, sigma = single.moments()
    np.testing.assert_allclose(f['mu'], mu, rtol=1e-12)
    np.testing.assert_allclose(f['sigma'], sigma, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f['IS'], single.inception_score(), rtol=1e-12)


def test_script_reports_the_IS_of_a_seeded_shuffle(tiny, monkeypatch, capsys):
  """The printed IS is the one of the statistics the script accumulated, with its splits over the
  --seed order (tests/test_inception_utils.py checks that order against a numpy permutation)."""
  seen = {}
  accumulate = iu.accumulate_inception_stats

  def recording(*args, **kwargs):
    seen['shuffle_seed'] = kwargs.get('shuffle_seed')
    seen['stats'] = accumulate(*args, **kwargs)
    return seen['stats']
  monkeypatch.setattr(iu, 'accumulate_inception_stats', recording)
  calculate_inception_moments.main(tiny['argv'] + ['--seed', '3'])  # rewrites the same moments
  out = capsys.readouterr().out
  assert seen['shuffle_seed'] == 3
  mean, std = seen['stats'].inception_score()
  assert 'has IS of %5.5f +/- %5.5f (Inception network: tf)' % (mean, std) in out
