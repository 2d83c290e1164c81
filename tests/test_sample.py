"""sample.py: the npz's rounding, every mode's files, IS/FID and the truncation curve only when
asked, --config_from_name, and weights folders as the original and TFHub/converter.py write them
(the sampling pieces themselves: tests/test_sampling.py)."""
import csv
import os
import shlex

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import BigGAN
import config as configuration
import errors
import inception_utils
import sample
import sampling
import train
from test_train_metrics import write_moments
from TFHub import converter

MODEL = ('--dataset Shapes --resolution 32 --G_ch 4 --D_ch 4 --G_attn 0 --D_attn 0 --G_shared '
         '--hier --dim_z 16 --shared_dim 8 --ema')
RUN = '--batch_size 4 --use_ema --G_eval_mode'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A 2-iteration run: (its root, its experiment name)."""
  root = tmp_path_factory.mktemp('run')
  argv = ('%s %s --num_workers 0 --num_iters 2 --save_every 2 --base_root %s'
          % (MODEL, RUN, root)).split()
  train.main(argv)
  parser = configuration.prepare_parser()
  config = configuration.prepare_config(vars(parser.parse_args(argv)))
  return root, configuration.name_from_config(config)


def roots(weights, out):
  return ('--weights_root %s --samples_root %s/samples --data_root %s/data --logs_root %s/logs'
          % (weights, out, out, out))


def run_sample(trained, out, extra, model=MODEL):
  root, exp = trained
  return sample.main(shlex.split('%s %s %s %s' % (model, RUN, roots(root / 'weights', out), extra)))


def one_line_error(capsys, fn, *args):
  with pytest.raises(SystemExit) as e:
    errors.run_main(fn, *args)
  assert e.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), lines
  return lines[0]


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


def test_npz_rounds_to_the_nearest_level(tmp_path):
  levels = torch.arange(256, dtype=torch.float64)
  images = torch.stack([(levels + d) / 127.5 - 1 for d in (0.0, 0.3, -0.4, -0.2)]).float()
  images = images.view(4, 1, 1, 256).expand(4, 3, 1, 256).contiguous()  # 4 images, 3 channels
  calls = []

  def fake_sample():
    calls.append(1)
    return images[:3], torch.tensor([7, 8, 9])
  path = str(tmp_path / 'out' / 'samples.npz')
  sample.sample_npz(fake_sample, 5, 3, path)
  assert len(calls) == 2
  with np.load(path) as f:
    assert sorted(f.files) == ['x', 'y']
    x, y = f['x'], f['y']
  assert x.dtype == np.uint8 and x.shape == (5, 3, 1, 256) and y.tolist() == [7, 8, 9, 7, 8]
  reference = np.clip(np.round((images[:3].double().numpy() + 1) * 127.5), 0, 255)
  np.testing.assert_array_equal(x[:3], reference)
  np.testing.assert_array_equal(x[:3], inception_utils.quantize_images(images[:3]).add(1).mul(
      127.5).round().numpy())
  # The original's np.uint8(255 * (x + 1) / 2) truncates: level - 0.4 became level - 1.
  truncated = np.uint8(255 * (images[2].numpy() + 1) / 2)
  assert ((x[2].astype(int) - truncated)[..., 1:] == 1).all()


def test_every_mode_writes_its_files_without_inception(trained, tmp_path, monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError('IS/FID were not asked for')
  monkeypatch.setattr(inception_utils, 'prepare_inception_metrics', refuse)
  results = run_sample(trained, tmp_path, '--sample_npz --sample_num_npz 10 --sample_sheets '
                       '--sample_interps --sample_random --truncation 0.5 --truncation_mode '
                       'resample --interp_method slerp')
  out = tmp_path / 'samples' / trained[1]
  with np.load(out / 'samples.npz') as f:
    assert f['x'].shape == (10, 3, 32, 32) and f['x'].dtype == np.uint8
    assert f['y'].dtype == np.int64 and 0 <= f['y'].min() and f['y'].max() < 10
    assert len(np.unique(f['x'])) > 50  # real images, not a constant
  # Sheets go to the checkpoint's iteration (2): 10 classes x 10 samples with class names.
  sheet = Image.open(out / '2' / 'samples0.jpg')
  assert sheet.size[1] == 10 * 34 + 2 and sheet.size[0] > 10 * 34 + 2
  for name in ('interpZY0.jpg', 'interpY0.jpg', 'interpZ0.jpg'):  # 16 rows of 8 + 2 points
    assert Image.open(out / '2' / name).size == (10 * 34 + 2, 16 * 34 + 2)
  assert Image.open(out / 'random_samples.jpg').size == (2 * 34 + 2, 2 * 34 + 2)
  assert results['npz'] == str(out / 'samples.npz')
  assert not os.path.exists(tmp_path / 'data')


def test_metrics_need_the_moments_only_when_asked(trained, tmp_path, capsys, inception_weights):
  out = tmp_path / 'samples' / trained[1]
  out.mkdir(parents=True)
  (out / 'samples.npz').write_bytes(b'an earlier file')
  root, _ = trained
  argv = shlex.split('%s %s %s --sample_npz --sample_num_npz 4 --sample_inception_metrics '
                     '--inception_weights %s' % (MODEL, RUN, roots(root / 'weights', tmp_path),
                                                 inception_weights))
  line = one_line_error(capsys, sample.main, argv)
  assert 'no Inception moments' in line and 'python calculate_inception_moments.py' in line
  assert (out / 'samples.npz').read_bytes() == b'an earlier file'
  # --no_fid: IS only, no moments needed; a z_var sweep writes a CSV with empty FIDs.
  results = sample.main(argv + ['--no_fid', '--num_inception_images', '2', '--truncation', '0.5',
                                '--sample_trunc_curves', '0.5_0.5_1.0'])
  printed = capsys.readouterr().out
  assert 'z ~ N(0, 0.5^2), 2 images' in printed and 'FID is not computed (--no_fid)' in printed
  assert 'torchvision Inception network, itr 2' in printed
  IS_mean, IS_std, FID = results['metrics']
  assert IS_mean >= 1 and FID is None
  with open(results['trunc_curve']) as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['truncation', 'IS_mean', 'IS_std', 'FID']
  assert [(float(r[0]), r[3]) for r in rows[1:]] == [(0.5, ''), (1.0, '')]
  assert all(float(r[1]) >= 1 for r in rows[1:])
  assert results['trunc_curve'] == str(out / 'truncation_curve_z_var.csv')
  assert os.path.getsize(out / 'truncation_curve_z_var.png') > 1000


def test_trunc_curve_with_fid_reaccumulates_standing_stats(trained, tmp_path, monkeypatch,
                                                          inception_weights):
  write_moments(str(tmp_path / 'data'))
  seen = []
  real = sampling.accumulate_standing_stats

  def accumulate(net, z, y, nclasses, num_accumulations=16):
    seen.append((z.truncation, z.truncation_mode, num_accumulations))
    return real(net, z, y, nclasses, num_accumulations)
  monkeypatch.setattr(sampling, 'accumulate_standing_stats', accumulate)
  results = run_sample(trained, tmp_path, '--sample_trunc_curves 0.25_0.25_0.5 --truncation_mode '
                       'resample --accumulate_stats --num_standing_accumulations 2 '
                       '--num_inception_images 2 --inception_weights %s' % inception_weights)
  # Once before sampling (no truncation), then once per value with that truncation.
  assert seen == [(None, None, 2), (0.25, 'resample', 2), (0.5, 'resample', 2)]
  with open(results['trunc_curve']) as f:
    rows = list(csv.DictReader(f))
  assert [float(r['truncation']) for r in rows] == [0.25, 0.5]
  for row, (t, IS_mean, IS_std, FID) in zip(rows, results['trunc_rows']):
    assert float(row['FID']) == FID and np.isfinite(FID) and FID > 0
    assert float(row['IS_mean']) == IS_mean and float(row['IS_std']) == IS_std


def test_a_sweep_without_matplotlib_says_so_first_and_still_writes_the_csv(
    trained, tmp_path, monkeypatch, capsys):
  import sys
  for name in [n for n in sys.modules if n.split('.')[0] == 'matplotlib'] + ['matplotlib']:
    monkeypatch.setitem(sys.modules, name, None)  # any import of it fails
  printed_before = []

  def prepare(*args, **kwargs):
    def get_inception_metrics(sample, num_inception_images, num_splits=10, **kw):
      printed_before.append(capsys.readouterr().out)
      return 1.5 + len(printed_before), 0.25, 40.0
    get_inception_metrics.network = 'torchvision'
    return get_inception_metrics
  monkeypatch.setattr(inception_utils, 'prepare_inception_metrics', prepare)
  results = run_sample(trained, tmp_path, '--sample_trunc_curves 0.5_0.5_1.0 '
                       '--num_inception_images 2')
  assert len(printed_before) == 2  # one measurement per truncation, the notice before them
  assert 'Notice: matplotlib is not installed' in printed_before[0]
  assert 'python logs/plot_truncation.py %s' % results['trunc_curve'] in printed_before[0]
  with open(results['trunc_curve']) as f:
    rows = list(csv.DictReader(f))
  assert [(float(r['truncation']), float(r['IS_mean'])) for r in rows] == [(0.5, 2.5), (1.0, 3.5)]
  assert not os.path.exists(results['trunc_curve'][:-len('.csv')] + '.png')
  assert 'no plot: matplotlib is not installed' in capsys.readouterr().out


def test_bad_truncations_are_one_line_errors(trained, tmp_path, capsys):
  root, _ = trained
  base = '%s %s %s --sample_random' % (MODEL, RUN, roots(root / 'weights', tmp_path))
  for extra, message in [('--sample_trunc_curves 0.1_0.1', 'must be start_step_end'),
                         ('--sample_trunc_curves 0.5_0_1', 'step must be positive'),
                         ('--truncation -0.5', 'negative')]:
    assert message in one_line_error(capsys, sample.main, shlex.split(base + ' ' + extra))
  assert not os.path.exists(tmp_path / 'samples')


# ---------------------------------------------------------------------------------------------
# Configs and weights folders
# ---------------------------------------------------------------------------------------------


def test_config_from_name_rebuilds_the_same_G(trained, tmp_path):
  root, exp = trained
  by_flags = run_sample(trained, tmp_path / 'a', '--sample_npz --sample_num_npz 6')
  by_name = sample.main(shlex.split(
      '--experiment_name %s --config_from_name %s %s --sample_npz --sample_num_npz 6'
      % (exp, RUN, roots(root / 'weights', tmp_path / 'b'))))
  assert by_name['experiment_name'] == exp
  with np.load(by_flags['npz']) as a, np.load(by_name['npz']) as b:
    np.testing.assert_array_equal(a['x'], b['x'])
    np.testing.assert_array_equal(a['y'], b['y'])


def test_config_from_name_keeps_locations_and_explicit_flags(tmp_path):
  stored = {'G_ch': 96, 'dataset': 'I128_hdf5', 'num_inception_images': 5000, 'seed': 3,
            'weights_root': '/cluster/weights', 'samples_root': '/cluster/samples',
            'batch_size': 256, 'G_eval_mode': False, 'experiment_name': 'old', 'device': 'cuda:3'}
  os.makedirs(tmp_path / 'w' / 'exp')
  torch.save({'itr': 1, 'config': stored}, tmp_path / 'w' / 'exp' / 'state_dict.pth')
  argv = ('--experiment_name exp --config_from_name --weights_root %s --samples_root here '
          '--num_inception_images 100 --batch_size 8 --G_eval_mode' % (tmp_path / 'w')).split()
  config = sample.config_from_checkpoint(vars(sample.prepare_parser().parse_args(argv)),
                                         sample.given_flags(argv))
  assert (config['G_ch'], config['dataset'], config['seed']) == (96, 'I128_hdf5', 3)
  assert config['num_inception_images'] == 100  # given explicitly
  assert (config['weights_root'], config['samples_root'], config['experiment_name'],
          config['device']) == (str(tmp_path / 'w'), 'here', 'exp', 'auto')
  assert (config['batch_size'], config['G_eval_mode']) == (8, True)
  with pytest.raises(errors.UserError, match='--experiment_name'):
    sample.config_from_checkpoint(vars(sample.prepare_parser().parse_args(
        ['--config_from_name'])))


def test_a_tfhub_conversion_samples_in_eval_mode_by_default(tmp_path, capsys):
  """Its BN statistics are the converted (eval-mode) ones; other runs keep the command line's
  G_eval_mode, as in the original."""
  stored = {'G_ch': 4, 'G_eval_mode': False, 'experiment_name': 'x'}
  cases = [('conv', {'tfhub_module': 'biggan-128'}, stored, True),
           ('deep', {}, dict(stored, G_tfhub=True), True),
           ('run', {}, stored, False)]
  for exp, extra, config, eval_mode in cases:
    os.makedirs(tmp_path / exp)
    torch.save(dict(extra, itr=0, config=config), tmp_path / exp / 'state_dict.pth')
    argv = ['--experiment_name', exp, '--config_from_name', '--weights_root', str(tmp_path)]
    config = sample.config_from_checkpoint(vars(sample.prepare_parser().parse_args(argv)),
                                           sample.given_flags(argv))
    assert config['G_eval_mode'] is eval_mode, exp
    assert ('is a TF-Hub conversion' in capsys.readouterr().out) is eval_mode


def test_an_original_format_folder_samples_its_G_ema(tmp_path):
  """Pickled nn.ReLU in the config, numpy/tensor bests, no new config keys. G_ema's output is
  made constant (output BN gain 0, conv bias b), so every pixel must be round((tanh(b)+1)*127.5)."""
  args = configuration.prepare_parser().parse_args(shlex.split(MODEL))
  config = configuration.prepare_config(vars(args))
  exp = configuration.name_from_config(config)
  torch.manual_seed(0)
  G = BigGAN.Generator(**config)
  G_ema = BigGAN.Generator(**{**config, 'no_optim': True})
  bias = torch.tensor([0.9, -0.25, 0.0])
  with torch.no_grad():
    G_ema.output_layer[0].gain.zero_()
    G_ema.output_layer[0].bias.fill_(-1.0)
    G_ema.output_layer[2].bias.copy_(bias)
  folder = tmp_path / 'weights' / exp
  folder.mkdir(parents=True)
  original = {k: v for k, v in config.items() if k not in ('dataset_tag', 'device', 'G_tfhub',
                                                           'inception_net', 'amp')}
  original.update(G_activation=nn.ReLU(inplace=False), D_activation=nn.ReLU(inplace=False))
  for name, obj in [('G', G.state_dict()), ('G_ema', G_ema.state_dict()),
                    ('state_dict', {'itr': 7, 'epoch': 0, 'save_num': 0, 'save_best_num': 0,
                                    'best_IS': np.float64(1.5), 'best_FID': torch.tensor(90.),
                                    'config': original})]:
    torch.save(obj, folder / ('%s.pth' % name))
  results = sample.main(shlex.split('--experiment_name %s --config_from_name %s %s --sample_npz '
                                    '--sample_num_npz 4 --sample_sheets' % (
                                        exp, RUN, roots(tmp_path / 'weights', tmp_path))))
  with np.load(results['npz']) as f:
    x = f['x']
  expected = np.round((np.tanh(bias.numpy()) + 1) * 127.5)  # 219, 96, 128
  np.testing.assert_array_equal(x, np.broadcast_to(expected[None, :, None, None], x.shape))
  assert expected[2] == 128 and np.uint8(255 * (np.tanh(0.0) + 1) / 2) == 127  # the original's
  assert os.path.exists(tmp_path / 'samples' / exp / '7' / 'samples0.jpg')


def test_a_tfhub_conversion_samples_at_its_truncation(tmp_path, monkeypatch, capsys):
  config = vars(configuration.prepare_parser().parse_args(shlex.split(
      '--model BigGANdeep --G_tfhub --G_depth 2 --G_ch 4 --G_attn 0 --G_shared --hier --dim_z 16 '
      '--shared_dim 8 --dataset Shapes --resolution 32 --G_eval_mode --experiment_name deep')))
  config['n_classes'] = 10
  G = converter.build_G(config)
  with torch.no_grad():
    for m in G.truncation_bns():  # row i holds i / 50: the statistics of truncation t are t
      m.truncation_mean.copy_(torch.linspace(0, 1, 51)[:, None].expand_as(m.truncation_mean))
  converter.write_weights(G, config, str(tmp_path / 'weights'))
  seen = []
  real_sample = sampling.sample

  def recording_sample(G, z_, y_, config):
    images, labels = real_sample(G, z_, y_, config)
    seen.append((G.truncation_bns()[0].stored_mean.clone(), z_.abs().max().item()))
    return images, labels
  monkeypatch.setattr(sampling, 'sample', recording_sample)

  def argv(truncation, mode='tfhub'):
    return shlex.split('--experiment_name deep --config_from_name --G_eval_mode --batch_size 4 '
                       '--truncation %s --truncation_mode %s --sample_random %s'
                       % (truncation, mode, roots(tmp_path / 'weights', tmp_path)))
  results = sample.main(argv(0.4))
  (stored_mean, z_max), = seen
  torch.testing.assert_close(stored_mean, torch.full_like(stored_mean, 0.4))
  assert 0 < z_max <= 0.8
  assert os.path.exists(results['random'])
  # Another truncation mode still selects the statistics, with a notice.
  sample.main(argv(0.2, 'resample'))
  assert 'measured with --truncation_mode tfhub' in capsys.readouterr().out
  torch.testing.assert_close(seen[-1][0], torch.full_like(stored_mean, 0.2))
  assert seen[-1][1] <= 0.2
  # A folder with G_ema.pth instead of G.pth serves too; truncations beyond [0, 1] are refused.
  folder = tmp_path / 'weights' / 'deep'
  os.replace(folder / 'G.pth', folder / 'G_ema.pth')
  sample.main(argv(0.4))
  assert 'has no G.pth; sampling with G_ema instead' in capsys.readouterr().out
  os.remove(results['random'])
  line = one_line_error(capsys, sample.main, argv(1.5))
  assert 'truncation must be in [0, 1]' in line and not os.path.exists(results['random'])
