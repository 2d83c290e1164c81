"""Train-time evaluation (train_fns.test through train.py): IS/FID records in the jsonl with the
network used, best{n} copies and their rotation for --which_best IS and FID, --no_fid without a
moments file, and the G that is measured (G_ema, in eval mode with --G_eval_mode). --metrics
beyond IS/FID: the dataset cache from calculate_inception_moments.py, the log's new keys, best
copies by KID, sample.py's precision/recall truncation curve; evaluate.py through the real
network with clean-fid's resize.

Real runs use random Inception weights (--inception_weights) on 2 images per evaluation and a
synthetic moments file for Shapes32; the rotation tests script the metric values instead."""
import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import calculate_inception_moments
import checkpoints
import config as configuration
import errors
import evaluate
import inception_utils
import sample
import train
import train_fns

FLAGS = ('--dataset Shapes --resolution 32 --G_ch 4 --D_ch 4 --batch_size 4 --num_D_steps 1 '
         '--G_attn 0 --D_attn 0 --G_shared --dim_z 16 --shared_dim 8 --num_workers 0 '
         '--save_every 1000 --sv_log_interval 0 --G_lr 1e-3 --D_lr 1e-3 --num_best_copies 2')


def argv(root, extra):
  return (FLAGS + ' --base_root %s ' % root + extra).split()


def experiment(root, extra):
  args = configuration.prepare_parser().parse_args(argv(root, extra))
  return configuration.name_from_config(configuration.prepare_config(vars(args)))


def records(root, exp):
  with open(os.path.join(root, 'logs', '%s_log.jsonl' % exp)) as f:
    return [json.loads(line) for line in f]


def state(root, exp, suffix=None):
  return checkpoints.safe_load(checkpoints.file_path(os.path.join(root, 'weights', exp),
                                                     'state_dict', suffix))


def best_suffixes(root, exp):
  names = os.listdir(os.path.join(root, 'weights', exp))
  return {n[len('state_dict_'):-len('.pth')] for n in names if n.startswith('state_dict_best')}


def write_moments(data_root, seed=0):
  """Synthetic Inception moments of Shapes32 (torchvision network): a PSD sigma of rank 64."""
  rng = np.random.default_rng(seed)
  a = rng.standard_normal((inception_utils.FEATURE_DIM, 64))
  path = os.path.join(data_root, inception_utils.moments_filename('Shapes32'))
  inception_utils.save_moments(path, rng.standard_normal(inception_utils.FEATURE_DIM) * 0.1,
                               a @ a.T / 64, 'torchvision', 64)
  return path


def expected_bests(values, lower_is_better, num_best_copies=2):
  """{suffix: itr of the save} for the metric values of successive evaluations (itr, value)."""
  best, slot, saved = (np.inf if lower_is_better else 0.), 0, {}
  for itr, value in values:
    if (value < best) if lower_is_better else (value > best):
      saved['best%d' % slot] = itr
      slot = (slot + 1) % num_best_copies
      best = value
  return saved


@pytest.fixture
def watch(monkeypatch):
  """Records, for every evaluation, the mode of the G that metrics sample from and whether it
  is the G_ema that test() received."""
  seen = []
  real_test = train_fns.test

  def test(G, D, G_ema, z_, y_, state_dict, config, sample, *args, **kwargs):
    measured = sample.keywords['G']
    seen.append({'ema': measured is G_ema and G_ema is not None,
                 'calls': []})
    return real_test(G, D, G_ema, z_, y_, state_dict, config, sample, *args, **kwargs)

  real_prepare = inception_utils.prepare_inception_metrics

  def prepare(*args, **kwargs):
    real = real_prepare(*args, **kwargs)

    def get_inception_metrics(sample, *a, **k):
      seen[-1]['calls'].append(sample.keywords['G'].training)
      return real(sample, *a, **k)
    get_inception_metrics.network = real.network
    return get_inception_metrics
  monkeypatch.setattr(train_fns, 'test', test)
  monkeypatch.setattr(inception_utils, 'prepare_inception_metrics', prepare)
  return seen


