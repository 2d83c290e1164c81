"""The log plotters in logs/: parsers return exactly what the logs hold, plots are real images
whose panels follow the data, and bad logs give one-line errors naming the file and line."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import uniform_filter1d

import errors
from logs import logtools, plot_inception, plot_training, plot_truncation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, 'logs', 'BigGAN_ch96_bs256x8.jsonl')


def write_metric_log(path, itrs, values, style='%3.3e'):
  """As the training loop (and the original's MyLogger) writes it: 'itr: value' per line."""
  with open(path, 'a') as f:
    for itr, value in zip(itrs, values):
      f.write('%d: %s\n' % (itr, style % value))


def write_run(folder, n=300, sv_layers=(3, 2), rng=None):
  """A run folder: the three losses every iteration, SVs every 10 iterations."""
  rng = rng or np.random.default_rng(0)
  os.makedirs(folder)
  itrs = np.arange(1, n + 1)
  for name, level in [('G_loss', 1.0), ('D_loss_real', 0.5), ('D_loss_fake', 0.4)]:
    write_metric_log(os.path.join(folder, name + '.log'), itrs,
                     level + 0.3 * rng.standard_normal(n))
  for net, layers in zip('GD', sv_layers):
    for layer in range(layers):
      write_metric_log(os.path.join(folder, '%s_blocks_%d_0_conv1_sv0.log' % (net, layer)),
                       itrs[9::10], 1 + layer + itrs[9::10] / 100)
  return folder


def write_jsonl(path, records):
  with open(path, 'w') as f:
    for record in records:
      f.write(json.dumps(record) + '\n')


def image(path, min_kb=15):
  """Pixels of a real plot: decodes, not tiny, many colours."""
  assert os.path.getsize(path) > min_kb * 1024
  with Image.open(path) as img:
    pixels = np.asarray(img.convert('RGB'))
  rgb = pixels.astype(np.int32)
  assert len(np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])) > 50
  return pixels


# --- per-metric logs --------------------------------------------------------------------------


@pytest.mark.parametrize('style', ['%3.3e', '%3.3f'])
def test_metric_log_returns_the_written_values(tmp_path, style):
  path = str(tmp_path / 'G_loss.log')
  values = [1.234567, -0.5, 12345.678, 0.0, float('nan'), 3e-7]
  write_metric_log(path, [1, 2, 3, 10, 11, 1000000], values, style)
  itr, parsed = plot_training.read_metric_log(path)
  assert itr.dtype == np.int64 and itr.tolist() == [1, 2, 3, 10, 11, 1000000]
  expected = [float(style % v) for v in values]  # Python's own parse of each written string
  np.testing.assert_array_equal(parsed, expected)


def test_metric_log_tolerates_blank_lines_and_crlf(tmp_path):
  path = tmp_path / 'D_loss_real.log'
  path.write_bytes(b'5: 1.500e+00\r\n\r\n   \r\n6: -2.250e-01\r\n')
  itr, value = plot_training.read_metric_log(str(path))
  assert itr.tolist() == [5, 6] and value.tolist() == [1.5, -0.225]


@pytest.mark.parametrize('content, line', [
    ('1: 1.0\n2: 2.0\n3 1.0\n', 3),          # no colon
    ('1: 1.0\n2: tensor(2.0)\n', 2),          # not a number
    ('1: 1.0\n1.5: 2.0\n', 2),                # not an iteration
    ('1: 1.0\n2: 2.0: 3.0\n', 2),             # two colons
])
def test_malformed_metric_log_names_file_and_line(tmp_path, content, line):
  path = str(tmp_path / 'G_loss.log')
  with open(path, 'w') as f:
    f.write(content)
  with pytest.raises(errors.UserError, match=r'G_loss\.log:%d: expected' % line):
    plot_training.read_metric_log(path)


