"""Exact resume in every sampling configuration: --G_eval_mode on and off x --use_ema on and off,
--accumulate_stats, --test_every with real metrics, --parallel. Each case trains 3 iterations
uninterrupted (a save with sampling at 2, the end at 3), and again as a stop at iteration 1,
--resume into a SIGKILL (right after the training step of iteration 3, or while sampling at 2),
--resume to the end: every file the two runs write must be the same bit for bit (weights, G_ema,
optimizers, every copy{n}/best{n} set, state files but for the roots in their config, losses,
singular values, IS/FID records but for their time stamps, sample sheets and interpolations).

Sampling G_ema (or G) in training mode, or accumulating standing statistics, after a save moves
power-iteration vectors and BN statistics; before checkpoints were written at the end of the
iteration, a resumed run went on from the state before that sampling and drifted (G_ema in the
cases with --use_ema, G itself in those without)."""
import json
import multiprocessing
import os
import signal

import numpy as np
import pytest
import torch

import checkpoints
import sampling
import train
import train_fns
from test_train_metrics import write_moments

FLAGS = ('--dataset Shapes --resolution 32 --G_ch 4 --D_ch 4 --batch_size 4 --num_D_steps 1 '
         '--G_attn 0 --D_attn 0 --G_shared --dim_z 16 --shared_dim 8 --num_workers 0 --shuffle '
         '--sv_log_interval 1 --G_lr 1e-3 --D_lr 1e-3 --ema --ema_start 2 --save_every 2 '
         '--test_every 100000 --num_standing_accumulations 2 --experiment_name exp')

# (id, flags, where the second leg dies: ('step', itr) right after the training step of itr, or
#  ('sampling', itr) inside the interpolation sheets of the save at itr)
CASES = [
    ('train-mode-G_ema-metrics', '--use_ema --test_every 2 --num_inception_images 2',
     ('step', 3)),
    ('eval-mode-G_ema-standing-stats-fused-Adam',
     '--use_ema --G_eval_mode --accumulate_stats --fused_optim',
     ('sampling', 2)),
    ('train-mode-G-parallel', '--parallel', ('step', 3)),
    ('eval-mode-G-reuse-fakes', '--G_eval_mode --reuse_fakes', ('sampling', 2)),
]


def argv(root, extra, iters):
  return ('%s --base_root %s --num_iters %d %s' % (FLAGS, root, iters, extra)).split()


def die_at(where, itr):
  """In a forked child: SIGKILL this process at the given point of iteration itr."""
  def kill():
    os.kill(os.getpid(), signal.SIGKILL)
  if where == 'step':
    make = train_fns.GAN_training_function

    def hooked(G, D, GD, z_, y_, ema, state_dict, config):
      step = make(G, D, GD, z_, y_, ema, state_dict, config)

      def train_step(x, y):
        out = step(x, y)
        if state_dict['itr'] == itr:
          kill()
        return out
      return train_step
    train_fns.GAN_training_function = hooked
  else:
    interp_sheet = sampling.interp_sheet

    def hooked(*args, **kwargs):
      if kwargs['folder_number'] == itr:
        kill()
      return interp_sheet(*args, **kwargs)
    sampling.interp_sheet = hooked


def run_killed(args, where, itr):
  """train.main(args) in a forked child killed at `where` of iteration itr (die_at's places, or
  where(itr), a function that sets up the kill)."""
  def child():
    torch.set_num_threads(1)  # as the parent (one_thread): OpenMP's pool does not survive fork
    where(itr) if callable(where) else die_at(where, itr)
    train.main(args)
    os._exit(0)
  process = multiprocessing.get_context('fork').Process(target=child)
  process.start()
  process.join()
  assert process.exitcode == -signal.SIGKILL


def outputs(root):
  """{relative path: comparable contents} of everything a run wrote."""
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      key = os.path.relpath(path, root)
      if name.endswith('.pth'):
        value = checkpoints.safe_load(path)
        if name.startswith('state_dict'):
          value = {k: v for k, v in value.items() if k != 'config'}
        out[key] = value
      elif name.endswith('.jsonl'):
        out[key] = [{k: v for k, v in json.loads(line).items() if k != '_stamp'}
                    for line in open(path)]
      elif name != 'metalog.txt':  # logs, sheets, interpolations
        with open(path, 'rb') as f:
          out[key] = f.read()
  return out


def assert_equal(a, b, where):
  if isinstance(a, dict):
    assert isinstance(b, dict) and a.keys() == b.keys(), where
    for key in a:
      assert_equal(a[key], b[key], '%s/%s' % (where, key))
  elif isinstance(a, (list, tuple)):
    assert type(a) is type(b) and len(a) == len(b), where
    for i, (x, y) in enumerate(zip(a, b)):
      assert_equal(x, y, '%s[%d]' % (where, i))
  elif torch.is_tensor(a):
    assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
  elif isinstance(a, np.ndarray):
    assert np.array_equal(a, b), where
  else:
    assert a == b, where


@pytest.mark.parametrize('extra,death', [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_killed_stopped_and_resumed_run_equals_the_uninterrupted_one(tmp_path, extra, death,
                                                                    inception_weights, one_thread):
  if '--test_every' in extra:
    extra += ' --inception_weights %s' % inception_weights
    for root in ('a', 'b'):
      write_moments(str(tmp_path / root / 'data'))
  train.main(argv(tmp_path / 'a', extra, 3))
  train.main(argv(tmp_path / 'b', extra, 1))  # stops (saves) at iteration 1 ...
  run_killed(argv(tmp_path / 'b', extra + ' --resume', 3), *death)  # ... goes on, is killed ...
  train.main(argv(tmp_path / 'b', extra + ' --resume', 3))  # ... and goes on again
  a, b = outputs(tmp_path / 'a'), outputs(tmp_path / 'b')
  assert sorted(a) == sorted(b)
  assert {'weights/exp/G_ema.pth', 'weights/exp/G_ema_copy0.pth', 'samples/exp/2/interpZY0.jpg',
          'logs/exp/G_loss.log'} <= set(a)
  if '--test_every' in extra:
    assert [r['itr'] for r in a['logs/exp_log.jsonl']] == [2]
    assert 'weights/exp/G_ema_best0.pth' in a
  assert_equal(a, b, 'run')