def test_real_metrics_are_logged_with_the_network_and_the_best_is_kept(tmp_path,
                                                                      inception_weights, watch):
  write_moments(str(tmp_path / 'data'))
  extra = ('--num_iters 2 --test_every 1 --num_inception_images 2 --ema --use_ema --G_eval_mode '
           '--inception_weights %s' % inception_weights)
  train.main(argv(tmp_path, extra))
  exp = experiment(tmp_path, extra)
  logged = records(tmp_path, exp)
  assert [r['itr'] for r in logged] == [1, 2]
  for r in logged:
    assert set(r) == {'itr', 'IS_mean', 'IS_std', 'FID', 'inception_net', '_stamp'}
    assert r['inception_net'] == 'torchvision'
    assert np.isfinite(r['IS_mean']) and r['IS_mean'] >= 1 and r['IS_std'] >= 0
    assert np.isfinite(r['FID']) and r['FID'] > 0
  # G_ema was measured, in eval mode (the original left it in train mode).
  assert [w['ema'] for w in watch] == [True, True]
  assert [w['calls'] for w in watch] == [[False], [False]]
  bests = expected_bests([(r['itr'], r['IS_mean']) for r in logged], lower_is_better=False)
  assert best_suffixes(tmp_path, exp) == set(bests)
  for suffix, itr in bests.items():
    assert state(tmp_path, exp, suffix)['itr'] == itr
  # The state saved with a best copy holds the best values before it (as the original).
  assert state(tmp_path, exp, 'best0')['best_FID'] == 999999
  if 'best1' in bests:
    assert state(tmp_path, exp, 'best1')['best_IS'] == pytest.approx(logged[0]['IS_mean'])


def test_no_fid_needs_no_moments_and_logs_null(tmp_path, inception_weights):
  extra = ('--num_iters 1 --test_every 1 --num_inception_images 2 --no_fid '
           '--inception_weights %s' % inception_weights)
  assert not os.path.exists(tmp_path / 'data')  # nowhere to find moments
  train.main(argv(tmp_path, extra))
  exp = experiment(tmp_path, extra)
  (record,) = records(tmp_path, exp)
  assert record['itr'] == 1 and record['FID'] is None and record['IS_mean'] >= 1
  assert state(tmp_path, exp, 'best0')['itr'] == 1  # IS still decides
  assert state(tmp_path, exp)['best_FID'] == 999999


def scripted_metrics(monkeypatch, values):
  """prepare_inception_metrics -> a function returning `values` (IS_mean, IS_std, FID) in turn."""
  queue = list(values)
  modes = []

  def prepare(*args, **kwargs):
    def get_inception_metrics(sample, num_inception_images, num_splits=10, **kw):
      images, _ = sample()  # the metrics sample from this G
      assert images.shape[1:] == (3, 32, 32)
      modes.append(sample.keywords['G'].training)
      return queue.pop(0)
    get_inception_metrics.network = 'torchvision'
    return get_inception_metrics
  monkeypatch.setattr(inception_utils, 'prepare_inception_metrics', prepare)
  return modes


@pytest.mark.parametrize('which_best,values,extra,train_mode', [
    ('IS', [(1.0, 0.1, 50.), (3.0, 0.1, 60.), (2.0, 0.1, 70.), (5.0, 0.1, 80.)], '', True),
    ('FID', [(1.0, 0.1, 50.), (1.0, 0.1, 40.), (1.0, 0.1, 45.), (1.0, 0.1, 30.)],
     '--G_eval_mode --ema --use_ema', False),
])
def test_best_copies_rotate(tmp_path, monkeypatch, which_best, values, extra, train_mode):
  modes = scripted_metrics(monkeypatch, values)
  extra = '--num_iters 4 --test_every 1 --which_best %s %s' % (which_best, extra)
  train.main(argv(tmp_path, extra))
  exp = experiment(tmp_path, extra)
  logged = records(tmp_path, exp)
  assert [(r['itr'], r['IS_mean'], r['FID']) for r in logged] == [
      (i + 1, v[0], v[2]) for i, v in enumerate(values)]
  metric = [(r['itr'], r['FID' if which_best == 'FID' else 'IS_mean']) for r in logged]
  bests = expected_bests(metric, lower_is_better=which_best == 'FID')
  assert bests == {'best0': 4, 'best1': 2}  # best0 (itr 1) was overwritten at itr 4
  assert best_suffixes(tmp_path, exp) == {'best0', 'best1'}
  for suffix, itr in bests.items():
    assert state(tmp_path, exp, suffix)['itr'] == itr
  # The newest best has the final weights (both written at itr 4; a train-mode G's buffers move
  # while it is measured).
  root = os.path.join(tmp_path, 'weights', exp)
  final, best = (checkpoints.safe_load(checkpoints.file_path(root, 'G', suffix))
                 for suffix in (None, 'best0'))
  assert all(torch.equal(final[k], best[k]) for k in final if k.endswith(('weight', 'bias')))
  # Without --G_eval_mode G is measured in train mode, as in the original; with it in eval mode.
  assert modes == [train_mode] * 4


def test_the_checkpoint_of_an_evaluated_iteration_holds_its_evaluation(tmp_path, monkeypatch):
  scripted_metrics(monkeypatch, [(1.0, 0.1, 50.), (3.0, 0.1, 40.)])
  extra = '--num_iters 2 --test_every 1'
  train.main(argv(tmp_path, extra))
  final = state(tmp_path, experiment(tmp_path, extra))
  assert final['itr'] == 2
  assert (final['best_IS'], final['best_FID'], final['save_best_num']) == (3.0, 40., 0)