def test_empty_or_missing_metric_log(tmp_path):
  (tmp_path / 'G_loss.log').write_text('\n  \n')
  with pytest.raises(errors.UserError, match=r'G_loss\.log is empty'):
    plot_training.read_metric_log(str(tmp_path / 'G_loss.log'))
  with pytest.raises(errors.UserError, match='no such file'):
    plot_training.read_metric_log(str(tmp_path / 'D_loss_real.log'))
  (tmp_path / 'bin.log').write_bytes(b'\x80\x81\xff\x00')
  with pytest.raises(errors.UserError, match='not a text file'):
    plot_training.read_metric_log(str(tmp_path / 'bin.log'))


def test_smooth_matches_a_direct_running_mean():
  rng = np.random.default_rng(1)
  values = rng.standard_normal(200)
  # Interior points: scipy's centred uniform filter.
  np.testing.assert_allclose(plot_training.smooth(values, 9)[4:-4],
                             uniform_filter1d(values, 9)[4:-4], rtol=1e-12, atol=1e-12)
  # Everywhere, with NaN/inf skipped and shorter windows at the ends: a plain loop.
  values[[0, 50, 51, 120]] = [np.nan, np.inf, np.nan, -np.inf]
  expected = []
  for i in range(len(values)):
    window = values[max(0, i - 5):i + 6]
    expected.append(window[np.isfinite(window)].mean())
  np.testing.assert_allclose(plot_training.smooth(values, 11), expected, rtol=1e-12)
  np.testing.assert_allclose(plot_training.smooth(values[1:50], 1), values[1:50], rtol=1e-12)


def test_resumed_run_keeps_the_records_written_last():
  # Ran to 10, resumed from the checkpoint at 6 and got to 12; a second resume from 11.
  itr = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 7, 8, 9, 10, 11, 12, 12, 13])
  value = np.arange(len(itr)) * 1.0
  kept_itr, kept_value = logtools.drop_superseded(itr, value)
  assert kept_itr.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
  assert kept_value.tolist() == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 16, 17]
  assert logtools.drop_superseded(np.array([5]), np.array([1.0]))[1].tolist() == [1.0]


def test_plot_training_has_a_panel_per_group(tmp_path):
  with_svs = write_run(str(tmp_path / 'BigGAN_C10_seed0_a'), sv_layers=(14, 2))
  losses_only = write_run(str(tmp_path / 'BigGAN_C10_seed0_b'), sv_layers=(0, 0))
  # A resumed run appends; the plot must still work.
  write_metric_log(os.path.join(with_svs, 'G_loss.log'), range(250, 301), np.ones(51))
  groups = plot_training.find_metric_logs(with_svs)
  assert list(groups['G'])[:3] == ['blocks_0_0_conv1_sv0', 'blocks_1_0_conv1_sv0',
                                   'blocks_2_0_conv1_sv0']
  assert list(groups['G'])[-1] == 'blocks_13_0_conv1_sv0'  # natural order
  assert sorted(groups['losses']) == ['D_loss_fake', 'D_loss_real', 'G_loss']
  assert len(groups['D']) == 2

  out = plot_training.plot_training(with_svs + os.sep)  # default name beside the folder
  assert out == with_svs + '_training.png'
  three = image(out)
  with pytest.raises(errors.UserError, match='not an image file name'):
    plot_training.plot_training(losses_only, str(tmp_path / 'plots'))  # typo or folder?
  one = image(plot_training.plot_training(losses_only, str(tmp_path / 'plots') + os.sep, window=5))
  assert os.path.exists(str(tmp_path / 'plots' / 'BigGAN_C10_seed0_b_training.png'))
  assert three.shape[1] == one.shape[1] and three.shape[0] > 2 * one.shape[0]


