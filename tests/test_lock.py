"""One run per experiment folder: the flock run lock (a second train.py stops with the holder's PID
and host and changes nothing; the lock frees when its holder is SIGKILLed; forked data-loader
workers do not keep it; torchrun ranks share rank 0's; readers leave a locked folder's unfinished
save alone), and a run that starts over without --resume moves the earlier one aside instead of
deleting its logs and overwriting its checkpoints."""
import multiprocessing
import os
import signal
import socket

import pytest
import torch.distributed as dist

import checkpoints
import distributed
import errors
import train
from conftest import fork_ranks
from errors import UserError
from test_bad_inputs import check_untouched, error_line, snapshot

FLAGS = ('--dataset Shapes --resolution 32 --G_ch 4 --D_ch 4 --batch_size 4 --num_D_steps 1 '
         '--G_attn 0 --D_attn 0 --num_workers 0 --save_every 100 --test_every 100000 '
         '--experiment_name exp')


def argv(root, extra=''):
  return ('%s --base_root %s %s' % (FLAGS, root, extra)).split()


def hold(folder, ready):
  checkpoints.lock_run(folder)
  ready.set()
  signal.pause()


@pytest.fixture
def holder(tmp_path):
  """A process that holds the run lock of tmp_path/weights/exp until it is SIGKILLed."""
  context = multiprocessing.get_context('fork')
  ready = context.Event()
  process = context.Process(target=hold, args=(str(tmp_path / 'weights' / 'exp'), ready))
  process.start()
  assert ready.wait(30)
  yield process
  if process.is_alive():
    process.kill()
    process.join()


def test_a_second_run_stops_with_the_holder_and_changes_nothing(tmp_path, holder, capsys):
  for name in ('weights/exp/G.pth', 'logs/exp/G_loss.log', 'logs/exp_log.jsonl',
               'samples/exp/fixed_samples2.jpg'):  # an earlier run's files
    os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
    (tmp_path / name).write_text(name)
  before = snapshot(str(tmp_path))
  for extra in ('', '--resume'):
    with pytest.raises(SystemExit) as e:
      errors.run_main(train.main, argv(tmp_path, extra))
    assert e.value.code == 2
    line = error_line(capsys.readouterr().err)
    assert line.startswith('error: experiment %s is in use by another train.py (PID %d on host %s'
                           % (tmp_path / 'weights' / 'exp', holder.pid, socket.gethostname()))
    assert line.endswith('wait for it to end or stop it, or train into another --experiment_name')
    check_untouched(before, snapshot(str(tmp_path)))
  # The OS frees the lock of a SIGKILLed holder; this process can take it (and give it back).
  holder.kill()
  holder.join()
  path = checkpoints.lock_run(str(tmp_path / 'weights' / 'exp'))
  assert open(path).read().startswith('PID %d on host ' % os.getpid())
  checkpoints.release_run(path)
  assert not os.path.exists(path)


def test_reading_a_locked_folder_leaves_its_unfinished_save_alone(tmp_path, holder):
  folder = tmp_path / 'weights' / 'exp'
  (folder / 'G.pth.new').write_bytes(b'being written by the running train.py')
  assert checkpoints.in_use(str(folder))
  assert checkpoints.recover(str(folder)) == []  # what sample.py does before it loads
  assert (folder / 'G.pth.new').exists()
  holder.kill()
  holder.join()
  assert not checkpoints.in_use(str(folder))
  assert checkpoints.recover(str(folder)) == [None] and not (folder / 'G.pth.new').exists()


def test_forked_children_do_not_keep_the_lock(tmp_path):
  """A data-loader worker is a fork of the run: once the run is gone, its lock must be free even
  while the worker lives."""
  folder = str(tmp_path / 'exp')
  path = checkpoints.lock_run(folder)
  context = multiprocessing.get_context('fork')
  ready = context.Event()
  child = context.Process(target=lambda: (ready.set(), signal.pause()))
  child.start()
  try:
    assert ready.wait(30)
    checkpoints.release_run(path)
    checkpoints.release_run(checkpoints.lock_run(folder))  # free although the child lives
  finally:
    child.kill()
    child.join()


def rank_takes_the_lock(rank, folder, store, out):
  dist.init_process_group('gloo', init_method='file://' + store, rank=rank, world_size=2)
  try:
    distributed.on_main(distributed.Context(rank, 2), checkpoints.lock_run, folder)
    # Rank 0 holds it for both: rank 1 finds it held, by another process.
    assert checkpoints.in_use(folder) == (rank == 1)
  except UserError as e:
    with open('%s.%d' % (out, rank), 'w') as f:
      f.write(str(e))
  dist.barrier()
  os._exit(0)


def ranks(folder, tmp_path, name):
  """The UserErrors of two gloo ranks that take the run lock as train.py does."""
  out = str(tmp_path / name)
  fork_ranks(rank_takes_the_lock, (folder, out + '.store', out))
  return [open('%s.%d' % (out, r)).read() for r in range(2) if os.path.exists('%s.%d' % (out, r))]


def test_torchrun_ranks_share_rank_0s_lock(tmp_path, holder):
  folder = str(tmp_path / 'weights' / 'exp')
  found = ranks(folder, tmp_path, 'held')  # a second job: every rank stops, with one message
  assert len(found) == 2 and found[0] == found[1]
  assert 'in use by another train.py (PID %d' % holder.pid in found[0]
  holder.kill()
  holder.join()
  assert ranks(folder, tmp_path, 'free') == []


def test_starting_over_moves_the_earlier_run_aside(tmp_path, capsys, one_thread):
  train.main(argv(tmp_path, '--num_iters 1'))
  first = snapshot(str(tmp_path))
  assert 'weights/exp/G.pth' in first and 'logs/exp_log.jsonl' not in first
  capsys.readouterr()
  train.main(argv(tmp_path, '--num_iters 1 --seed 1'))  # the launch script again, no --resume
  notice = [line for line in capsys.readouterr().out.splitlines() if 'aside' in line]
  [old] = [n for n in os.listdir(tmp_path / 'weights') if n != 'exp']
  assert old.startswith('exp.old-') and len(notice) == 1 and old in notice[0]
  assert sorted(os.listdir(tmp_path / 'logs')) == ['exp', old]
  after = snapshot(str(tmp_path))
  for path, (digest, _) in first.items():  # every earlier file, unchanged, under the old name
    assert after[path.replace('exp', old, 1)][0] == digest
  assert {p for p in after if p.startswith('weights/exp/')} == {
      p for p in first if p.startswith('weights/exp/')}
  assert after['weights/exp/G.pth'][0] != first['weights/exp/G.pth'][0]  # the new run's
  assert not os.path.exists(tmp_path / 'weights' / 'exp' / checkpoints.LOCK_FILE)
