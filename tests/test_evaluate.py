"""evaluate.py end to end on every source kind (made here: npz, class and flat folders, HDF5, a
dataset name, a weights folder), the reference cache (reused, rebuilt after the data change),
the JSON, bad input refused before any slow work, 2 gloo ranks = 1.

These use a cheap stand-in for the Inception network (metrics.py's arithmetic is tested against
references in test_metrics.py; evaluate.py through the real network with random weights is in
test_train_metrics.py, which has those weights already)."""
import json
import os

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import BigGAN
import checkpoints
import errors
import evaluate
import inception_utils as iu
from conftest import make_config
from test_metrics import run_ranks

RES, N = 32, 24
METRICS = 'IS,FID,KID,PR,DC,IFID'
FLAGS = ['--num_workers', '0', '--batch_size', '5', '--device', 'cpu', '--kid_subsets', '3',
         '--kid_subset_size', '8', '--inception_net', 'tf']


class CountingNet(nn.Module):
  """Images -> (features (N, 8), logits (N, 5)) from a 4 x 4 average; counts the images."""

  def __init__(self):
    super().__init__()
    g = torch.Generator().manual_seed(0)
    self.w = nn.Parameter(torch.randn(48, 8, generator=g))
    self.c = nn.Parameter(torch.randn(8, 5, generator=g))
    self.seen = 0

  def forward(self, x):
    self.seen += len(x)
    f = (F.adaptive_avg_pool2d(x, 4).flatten(1) @ self.w).relu()
    return f, f @ self.c


@pytest.fixture
def net(monkeypatch):
  """The stand-in network evaluate.py loads (.resize: the policy it was asked for)."""
  fake = CountingNet()

  def load(parallel=False, network='torchvision', weights='', device=None, resize='auto'):
    fake.resize = iu.resize_policy(network, resize)
    return fake
  monkeypatch.setattr(iu, 'load_inception_net', load)
  return fake


@pytest.fixture
def no_net(monkeypatch):
  """Bad input must be refused before the network is even loaded."""
  def load(*args, **kwargs):
    raise AssertionError('the network was loaded before the input was checked')
  monkeypatch.setattr(iu, 'load_inception_net', load)


def pixels(n, seed, res=RES):
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (n, 3, 1, 1))  # per-image colours, so features differ clearly
  return np.clip(base + rng.integers(-40, 40, (n, 3, res, res)), 0, 255).astype(np.uint8)


def write_sources(root, x, y):
  """The same images as an npz, a class folder, a flat folder and an HDF5 file."""
  np.savez(root / 'set.npz', x=x, y=y)
  for i, (image, label) in enumerate(zip(x, y)):
    for folder in (root / 'classes' / ('c%d' % label), root / 'flat'):
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(image.transpose(1, 2, 0)).save(folder / ('%03d.png' % i))
  with h5py.File(root / 'set.hdf5', 'w') as f:
    f['imgs'], f['labels'] = x, y.astype(np.int64)