def test_plot_training_errors(tmp_path):
  with pytest.raises(errors.UserError, match='no such folder'):
    plot_training.plot_training(str(tmp_path / 'missing'))
  with pytest.raises(errors.UserError, match='no <metric>.log files'):
    plot_training.plot_training(str(tmp_path))
  write_jsonl(str(tmp_path / 'x_log.jsonl'), [{'itr': 1, 'IS_mean': 1.0}])
  with pytest.raises(errors.UserError, match='plot_inception'):
    plot_training.plot_training(str(tmp_path / 'x_log.jsonl'))
  with pytest.raises(errors.UserError, match='--window'):
    plot_training.plot_training(str(tmp_path), window=-1)


# --- Inception-metrics logs -------------------------------------------------------------------


def test_reference_log_is_parsed_exactly():
  log = plot_inception.read_inception_log(REFERENCE)
  assert len(log['itr']) == 68
  assert log['itr'][0] == 2000 and log['itr'][-1] == 138000
  assert np.all(log['itr'] % 2000 == 0) and np.all(np.diff(log['itr']) > 0)
  assert 16000 not in log['itr']  # the released log has no record there
  assert log['IS_mean'][0] == 2.806771755218506
  assert log['IS_std'][0] == 0.019480662420392036
  assert log['FID'][0] == 173.76484159711126
  assert log['IS_mean'][-1] == 93.09217834472656 and log['FID'][-1] == 9.908477783203125
  assert log['inception_nets'] == {'torchvision'}


def test_inception_log_tolerates_extra_keys_and_missing_fid(tmp_path):
  path = str(tmp_path / 'run_log.jsonl')
  write_jsonl(path, [
      {'itr': 10, 'IS_mean': 1.5, 'IS_std': 0.25, 'FID': 100.5, '_stamp': 1.0},
      {'itr': 20, 'IS_mean': 2.5, 'IS_std': 0.5, 'FID': None, '_stamp': 2.0,
       'inception_net': 'tf'},
      {'itr': 30.0, 'IS_mean': 3, 'extra': [1, 2]},
  ])
  log = plot_inception.read_inception_log(path)
  assert log['itr'].tolist() == [10, 20, 30]
  assert log['IS_mean'].tolist() == [1.5, 2.5, 3.0]
  assert log['IS_std'][:2].tolist() == [0.25, 0.5] and math.isnan(log['IS_std'][2])
  assert log['FID'][0] == 100.5 and np.isnan(log['FID'][1:]).all()
  assert log['inception_nets'] == {'torchvision', 'tf'}
  line = plot_inception.summary(path, plot_inception.load_run(path))
  assert 'best IS 3.000 at itr 30' in line and 'best FID 100.500 at itr 10' in line


@pytest.mark.parametrize('lines, message', [
    (['{"itr": 2, "IS_mean": 1.0}', '{"itr": 4, "IS_mean": 1.0'],
     r'run_log\.jsonl:2: not valid JSON'),
    (['{"itr": 2, "IS_mean": 1.0}', '', '{"itr": 4}'], r'run_log\.jsonl:3: no "itr" and "IS_mean"'),
    (['[2, 1.0]'], r'run_log\.jsonl:1: no "itr"'),
    (['{"itr": 2, "IS_mean": "7.5"}'], r'run_log\.jsonl:1: "IS_mean" is \'7\.5\', not a number'),
    (['{"itr": 2, "IS_mean": 7.5, "FID": true}'], r'run_log\.jsonl:1: "FID" is True'),
    (['{"itr": 2.5, "IS_mean": 7.5}'], r'run_log\.jsonl:1: "itr" is 2\.5'),
    (['', '  '], r'run_log\.jsonl is empty'),
])
def test_malformed_inception_log_names_file_and_line(tmp_path, lines, message):
  path = tmp_path / 'run_log.jsonl'
  path.write_text('\n'.join(lines) + '\n')
  with pytest.raises(errors.UserError, match=message):
    plot_inception.read_inception_log(str(path))


