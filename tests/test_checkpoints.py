"""Checkpoints: the original's layout both ways, atomic sets under SIGKILL, safe loading, disk
errors, newest-save selection, random state. (The training logs' disk errors: test_logger.py.)"""
import errno
import io
import multiprocessing
import os
import random
import signal

import numpy as np
import pytest
import torch
import torch.nn as nn

import checkpoints
from conftest import failing_replace
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


def files_of(root, suffix=None):
  """The bytes of every file of a set, to compare saves bit for bit."""
  names = checkpoints.MODEL_FILES + (checkpoints.STATE_FILE,)
  return {name: open(checkpoints.file_path(str(root / 'exp'), name, suffix), 'rb').read()
          for name in names}


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


def killed_saving_over_itr_1(root, crash, arg):
  """Save itr 1, then run crash(root, arg) in a child that SIGKILLs itself while saving itr 2.
  Returns the files of the first save."""
  save(root, 1)
  before = files_of(root)
  process = multiprocessing.get_context('fork').Process(target=crash, args=(root, arg))
  process.start()
  process.join()
  assert process.exitcode == -signal.SIGKILL
  return before


# 6 writes (the state file to .part), the commit (.part -> .new), then 6 renames.
@pytest.mark.parametrize('kill_at', range(1, 14))
def test_sigkill_during_a_save_never_mixes_two_saves(tmp_path, kill_at):
  before = killed_saving_over_itr_1(tmp_path, crash_while_saving, kill_at)
  itr = load(tmp_path)['itr']  # recovers, then checks every file has one stamp
  # Killed before the commit: the old save, bit for bit; after it: the new one, completed.
  assert itr == (1 if kill_at <= 7 else 2)
  assert (files_of(tmp_path) == before) == (kill_at <= 7)
  assert all(f.endswith('.pth') for f in os.listdir(tmp_path / 'exp'))


def crash_inside_a_write(root, cut_file):
  """Child process: save itr 2 over itr 1; file number cut_file (G, G_optim, D, D_optim, G_ema,
  state_dict) gets half its bytes on disk, fsynced, then the process dies (SIGKILL)."""
  calls = [0]
  real_save = torch.save

  def save_half_then_die(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] != cut_file:
      return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
  torch.save = save_half_then_die
  save(root, 2)
  os._exit(0)


@pytest.mark.parametrize('cut_file', range(1, 7))
def test_sigkill_inside_a_file_write_keeps_the_previous_save(tmp_path, cut_file):
  before = killed_saving_over_itr_1(tmp_path, crash_inside_a_write, cut_file)
  assert [f for f in os.listdir(tmp_path / 'exp') if not f.endswith('.pth')]  # half-written
  assert checkpoints.newest_save(str(tmp_path), 'exp') == (None, {None: 1})  # recovers first
  assert files_of(tmp_path) == before  # bit for bit
  assert sorted(os.listdir(tmp_path / 'exp')) == sorted(
      os.path.basename(checkpoints.file_path('', name)) for name in before)
  assert load(tmp_path)['itr'] == 1