# ---------------------------------------------------------------------------------------------
# --metrics beyond IS and FID (metrics.py), with a stand-in network; evaluate.py through the
# real one (it uses this module's random weights)
# ---------------------------------------------------------------------------------------------


class WideNet(torch.nn.Module):
  """Images -> (2048 features, 5 logits) from a 4 x 4 average: the networks' interface and
  feature width (moments files hold 2048), cheaply."""

  def __init__(self):
    super().__init__()
    g = torch.Generator().manual_seed(0)
    self.w = torch.nn.Parameter(torch.randn(48, inception_utils.FEATURE_DIM, generator=g))
    self.c = torch.nn.Parameter(torch.randn(inception_utils.FEATURE_DIM, 5, generator=g) / 30)

  def forward(self, x):
    f = (torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) @ self.w).relu()
    return f, f @ self.c


def test_more_metrics_monitor_training_from_the_dataset_cache(tmp_path, monkeypatch):
  monkeypatch.setattr(inception_utils, 'load_inception_net', lambda *a, **k: WideNet())
  rng = np.random.default_rng(0)
  for i in range(8):  # a 2-class image folder
    folder = tmp_path / 'data' / 'tiny' / ('c%d' % (i % 2))
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / ('%d.png' % i))
  moments = ['--dataset', 'tiny', '--data_root', str(tmp_path / 'data'), '--resolution', '32',
             '--num_workers', '0', '--batch_size', '3']
  calculate_inception_moments.main(moments)  # FID's moments file only
  extra = ('--dataset tiny --num_iters 2 --test_every 1 --num_inception_images 8 --kid_subsets 2 '
           '--kid_subset_size 4 --metrics IS,FID,KID,PR,DC,IFID --which_best KID')
  with pytest.raises(errors.UserError, match='no current Inception feature cache of --dataset '
                     'tiny .* make it with: python calculate_inception_moments.py --dataset tiny '
                     '.* --metrics KID,PR,DC,IFID$'):
    train.main(argv(tmp_path, extra))
  calculate_inception_moments.main(moments + ['--metrics', 'KID,PR,DC,IFID'])
  train.main(argv(tmp_path, extra))
  exp = experiment(tmp_path, extra)
  logged = records(tmp_path, exp)
  keys = {'KID_mean', 'KID_std', 'precision', 'recall', 'density', 'coverage', 'IFID'}
  assert [r['itr'] for r in logged] == [1, 2]
  for r in logged:
    assert set(r) == {'itr', 'IS_mean', 'IS_std', 'FID', 'inception_net', '_stamp'} | keys
    assert all(np.isfinite(r[k]) for k in keys) and 0 <= r['precision'] <= 1
  bests = expected_bests([(r['itr'], r['KID_mean']) for r in logged], lower_is_better=True)
  assert best_suffixes(tmp_path, exp) == set(bests)
  assert state(tmp_path, exp)['best_KID_mean'] == min(r['KID_mean'] for r in logged)
  # sample.py's truncation sweep with PR: the precision/recall curve, CSV and PNG.
  results = sample.main(argv(tmp_path, '--dataset tiny --sample_trunc_curves 0.5_0.5_1.0 '
                             '--metrics IS,PR --no_fid --num_inception_images 8'))
  with open(results['trunc_curve']) as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['truncation', 'IS_mean', 'IS_std', 'FID', 'precision', 'recall']
  assert [float(r[0]) for r in rows[1:]] == [0.5, 1.0] and all(r[3] == '' for r in rows[1:])
  assert all(0 <= float(v) <= 1 for r in rows[1:] for v in r[4:])
  assert os.path.getsize(results['trunc_curve'][:-len('.csv')] + '.png') > 1000


def test_evaluate_through_the_real_network_with_clean_resize(tmp_path, inception_weights,
                                                              capsys):
  """2 images as SOURCE and as REF: FID 0 up to float32 features; the network and the resize
  policy named in the table and the JSON."""
  np.savez(tmp_path / 'x.npz',
           x=np.random.default_rng(1).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8))
  result = evaluate.main([str(tmp_path / 'x.npz'), '--ref', str(tmp_path / 'x.npz'), '--metrics',
                          'IS,FID', '--inception_weights', inception_weights, '--num_workers',
                          '0', '--device', 'cpu', '--inception_resize', 'clean'])
  assert (result['network'], result['resize'], result['N']) == ('torchvision', 'clean', 2)
  assert '[torchvision network, clean resize, 2 vs 2 images]' in capsys.readouterr().out
  with np.load(tmp_path / '.x.npz.inception_cache_torchvision_clean_2.npz') as cache:
    assert cache['features'].shape == (2, 2048) and cache['features'].std() > 1e-3
    assert abs(result['FID']) < 1e-4 * np.trace(cache['sigma'])
  net = inception_utils.load_inception_net(weights=inception_weights, device='cpu',
                                           resize='clean')
  assert isinstance(net, inception_utils.ResizedInception) and net.policy == 'clean'