def test_reference_overlay_is_decided_from_the_dataset_in_the_name(tmp_path):
  i128 = 'BigGAN_I128_hdf5_seed0_Gch96_Dch96_bs256_nDa8_nGa8_Gshared_hier_ema_log.jsonl'
  assert plot_inception.is_imagenet128('logs/' + i128)
  assert plot_inception.is_imagenet128('BigGAN_I128_seed0_log.jsonl')
  assert not plot_inception.is_imagenet128('I128_runs/BigGAN_C10_seed0_log.jsonl')
  assert not plot_inception.is_imagenet128('BigGAN_I1280_seed0_log.jsonl')
  assert not plot_inception.is_imagenet128('BigGAN_I64_hdf5_seed0_I128x_log.jsonl')
  c10 = 'BigGAN_C10_seed0_log.jsonl'
  assert plot_inception.wants_reference([c10, i128], 'auto')
  assert not plot_inception.wants_reference([c10], 'auto')
  assert plot_inception.wants_reference([c10], 'on')
  assert not plot_inception.wants_reference([i128], 'off')
  assert not plot_inception.wants_reference([REFERENCE], 'on')  # never on itself

  # And the picture follows the decision.
  path = str(tmp_path / c10)
  write_jsonl(path, [{'itr': i, 'IS_mean': 1.0 + i / 1000, 'IS_std': 0.1, 'FID': 200 - i / 500}
                     for i in range(2000, 40001, 2000)])
  pictures = {mode: image(plot_inception.plot_inception([path], str(tmp_path / mode) + '.png',
                                                         reference=mode))
              for mode in ('auto', 'on', 'off')}
  np.testing.assert_array_equal(pictures['auto'], pictures['off'])
  assert pictures['on'].shape != pictures['off'].shape or \
      np.any(pictures['on'] != pictures['off'])
  with pytest.raises(errors.UserError, match='--reference off'):
    plot_inception.plot_inception([path], str(tmp_path / 'x.png'), 'on',
                                  str(tmp_path / 'missing.jsonl'))


def test_plot_inception_main_compares_runs(tmp_path, capsys):
  released = str(tmp_path / 'BigGAN_ch96_bs256x8.jsonl')
  with open(REFERENCE) as f, open(released, 'w') as g:
    g.write(f.read())
  run = str(tmp_path / 'BigGAN_I128_hdf5_seed0_test_log.jsonl')
  write_jsonl(run, [{'itr': 2000, 'IS_mean': 3.0, 'IS_std': 0.1, 'FID': None},
                    {'itr': 4000, 'IS_mean': 5.0, 'IS_std': 0.1, 'FID': None}])
  plot_inception.main([released, run])
  printed = capsys.readouterr().out
  assert 'BigGAN_ch96_bs256x8: 68 records up to itr 138000; best IS 93.092 at itr 138000; ' \
         'best FID 9.771 at itr 130000\n' in printed
  assert 'BigGAN_I128_hdf5_seed0_test: 2 records up to itr 4000; best IS 5.000 at itr 4000\n' \
         in printed
  out = str(tmp_path / 'BigGAN_ch96_bs256x8_inception.png')  # default: beside the first log
  assert printed.endswith('wrote %s\n' % out)
  image(out)
  plot_inception.main([run, '--out', str(tmp_path)])
  image(str(tmp_path / 'BigGAN_I128_hdf5_seed0_test_inception.png'))


# --- the logs of a real training run ----------------------------------------------------------


