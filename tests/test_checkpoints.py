"""Checkpoints: the original's layout both ways, atomic sets under SIGKILL, safe loading, disk
errors, newest-save selection, random state."""
import errno
import multiprocessing
import os
import random
import signal

import numpy as np
import pytest
import torch
import torch.nn as nn

import checkpoints
from errors import UserError


class Net(nn.Module):
  """A stand-in for G or D: weights and optimizer state stamped with an iteration number."""

  def __init__(self, value=0.0):
    super(Net, self).__init__()
    self.layer = nn.Linear(3, 3)
    self.register_buffer('u0', torch.zeros(1, 3))
    self.optim = torch.optim.Adam(self.parameters(), lr=1e-3)
    self.stamp(value)

  def stamp(self, value):
    with torch.no_grad():
      for t in self.state_dict().values():
        t.fill_(value)
    for group in self.optim.param_groups:
      group['lr'] = float(value)

  def stamp_of(self, with_optim=True):
    values = {float(t.flatten()[0]) for t in self.state_dict().values()}
    if with_optim:
      values.add(self.optim.param_groups[0]['lr'])
    assert len(values) == 1, 'mixed checkpoint: %s' % values
    return values.pop()


def save(root, itr, suffix=None, ema=True):
  G, D, G_ema = Net(itr), Net(itr), Net(itr)
  state = {'itr': itr, 'epoch': 0, 'save_num': 0, 'save_best_num': 0, 'best_IS': np.float64(1.5),
           'best_FID': torch.tensor(9.0), 'config': {'G_activation': nn.ReLU(), 'G_lr': 1e-4}}
  checkpoints.save_weights(G, D, state, str(root), 'exp', suffix, G_ema if ema else None)


def load(root, suffix=None):
  G, D, G_ema = Net(), Net(), Net()
  state = {'itr': -1, 'epoch': -1, 'save_num': 0, 'save_best_num': 0, 'best_IS': 0,
           'best_FID': 0, 'config': {}}
  checkpoints.load_weights(G, D, state, str(root), 'exp', suffix, G_ema)
  stamps = {G.stamp_of(), D.stamp_of(), G_ema.stamp_of(False), float(state['itr'])}
  assert len(stamps) == 1, 'mixed checkpoint: %s' % stamps
  return state


def test_layout_and_plain_state(tmp_path):
  save(tmp_path, 7)
  save(tmp_path, 7, 'copy1')
  files = sorted(os.listdir(tmp_path / 'exp'))
  assert files == sorted('%s%s.pth' % (name, suffix) for suffix in ['', '_copy1']
                         for name in ['G', 'G_optim', 'D', 'D_optim', 'G_ema', 'state_dict'])
  # Plain tensors and values only: loadable with weights_only=True and no allow-list at all.
  state = torch.load(tmp_path / 'exp' / 'state_dict.pth', weights_only=True)
  assert state['itr'] == 7 and state['config'] == {'G_lr': 1e-4}
  assert type(state['best_IS']) is float and type(state['best_FID']) is float
  assert load(tmp_path, 'copy1')['itr'] == 7


def test_original_checkpoint_loads(tmp_path):
  """A folder as the original wrote it: plain torch.save, nn.ReLU and numpy scalars pickled."""
  root = tmp_path / 'exp'
  root.mkdir()
  G, D, G_ema = Net(3), Net(3), Net(3)
  for name, obj in [('G', G.state_dict()), ('G_optim', G.optim.state_dict()), ('D', D.state_dict()),
                    ('D_optim', D.optim.state_dict()), ('G_ema', G_ema.state_dict()),
                    ('state_dict', {'itr': 3, 'epoch': 1, 'save_num': 1, 'save_best_num': 0,
                                    'best_IS': np.float64(2.5), 'best_FID': torch.tensor(50.),
                                    'config': {'G_activation': nn.ReLU(inplace=True),
                                               'D_activation': nn.ReLU(inplace=False)}})]:
    torch.save(obj, root / ('%s_best0.pth' % name))
  state = load(tmp_path, 'best0')
  assert (state['itr'], state['epoch'], float(state['best_IS'])) == (3, 1, 2.5)
  assert isinstance(state['config']['G_activation'], nn.ReLU)