@pytest.fixture(scope='module')
def sets(tmp_path_factory):
  root = tmp_path_factory.mktemp('sets')
  (root / 'source').mkdir()
  write_sources(root / 'source', pixels(N, 0), np.arange(N) * 2 // N)  # classes in file order
  np.savez(root / 'ref.npz', x=pixels(30, 1), y=np.arange(30) % 2)
  return root


def run(*argv):
  return evaluate.main(FLAGS + [str(a) for a in argv])


def test_every_source_kind_gives_the_same_scores_for_the_same_images(sets, net, tmp_path):
  ref = sets / 'ref.npz'
  out = tmp_path / 'out.json'
  results = {}
  for kind in ('set.npz', 'classes', 'set.hdf5', 'flat'):
    metric_list = METRICS if kind != 'flat' else 'IS,FID,KID,PR,DC'  # a flat folder has no classes
    results[kind] = run(sets / 'source' / kind, '--ref', ref, '--metrics', metric_list,
                        '--json', out)
    assert json.loads(out.read_text()) == results[kind]
  first = results['set.npz']
  assert set(first) == {'source', 'ref', 'network', 'resize', 'N', 'N_ref', 'kid_subsets',
                        'kid_subset_size', 'IS_mean', 'IS_std', 'FID', 'KID_mean', 'KID_std',
                        'precision', 'recall', 'density', 'coverage', 'IFID', 'IFID_classes'}
  assert (first['network'], first['resize'], first['N'], first['N_ref']) == ('tf', 'tf', N, 30)
  assert set(first['IFID_classes']) == {'0', '1'}
  assert net.resize == 'tf'
  for kind, result in results.items():
    for key in ('IS_mean', 'IS_std', 'FID', 'KID_mean', 'precision', 'recall', 'density',
                'coverage'):
      assert result[key] == pytest.approx(first[key], rel=1e-6), (kind, key)
    assert 'IFID' not in result or result['IFID'] == pytest.approx(first['IFID'], rel=1e-6)
  assert 0 < first['FID'] and 0 <= first['precision'] <= 1


def test_a_dataset_name_and_a_subset(sets, net, tmp_path):
  result = run('Shapes', '--resolution', RES, '--num_images', 20, '--ref', sets / 'ref.npz',
               '--metrics', 'IS,FID,KID', '--seed', 4, '--data_root', tmp_path)
  assert result['N'] == 20 and 'Shapes' in result['source']
  again = run('Shapes', '--resolution', RES, '--num_images', 20, '--ref', sets / 'ref.npz',
              '--metrics', 'IS,FID,KID', '--seed', 5, '--data_root', tmp_path)  # another subset
  assert again['FID'] != result['FID']


def test_a_weights_folder_samples_n_images_with_classes_in_turn(net, tmp_path):
  """A G of Shapes32's shape saved as train.py saves it; REF: 3 images of each class."""
  config = make_config('--dataset Shapes --G_ch 4 --D_ch 4 --G_attn 0 --D_attn 0 --G_shared '
                       '--dim_z 16 --shared_dim 8', dataset_tag='Shapes32')
  checkpoints.save_weights(BigGAN.Generator(**config), BigGAN.Discriminator(**config),
                           {'itr': 1, 'config': config}, str(tmp_path), 'tiny')
  np.savez(tmp_path / 'ref.npz', x=pixels(30, 7), y=np.arange(30) % 10)
  result = run(tmp_path / 'tiny', '--ref', tmp_path / 'ref.npz', '--num_images', 20,
               '--metrics', 'IS,FID,IFID', '--truncation', '0.5', '--truncation_mode',
               'resample', '--G_eval_mode')
  assert result['N'] == 20 and result['N_ref'] == 30 and net.seen == 50
  assert 'weights folder' in result['source'] and 'resampled where |z| > 0.5' in result['source']
  assert len(result['IFID_classes']) == 10  # 2 images of each of the 10 classes
  assert np.isfinite(result['IFID'])


def test_the_reference_cache_is_reused_and_rebuilt_when_the_data_change(tmp_path, net, capsys):
  ref = tmp_path / 'ref'
  ref.mkdir()
  write_sources(ref, pixels(20, 2), np.arange(20) % 2)
  source = tmp_path / 'source.npz'
  np.savez(source, x=pixels(12, 3), y=np.arange(12) % 2)
  first = run(source, '--ref', ref / 'classes', '--metrics', 'FID,PR,IFID')
  assert net.seen == 32
  cached = sorted(f for f in os.listdir(ref / 'classes') if f.startswith('.inception_cache'))
  assert cached == ['.inception_cache_tf_tf_20.npz', '.inception_cache_tf_tf_20_classes.h5']
  again = run(source, '--ref', ref / 'classes', '--metrics', 'FID,PR,IFID')
  assert net.seen == 44 and again == first  # REF's pass was not repeated
  assert 'Using the cached features' in capsys.readouterr().out
  Image.fromarray(pixels(1, 9)[0].transpose(1, 2, 0)).save(ref / 'classes' / 'c0' / '000.png')
  changed = run(source, '--ref', ref / 'classes', '--metrics', 'FID,PR,IFID')
  assert net.seen == 44 + 32 and changed['FID'] != first['FID']


@pytest.mark.parametrize('argv, message', [
    (['{npz}', '--ref', '{ref}', '--metrics', 'FID,BAD'], 'unknown metric BAD in --metrics'),
    (['{npz}', '--metrics', 'KID'], 'KID compare SOURCE with reference images: add --ref'),
    (['{npz}', '--ref', '{ref}', '--metrics', 'KID', '--kid_subset_size', '25'],
     '--kid_subset_size 25 is larger than the 24 images of SOURCE'),
    (['{flat}', '--ref', '{ref}', '--metrics', 'IFID'], 'IFID needs classes, and SOURCE'),
    (['{empty}', '--ref', '{ref}'], 'is a folder with no images'),
    (['{npz}', '--ref', 'Shapes', '--resolution', '16'],
     'is 32 px but REF Shapes is 16 px: both would be resized to 299 px (tf resize policy)'),
    (['{npz}', '--ref', '{ref}', '--metrics', 'IFID', '--num_images', '3'],
     'IFID needs at least 2 images of every class in SOURCE'),
    (['{npz}', '--ref', '{ref}', '--num_images', '99'], 'has 24 images, fewer than the 99'),
    (['{sets}/nothing.npz', '--ref', '{ref}'], 'is no image folder, .npz, .hdf5'),
])
def test_bad_input_is_one_line_before_any_slow_work(sets, no_net, tmp_path, capsys, argv, message):
  (tmp_path / 'empty').mkdir()
  paths = {'npz': sets / 'source' / 'set.npz', 'ref': sets / 'ref.npz', 'sets': sets,
           'flat': sets / 'source' / 'flat', 'empty': tmp_path / 'empty'}
  with pytest.raises(SystemExit) as e:
    errors.run_main(evaluate.main, FLAGS + [a.format(**paths) for a in argv])
  assert e.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], lines


def rank_main(rank, port, argv, out):
  os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2',
                    MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
  torch.set_num_threads(1)  # OpenMP's pool does not survive fork
  result = run(*argv)
  torch.save(result, '%s.%d' % (out, rank))


def test_two_ranks_score_like_one(sets, net, tmp_path):
  argv = [sets / 'source' / 'classes', '--ref', sets / 'ref.npz', '--metrics', METRICS,
          '--json', tmp_path / 'two.json']
  assert run_ranks(rank_main, argv, str(tmp_path / 'out')) == [0, 0]
  two = json.loads((tmp_path / 'two.json').read_text())
  assert torch.load(str(tmp_path / 'out.1'), weights_only=False) is None  # rank 0 reports
  one = run(*argv[:-1], tmp_path / 'one.json')
  assert two.keys() == one.keys()
  for key, value in one.items():
    if isinstance(value, float):
      assert two[key] == pytest.approx(value, rel=1e-6), key
  assert two['IFID_classes'] == pytest.approx(one['IFID_classes'], rel=1e-6)