def test_plots_from_the_logs_a_training_run_wrote(tmp_path, monkeypatch, capsys):
  """train.py on the built-in dataset (IS/FID scripted, no Inception network): the plotters read
  back what the run logged, and the last logged singular values are those of its checkpoint."""
  import checkpoints
  import logger
  import train
  from test_train_metrics import argv, experiment, scripted_metrics
  metrics = [(1.25, 0.125, 90.5), (2.75, 0.25, 60.25)]  # (IS_mean, IS_std, FID) at itr 2, 4
  scripted_metrics(monkeypatch, metrics)
  logged = {}
  real_log_rows = logger.MyLogger.log_rows

  def log_rows(self, rows):
    for itr, values in rows:
      for name, value in values.items():
        logged.setdefault(name, []).append((itr, value))
    return real_log_rows(self, rows)
  monkeypatch.setattr(logger.MyLogger, 'log_rows', log_rows)
  extra = ('--num_iters 4 --save_every 1000 --test_every 2 --sv_log_interval 2 --log_G_spectra '
           '--log_D_spectra --G_eval_mode')  # (eval mode: measuring leaves G's SVs alone)
  train.main(argv(tmp_path, extra))
  exp = experiment(tmp_path, extra)
  logdir = str(tmp_path / 'logs' / exp)

  groups = plot_training.find_metric_logs(logdir)
  assert {'G_loss', 'D_loss_real', 'D_loss_fake'} <= set(groups['losses'])
  assert groups['G'] and groups['D']
  for group in groups.values():
    for path in group.values():
      key = os.path.basename(path)[:-len('.log')]
      itr, value = plot_training.read_metric_log(path)
      assert itr.tolist() == [i for i, _ in logged[key]]
      assert itr.tolist() == ([1, 2, 3, 4] if group is groups['losses'] else [2, 4])
      np.testing.assert_array_equal(value, [float('%3.3e' % v) for _, v in logged[key]])
  # The singular values logged at the last iteration are those the checkpoint holds.
  for net in 'GD':
    saved = checkpoints.safe_load(os.path.join(str(tmp_path / 'weights' / exp), net + '.pth'))
    svs = {('%s_%s' % (net, k)).replace('.', '_'): float(v) for k, v in saved.items()
           if k.split('.')[-1].startswith('sv')}
    assert set(svs) == {'%s_%s' % (net, name) for name in groups[net]}
    for name, sv in svs.items():
      assert plot_training.read_metric_log(groups[net][name[2:]])[1][-1] == \
          pytest.approx(sv, rel=1e-3)
  out = str(tmp_path / 'training.png')
  plot_training.main([logdir, '--out', out])
  image(out)

  jsonl = str(tmp_path / 'logs' / ('%s_log.jsonl' % exp))
  log = plot_inception.read_inception_log(jsonl)
  assert log['itr'].tolist() == [2, 4]
  for i, key in enumerate(['IS_mean', 'IS_std', 'FID']):
    assert log[key].tolist() == [m[i] for m in metrics]
  capsys.readouterr()
  plot_inception.main([jsonl, '--out', str(tmp_path)])
  printed = capsys.readouterr().out
  assert '%s: 2 records up to itr 4; best IS 2.750 at itr 4; best FID 60.250 at itr 4' % exp \
      in printed
  image(str(tmp_path / ('%s_inception.png' % exp)))


# --- truncation curves ------------------------------------------------------------------------


def write_curve(path, with_fid=True, header='truncation,IS_mean,IS_std,FID'):
  rows = [header]
  for t in np.arange(0.1, 1.01, 0.1):
    rows.append('%g,%.6f,%.6f,%s' % (t, 100 - 60 * t * t, 1 + t,
                                     '%.6f' % (30 - 25 * t + 10 * t ** 3) if with_fid else ''))
  with open(path, 'w') as f:
    f.write('\n'.join(rows) + '\n')
  return path


def test_truncation_csv_values(tmp_path):
  curve = plot_truncation.read_truncation_csv(write_curve(str(tmp_path / 'c.csv')))
  assert curve['truncation'][0] == 0.1 and curve['truncation'][-1] == 1.0
  assert curve['IS_mean'][1] == float('%.6f' % (100 - 60 * 0.2 ** 2))
  assert curve['FID'][-1] == 15.0
  no_fid = plot_truncation.read_truncation_csv(write_curve(str(tmp_path / 'n.csv'), False))
  assert np.isnan(no_fid['FID']).all() and no_fid['IS_std'][0] == 1.1
  # Columns in another order plus an extra one.
  (tmp_path / 'o.csv').write_text('FID,seed,IS_std,IS_mean,truncation\n12.5,0,,80.25,0.5\n')
  other = plot_truncation.read_truncation_csv(str(tmp_path / 'o.csv'))
  assert other['truncation'].tolist() == [0.5] and other['IS_mean'].tolist() == [80.25]
  assert other['FID'].tolist() == [12.5] and np.isnan(other['IS_std'][0])


