"""--tensorboard: a clear error without the package; with it, scalars (losses, SVs, IS/FID) and
samples are mirrored. The fake SummaryWriter runs everywhere; the event-file test needs the
optional tensorboard package (pip install tensorboard) and is skipped without it."""
import sys
import types

import pytest

import errors
import train
from test_train import argv, experiment
from test_train_metrics import scripted_metrics

METRICS = [(1.5, 0.25, 80.0), (2.5, 0.5, 70.0)]  # (IS_mean, IS_std, FID) at itr 2 and 4
RUN = '--num_iters 4 --save_every 2 --test_every 2 --tensorboard'


def test_without_tensorboard_installed_the_run_stops_before_training(tmp_path, capsys,
                                                                     monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)  # import fails
  with pytest.raises(SystemExit):
    errors.run_main(train.main, argv(tmp_path, '--num_iters 2 --tensorboard'))
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'pip install tensorboard' in err[0]
  assert not (tmp_path / 'weights').exists() or not list((tmp_path / 'weights').iterdir())


def test_scalars_and_samples_are_mirrored(tmp_path, monkeypatch):
  calls = []

  class SummaryWriter(object):
    def __init__(self, log_dir):
      calls.append(('dir', log_dir))

    def add_scalar(self, name, value, itr):
      calls.append(('scalar', name, itr, value))

    def add_image(self, tag, image, itr):
      calls.append(('image', tag, itr, tuple(image.shape)))

    def close(self):
      calls.append(('close',))
  module = types.ModuleType('torch.utils.tensorboard')
  module.SummaryWriter = SummaryWriter
  monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', module)
  scripted_metrics(monkeypatch, METRICS)
  train.main(argv(tmp_path, RUN))
  assert calls[0][0] == 'dir' and calls[0][1].endswith('/tb') and calls[-1] == ('close',)
  g_loss = [c[2] for c in calls if c[:2] == ('scalar', 'G_loss')]
  assert g_loss == [1, 2, 3, 4]
  assert any(c[0] == 'scalar' and c[1].endswith('_sv0') and c[2] == 2 for c in calls)
  images = [c for c in calls if c[0] == 'image']
  assert [c[2] for c in images] == [2, 4] and all(c[1] == 'fixed_samples' for c in images)
  assert images[0][3][0] == 3  # a CHW grid
  for i, name in enumerate(['IS_mean', 'IS_std', 'FID']):
    assert [(c[2], c[3]) for c in calls if c[:2] == ('scalar', name)] == [
        (2, METRICS[0][i]), (4, METRICS[1][i])]


def test_the_event_file_holds_what_the_run_logged(tmp_path, monkeypatch):
  pytest.importorskip('tensorboard')
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  scripted_metrics(monkeypatch, METRICS)
  run = RUN.replace('--save_every 2', '--save_every 4')  # one set of sample sheets is enough
  train.main(argv(tmp_path, run))
  exp = experiment(tmp_path, run)
  events = EventAccumulator(str(tmp_path / 'logs' / exp / 'tb'), size_guidance={'images': 0})
  events.Reload()
  tags = events.Tags()
  assert {'G_loss', 'D_loss_real', 'D_loss_fake', 'IS_mean', 'IS_std', 'FID'} <= set(
      tags['scalars'])
  assert any(tag.endswith('_sv0') for tag in tags['scalars'])
  with open(tmp_path / 'logs' / exp / 'G_loss.log') as f:  # the text log, %3.3e
    logged = [(int(i), float(v)) for i, v in (line.split(':') for line in f)]
  G_loss = [(e.step, e.value) for e in events.Scalars('G_loss')]
  assert [s for s, _ in G_loss] == [i for i, _ in logged] == [1, 2, 3, 4]
  for (_, value), (_, text) in zip(G_loss, logged):
    assert value == pytest.approx(text, rel=1e-3)
  for i, name in enumerate(['IS_mean', 'IS_std', 'FID']):
    assert [(e.step, e.value) for e in events.Scalars(name)] == [
        (2, pytest.approx(METRICS[0][i])), (4, pytest.approx(METRICS[1][i]))]
  images = events.Images('fixed_samples')
  assert [e.step for e in images] == [4]
  assert images[0].width > 32 and images[0].height > 32 and \
      images[0].encoded_image_string[:4] == b'\x89PNG'