class Evil(object):
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, ('touch %s' % self.marker,))


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
  marker = tmp_path / 'pwned'
  save(tmp_path, 1)
  torch.save({'itr': 1, 'payload': Evil(str(marker))}, tmp_path / 'exp' / 'state_dict.pth')
  with pytest.raises(UserError, match='refusing to load .*state_dict.pth'):
    load(tmp_path)
  assert not marker.exists()


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
  save(tmp_path, 1)
  path = tmp_path / 'exp' / 'G.pth'
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(UserError, match='cannot read checkpoint .*G.pth'):
    load(tmp_path)


def crash_while_saving(root, kill_at):
  """Child process: save itr 2 over itr 1 and die (SIGKILL) at file operation number kill_at."""
  calls = [0]
  real_write, real_replace = checkpoints._write, os.replace

  def count():
    calls[0] += 1
    if calls[0] == kill_at:
      os.kill(os.getpid(), signal.SIGKILL)

  def write(obj, path):
    count()
    real_write(obj, path)

  def replace(src, dst):
    count()
    real_replace(src, dst)
  checkpoints._write = write
  checkpoints.os.replace = replace
  save(root, 2)
  os._exit(0)


@pytest.mark.parametrize('kill_at', range(1, 13))  # 6 writes then 6 renames
def test_sigkill_during_a_save_never_mixes_two_saves(tmp_path, kill_at):
  save(tmp_path, 1)
  process = multiprocessing.get_context('fork').Process(target=crash_while_saving,
                                                        args=(tmp_path, kill_at))
  process.start()
  process.join()
  assert process.exitcode == -signal.SIGKILL
  itr = load(tmp_path)['itr']  # recovers, then checks every file has one stamp
  # Killed while writing: the old save; killed while renaming: the new one, completed.
  assert itr == (1 if kill_at <= 6 else 2)
  assert not [f for f in os.listdir(tmp_path / 'exp') if f.endswith('.new')]


def test_failed_write_keeps_the_previous_save(tmp_path, monkeypatch):
  save(tmp_path, 1)
  calls = [0]
  real_save = torch.save

  def full_disk(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == 3:
      raise OSError(errno.ENOSPC, 'No space left on device')
    return real_save(obj, f, *args, **kwargs)
  monkeypatch.setattr(torch, 'save', full_disk)
  with pytest.raises(UserError, match='disk is full.*previous checkpoint there is intact'):
    save(tmp_path, 2)
  monkeypatch.undo()
  assert load(tmp_path)['itr'] == 1
  assert not [f for f in os.listdir(tmp_path / 'exp') if f.endswith('.new')]


def test_newest_complete_save(tmp_path):
  with pytest.raises(UserError, match='no complete checkpoint'):
    checkpoints.newest_save(str(tmp_path), 'exp')
  save(tmp_path, 5, 'copy1')
  save(tmp_path, 8, 'best0')
  save(tmp_path, 10, 'copy0')
  save(tmp_path, 10)
  os.remove(tmp_path / 'exp' / 'D_optim_copy0.pth')  # incomplete: not a candidate
  suffix, found = checkpoints.newest_save(str(tmp_path), 'exp')
  assert suffix is None and found == {None: 10, 'copy1': 5, 'best0': 8}
  os.remove(tmp_path / 'exp' / 'G.pth')
  assert checkpoints.newest_save(str(tmp_path), 'exp')[0] == 'best0'


def test_rng_state_round_trip(tmp_path):
  random.seed(1)
  np.random.seed(2)
  torch.manual_seed(3)
  np.random.randn()  # a cached gaussian in numpy's state too
  state = checkpoints.rng_state()
  torch.save(state, tmp_path / 'rng.pth')
  first = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist())
  checkpoints.set_rng_state(torch.load(tmp_path / 'rng.pth', weights_only=True))
  assert (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist()) == first