def test_plot_truncation_curve_panels(tmp_path):
  three = image(plot_truncation.plot_truncation_curve(write_curve(str(tmp_path / 'c.csv'))))
  assert os.path.exists(str(tmp_path / 'c.png'))
  one = image(plot_truncation.plot_truncation_curve(
      write_curve(str(tmp_path / 'n.csv'), False), str(tmp_path / 'n_plot.png')))
  assert three.shape[0] > 2 * one.shape[0]


@pytest.mark.parametrize('content, message', [
    ('truncation,IS_mean,FID\n0.5,1,2\n', r'c\.csv:1: the header has no column IS_std'),
    ('truncation,IS_mean,IS_std,FID\n0.5,1,2,3\n0.6,x,2,3\n', r"c\.csv:3: IS_mean is 'x'"),
    ('truncation,IS_mean,IS_std,FID\n,1,2,3\n', r"c\.csv:2: truncation is ''"),
    ('truncation,IS_mean,IS_std,FID\n0.5,1,2\n', r'c\.csv:2: 3 values for the 4 columns'),
    ('truncation,IS_mean,IS_std,FID\n\n', r'c\.csv has a header but no rows'),
    ('', r'c\.csv is empty'),
])
def test_malformed_truncation_csv(tmp_path, content, message):
  (tmp_path / 'c.csv').write_text(content)
  with pytest.raises(errors.UserError, match=message):
    plot_truncation.plot_truncation_curve(str(tmp_path / 'c.csv'))
  assert not os.path.exists(str(tmp_path / 'c.png'))


# --- shared behaviour -------------------------------------------------------------------------


def test_failures_leave_existing_files_alone(tmp_path):
  out = tmp_path / 'plot.png'
  out.write_bytes(b'an older plot')
  (tmp_path / 'c.csv').write_text('truncation,IS_mean,IS_std,FID\n0.5,oops,1,\n')
  with pytest.raises(errors.UserError):
    plot_truncation.plot_truncation_curve(str(tmp_path / 'c.csv'), str(out))
  assert out.read_bytes() == b'an older plot'
  curve = write_curve(str(tmp_path / 'good.csv'))
  with pytest.raises(errors.UserError, match='not an image file name'):
    plot_truncation.plot_truncation_curve(curve, curve)
  assert plot_truncation.read_truncation_csv(curve)['truncation'].size == 10
  plot_truncation.plot_truncation_curve(curve, str(out))  # replaced only on success
  assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert sorted(os.listdir(str(tmp_path))) == ['c.csv', 'good.csv', 'plot.png']  # no temp files


def test_missing_matplotlib_is_a_user_error(tmp_path, monkeypatch):
  for name in [name for name in sys.modules if name.split('.')[0] == 'matplotlib'] + ['matplotlib']:
    monkeypatch.setitem(sys.modules, name, None)  # None makes any import of it fail
  with pytest.raises(errors.UserError, match='pip install matplotlib'):
    plot_truncation.plot_truncation_curve(write_curve(str(tmp_path / 'c.csv')))


def test_scripts_run_as_files_with_one_line_errors(tmp_path):
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'G_loss.log').write_text('1: 1.0\n2: 1.0\nbroken\n')
  script = os.path.join(ROOT, 'logs', 'plot_training.py')
  result = subprocess.run([sys.executable, script, str(tmp_path / 'run')], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and result.stdout == ''
  assert result.stderr.count('\n') == 1
  assert result.stderr.startswith('error: %s:3: expected' % (tmp_path / 'run' / 'G_loss.log'))
  assert not os.path.exists(str(tmp_path / 'run_training.png'))