def test_a_cut_short_new_state_file_does_not_commit_its_set(tmp_path, capsys):
  """As an older writer (one without the .part step) leaves it when killed inside the state file:
  every file of itr 2 under .new names, the state file half written."""
  save(tmp_path, 1)
  before = files_of(tmp_path)
  save(tmp_path / 'other', 2)
  for name, data in files_of(tmp_path / 'other').items():
    if name == checkpoints.STATE_FILE:
      data = data[:len(data) // 2]
    (tmp_path / 'exp' / (name + '.pth.new')).write_bytes(data)
  assert load(tmp_path)['itr'] == 1
  assert files_of(tmp_path) == before
  assert all(f.endswith('.pth') for f in os.listdir(tmp_path / 'exp'))
  assert 'not completing an interrupted save: cannot read checkpoint' in capsys.readouterr().err


def test_an_unreadable_set_is_skipped_with_one_warning(tmp_path, capsys):
  save(tmp_path, 10)
  save(tmp_path, 5, 'copy0')
  save(tmp_path, 7, 'copy1')
  root = tmp_path / 'exp'
  data = (root / 'state_dict.pth').read_bytes()
  (root / 'state_dict.pth').write_bytes(data[:len(data) // 2])
  torch.save({'epoch': 3}, root / 'state_dict_copy1.pth')  # no itr
  capsys.readouterr()
  assert checkpoints.newest_save(str(tmp_path), 'exp') == ('copy0', {'copy0': 5})
  plain, copy1 = capsys.readouterr().err.strip().splitlines()  # one warning per bad set
  assert plain.startswith('warning: skipping the plain checkpoint set: cannot read checkpoint '
                          '%s/state_dict.pth' % root)
  assert copy1 == ('warning: skipping the copy1 checkpoint set: %s/state_dict_copy1.pth has no '
                   'iteration count (itr)' % root)
  os.remove(root / 'state_dict_copy0.pth')
  with pytest.raises(UserError, match=r'no complete checkpoint .*\(skipped: cannot read checkpoint '
                     r'.*state_dict\.pth.*; .*state_dict_copy1\.pth has no iteration count'):
    checkpoints.newest_save(str(tmp_path), 'exp')


def test_a_failed_commit_keeps_the_previous_save(tmp_path, monkeypatch):
  save(tmp_path, 1)
  before = files_of(tmp_path)
  failing_replace(monkeypatch, 1)  # the .part -> .new rename that commits the set
  with pytest.raises(UserError, match='state_dict.pth .the disk is full.; the previous checkpoint '
                                      'there is intact'):
    save(tmp_path, 2)
  monkeypatch.undo()
  assert files_of(tmp_path) == before
  assert all(f.endswith('.pth') for f in os.listdir(tmp_path / 'exp'))


def test_a_failed_rename_after_the_commit_is_finished_by_the_next_load(tmp_path, monkeypatch):
  save(tmp_path, 1)
  failing_replace(monkeypatch, 3, errno.EACCES)  # G and G_optim are in place, D is not
  with pytest.raises(UserError, match='could not rename .*Permission denied.*complete under .new'):
    save(tmp_path, 2)
  with pytest.raises(UserError, match='could not finish an interrupted save in .*exp .*D.pth.new: '
                                      'Permission denied'):
    load(tmp_path)  # the folder is still not writable
  monkeypatch.undo()
  assert load(tmp_path)['itr'] == 2
  assert all(f.endswith('.pth') for f in os.listdir(tmp_path / 'exp'))


def test_an_unwritable_weights_root_is_a_user_error(tmp_path, monkeypatch):
  def makedirs(path, exist_ok=False):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
  monkeypatch.setattr(os, 'makedirs', makedirs)
  with pytest.raises(UserError, match='could not create the checkpoint folder .*exp .Read-only'):
    save(tmp_path, 1)


def test_recover_false_leaves_interrupted_saves_alone(tmp_path):
  save(tmp_path, 1)
  save(tmp_path, 2, 'copy0')
  root = tmp_path / 'exp'
  for f in os.listdir(root):  # copy0 committed but not yet renamed into place
    if 'copy0' in f:
      os.rename(root / f, root / (f + '.new'))
  pending = sorted(os.listdir(root))
  assert checkpoints.newest_save(str(tmp_path), 'exp', recover=False) == (None, {None: 1})
  with pytest.raises(UserError, match='G_copy0.pth does not exist'):
    checkpoints.load_weights(Net(), Net(), {}, str(tmp_path), 'exp', 'copy0', recover=False)
  assert sorted(os.listdir(root)) == pending
  assert checkpoints.newest_save(str(tmp_path), 'exp') == ('copy0', {None: 1, 'copy0': 2})
  assert load(tmp_path, 'copy0')['itr'] == 2


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


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full (Linux)')
def test_a_really_full_disk_keeps_the_previous_save(tmp_path, monkeypatch):
  """torch.save into a full device (its error is a RuntimeError, the ENOSPC comes at the flush)."""
  save(tmp_path, 1)
  before = files_of(tmp_path)
  real_open = open

  def open_full_for_D(path, *args, **kwargs):
    return real_open('/dev/full' if path.endswith('/D.pth.new') else path, *args, **kwargs)
  monkeypatch.setattr(checkpoints, 'open', open_full_for_D, raising=False)
  with pytest.raises(UserError, match='state_dict.pth .the disk is full.; the previous checkpoint '
                                      'there is intact'):
    save(tmp_path, 2)
  monkeypatch.undo()
  assert files_of(tmp_path) == before
  assert all(f.endswith('.pth') for f in os.listdir(tmp_path / 'exp'))


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


def test_an_optimizer_file_loads_with_this_runs_implementation():
  """own_implementation: the file's foreach/fused give way to the optimizer's own (PyTorch would
  take them, and place Adam's step counters, from the file); the file's dict is left alone, and
  one whose groups do not fit passes unchanged, for load_state_dict to refuse."""
  params = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2))]
  plain = torch.optim.Adam(params)
  for p in params:
    p.grad = torch.ones_like(p)
  plain.step()
  saved = plain.state_dict()
  fused = torch.optim.Adam(params, fused=True)
  patched = checkpoints.own_implementation(fused, saved)
  assert patched['param_groups'][0]['fused'] is True
  assert saved['param_groups'][0]['fused'] is None and patched['state'] is saved['state']
  fused.load_state_dict(patched)
  assert fused.param_groups[0]['fused'] is True and fused.state[params[0]]['step'] == 1
  two_groups = torch.optim.Adam([{'params': params[:1]}, {'params': params[1:]}], fused=True)
  assert checkpoints.own_implementation(two_groups, saved) is saved
  with pytest.raises(ValueError):
    two_groups.load_state_dict(checkpoints.own_implementation(two_groups, saved))
