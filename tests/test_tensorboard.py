"""--tensorboard: a clear error without the package; with it, scalars and samples are mirrored."""
import sys
import types

import pytest

import errors
import train
from test_train import argv


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
  train.main(argv(tmp_path, '--num_iters 4 --save_every 2 --tensorboard'))
  assert calls[0][0] == 'dir' and calls[0][1].endswith('/tb') and calls[-1] == ('close',)
  g_loss = [c[2] for c in calls if c[:2] == ('scalar', 'G_loss')]
  assert g_loss == [1, 2, 3, 4]
  assert any(c[0] == 'scalar' and c[1].endswith('_sv0') and c[2] == 2 for c in calls)
  images = [c for c in calls if c[0] == 'image']
  assert [c[2] for c in images] == [2, 4] and all(c[1] == 'fixed_samples' for c in images)
  assert images[0][3][0] == 3  # a CHW grid
