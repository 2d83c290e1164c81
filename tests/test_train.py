"""train.py end to end on the built-in dataset: the original's files, resuming (also bit-exactly,
after SIGKILL, after preemption and after --max_minutes), an original-format checkpoint,
divergence."""
import copy
import os
import signal
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import torch
import torch.nn as nn

import checkpoints
import config as configuration
import errors
import train

FLAGS = ('--dataset Shapes --resolution 32 --G_ch 4 --D_ch 4 --batch_size 4 --num_D_steps 2 '
         '--G_attn 0 --D_attn 16 --G_shared --hier --dim_z 16 --shared_dim 8 --num_workers 0 '
         '--shuffle --augment --test_every 100000 --sv_log_interval 2 --ema --use_ema '
         '--ema_start 3 --G_eval_mode --D_lr 1e-3 --G_lr 1e-3')


def argv(root, extra=''):
  return (FLAGS + ' --base_root %s ' % root + extra).split()


def experiment(root, extra=''):
  args = configuration.prepare_parser().parse_args(argv(root, extra))
  config = configuration.prepare_config(vars(args))
  return configuration.name_from_config(config)


def read(path):
  with open(path) as f:
    return f.read()


def weights(root, exp, suffix=None):
  """Every tensor of a checkpoint set, keyed by file and entry."""
  out = {}
  for name in ['G', 'D', 'G_ema', 'G_optim', 'D_optim']:
    flat = _flatten(checkpoints.safe_load(checkpoints.file_path('%s/weights/%s' % (root, exp),
                                                                name, suffix)))
    out.update({'%s:%s' % (name, k): v for k, v in flat.items()})
  return out


def _flatten(obj, prefix=''):
  if torch.is_tensor(obj):
    return {prefix: obj}
  if isinstance(obj, dict):
    return {k: v for key, value in obj.items()
            for k, v in _flatten(value, '%s.%s' % (prefix, key)).items()}
  if isinstance(obj, (list, tuple)):
    return {k: v for i, value in enumerate(obj)
            for k, v in _flatten(value, '%s.%d' % (prefix, i)).items()}
  return {prefix: torch.tensor(float(obj)) if isinstance(obj, (int, float)) else obj}


def assert_same_run(root_a, root_b, exp):
  a, b = weights(root_a, exp), weights(root_b, exp)
  assert a.keys() == b.keys()
  for key in a:
    if torch.is_tensor(a[key]):
      assert torch.equal(a[key], b[key]), key
    else:
      assert a[key] == b[key], key
  logs_a = sorted(os.listdir('%s/logs/%s' % (root_a, exp)))
  assert logs_a == sorted(os.listdir('%s/logs/%s' % (root_b, exp)))
  for name in logs_a:
    if name.endswith('.log'):
      assert read('%s/logs/%s/%s' % (root_a, exp, name)) == read(
          '%s/logs/%s/%s' % (root_b, exp, name)), name


def test_run_writes_the_original_files_and_resumes(tmp_path):
  train.main(argv(tmp_path, '--num_iters 4 --save_every 2'))
  exp = experiment(tmp_path)
  assert exp == ('BigGAN_Shapes32_seed0_Gch4_Dch4_bs4_nDs2_Glr1.0e-03_Dlr1.0e-03_Gnlrelu_'
                 'Dnlrelu_Ginitortho_Dinitortho_Dattn16_Gshared_hier_ema')
  files = set(os.listdir(tmp_path / 'weights' / exp))
  for suffix in ['', '_copy0', '_copy1']:
    assert {'%s%s.pth' % (n, suffix) for n in ['G', 'G_optim', 'D', 'D_optim', 'state_dict',
                                               'G_ema']} <= files
  state = checkpoints.safe_load(tmp_path / 'weights' / exp / 'state_dict.pth')
  assert {'itr', 'epoch', 'save_num', 'save_best_num', 'best_IS', 'best_FID',
          'config'} <= set(state)
  assert state['itr'] == 4 and state['config']['G_ch'] == 4
  assert read(tmp_path / 'logs' / exp / 'G_loss.log').splitlines()[0].startswith('1: ')
  assert 'config:' in read(tmp_path / 'logs' / exp / 'metalog.txt')
  samples = tmp_path / 'samples' / exp
  assert {'fixed_samples2.jpg', 'fixed_samples4.jpg', '2', '4'} <= set(os.listdir(samples))
  assert {'samples0.jpg', 'interpZ0.jpg', 'interpY0.jpg', 'interpZY0.jpg'} <= set(
      os.listdir(samples / '2'))
  assert len(read(tmp_path / 'logs' / exp / 'G_blocks_0_0_conv1_sv0.log').splitlines()) == 2

  train.main(argv(tmp_path, '--num_iters 6 --save_every 2 --resume'))
  lines = read(tmp_path / 'logs' / exp / 'G_loss.log').splitlines()
  assert [int(line.split(':')[0]) for line in lines] == list(range(1, 7))
  assert checkpoints.safe_load(tmp_path / 'weights' / exp / 'state_dict.pth')['itr'] == 6


def test_resume_is_bit_exact(tmp_path):
  """4 iterations, stop, resume to 8 == 8 uninterrupted: weights, optimizers, EMA, logs."""
  train.main(argv(tmp_path / 'a', '--num_iters 8 --save_every 4'))
  train.main(argv(tmp_path / 'b', '--num_iters 4 --save_every 4'))
  train.main(argv(tmp_path / 'b', '--num_iters 8 --save_every 4 --resume'))
  assert_same_run(tmp_path / 'a', tmp_path / 'b', experiment(tmp_path))


WRAPPER = textwrap.dedent('''
  import os, signal, sys
  sys.path.insert(0, %(repo)r)
  import torch
  torch.set_num_threads(%(threads)d)  # as the in-process run it is compared with
  import train, train_fns
  make = train_fns.GAN_training_function
  def hooked(G, D, GD, z_, y_, ema, state_dict, config):
    step = make(G, D, GD, z_, y_, ema, state_dict, config)
    def train_step(x, y):
      out = step(x, y)
      if state_dict['itr'] == %(at)d:
        os.kill(os.getpid(), signal.%(signal)s)
      return out
    return train_step
  train_fns.GAN_training_function = hooked
  import errors
  errors.run_main(train.main, sys.argv[1:])
''')


def run_with_signal(root, extra, at, sig, repo_root):
  script = root.parent / ('wrapper_%s.py' % sig)
  script.write_text(WRAPPER % dict(repo=repo_root, at=at, signal=sig,
                                     threads=torch.get_num_threads()))
  return subprocess.run([sys.executable, str(script)] + argv(root, extra), capture_output=True,
                        text=True, timeout=300)


def test_resume_after_sigkill_replays_exactly(tmp_path, repo_root):
  flags = '--num_iters 8 --save_every 3 --sv_log_interval 1'
  train.main(argv(tmp_path / 'a', flags))
  killed = run_with_signal(tmp_path / 'b', flags, 5, 'SIGKILL', repo_root)
  assert killed.returncode == -signal.SIGKILL
  exp = experiment(tmp_path)
  # Iteration 4 was logged after the last save (itr 3) ...
  assert '4: ' in read(tmp_path / 'b' / 'logs' / exp / 'G_loss.log')
  train.main(argv(tmp_path / 'b', flags + ' --resume'))
  # ... and are replayed identically, once.
  assert_same_run(tmp_path / 'a', tmp_path / 'b', exp)


def test_preemption_saves_and_exits_cleanly(tmp_path, repo_root):
  train.main(argv(tmp_path / 'a', '--num_iters 7 --save_every 100'))
  stopped = run_with_signal(tmp_path / 'b', '--num_iters 7 --save_every 100', 3, 'SIGTERM',
                            repo_root)
  assert stopped.returncode == 0, stopped.stderr
  assert 'Received SIGTERM: saved the checkpoint at iteration 3' in stopped.stdout
  exp = experiment(tmp_path)
  assert checkpoints.safe_load(tmp_path / 'b' / 'weights' / exp / 'state_dict.pth')['itr'] == 3
  train.main(argv(tmp_path / 'b', '--num_iters 7 --save_every 100 --resume'))
  assert_same_run(tmp_path / 'a', tmp_path / 'b', exp)


def test_max_minutes_stops_like_a_preemption_and_resumes_exactly(tmp_path, monkeypatch,
                                                                   capsys):
  """A clock that advances 10 s per reading: a 0.5 minute budget ends at iteration 3."""
  train.main(argv(tmp_path / 'a', '--num_iters 7 --save_every 100'))
  clock = iter(range(0, 10000, 10))
  monkeypatch.setattr(train, 'time', types.SimpleNamespace(monotonic=lambda: next(clock)))
  capsys.readouterr()
  train.main(argv(tmp_path / 'b', '--num_iters 7 --save_every 100 --max_minutes 0.5'))
  assert 'Stopped after --max_minutes 0.5 at iteration 3 of 7' in capsys.readouterr().out
  exp = experiment(tmp_path)
  assert checkpoints.safe_load(tmp_path / 'b' / 'weights' / exp / 'state_dict.pth')['itr'] == 3
  train.main(argv(tmp_path / 'b', '--num_iters 7 --save_every 100 --resume'))
  assert_same_run(tmp_path / 'a', tmp_path / 'b', exp)


def torch1_adam_state(optim):
  """Adam's state_dict as the original's torch 1.x wrote it: int steps, no newer group keys."""
  state = optim.state_dict()
  return {'state': {i: {'step': int(s['step']), 'exp_avg': s['exp_avg'].clone(),
                        'exp_avg_sq': s['exp_avg_sq'].clone()} for i, s in state['state'].items()},
          'param_groups': [{k: group[k] for k in ('lr', 'betas', 'eps', 'weight_decay', 'amsgrad',
                                                  'params')} for group in state['param_groups']]}


def test_an_original_checkpoint_folder_resumes(tmp_path, monkeypatch):
  """A weights folder as the original writes it (its config keys with pickled nn.ReLU modules,
  numpy best_IS, tensor best_FID, torch 1.x Adam states after a step) resumes with every weight
  and every Adam moment on the parameter it belongs to."""
  parser = configuration.prepare_parser()
  config = configuration.prepare_config(vars(parser.parse_args(argv(tmp_path))))
  exp = configuration.name_from_config(config)
  torch.manual_seed(0)
  import BigGAN
  G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
  G_ema = BigGAN.Generator(**{**config, 'no_optim': True})
  y = torch.randint(0, config['n_classes'], (2,))
  with torch.no_grad():  # attention switched on, as in a trained model: every weight gets a grad
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
      if name.endswith('gamma'):
        p.fill_(0.5)
  for net, loss in [(G, lambda: G(torch.randn(2, G.dim_z), G.shared(y)).square().mean()),
                    (D, lambda: D(torch.randn(2, 3, 32, 32), y).mean())]:
    loss().backward()
    net.optim.step()  # Adam state (exp_avg, exp_avg_sq) for every parameter
  moments = {side: {name: net.optim.state[p]['exp_avg'].clone()
                    for name, p in net.named_parameters()} for side, net in [('G', G), ('D', D)]}
  assert all(m.abs().sum() > 0 for side in moments.values() for m in side.values())
  root = tmp_path / 'weights' / exp
  root.mkdir(parents=True)
  new = {a.dest for a in parser._actions if (a.help or '').startswith('(new)')}
  original_config = {k: v for k, v in config.items()
                     if k not in new | {'dataset_tag', 'class_names', 'classes_per_sheet'}}
  original_config.update(resolution=32, G_activation=nn.ReLU(inplace=False),
                         D_activation=nn.ReLU(inplace=False))
  saved = {'G': G.state_dict(), 'G_optim': torch1_adam_state(G.optim), 'D': D.state_dict(),
           'D_optim': torch1_adam_state(D.optim), 'G_ema': G_ema.state_dict(),
           'state_dict': {'itr': 5, 'epoch': 0, 'save_num': 1, 'save_best_num': 0,
                          'best_IS': np.float64(1.2), 'best_FID': torch.tensor(300.),
                          'config': original_config}}
  for name, obj in saved.items():
    torch.save(obj, root / ('%s.pth' % name))

  import train_fns
  make, loaded = train_fns.GAN_training_function, {}

  def capture(G, D, GD, z_, y_, ema, state_dict, config):
    """The models as training starts, after the resume loaded them."""
    loaded.update(itr=state_dict['itr'], G=copy.deepcopy(G.state_dict()),
                  D=copy.deepcopy(D.state_dict()), G_ema=copy.deepcopy(ema.target.state_dict()),
                  **{side + '_optim': copy.deepcopy(net.optim.state_dict()) for side, net in
                     [('G', G), ('D', D)]},
                  moments={side: {name: net.optim.state[p]['exp_avg'].clone()
                                  for name, p in net.named_parameters()}
                           for side, net in [('G', G), ('D', D)]})
    return make(G, D, GD, z_, y_, ema, state_dict, config)
  monkeypatch.setattr(train_fns, 'GAN_training_function', capture)
  train.main(argv(tmp_path, '--num_iters 7 --save_every 100 --resume'))

  assert loaded['itr'] == 5
  for name in ['G', 'D', 'G_ema']:
    assert loaded[name].keys() == saved[name].keys(), name
    for key, value in saved[name].items():
      assert torch.equal(loaded[name][key], value), (name, key)
  for name in ['G_optim', 'D_optim']:
    assert loaded[name]['state'].keys() == saved[name]['state'].keys(), name
    for index, s in saved[name]['state'].items():  # per state index ...
      assert torch.equal(loaded[name]['state'][index]['exp_avg'], s['exp_avg']), (name, index)
      assert int(loaded[name]['state'][index]['step']) == 1
  for side in 'GD':  # ... which is the parameter the original's index meant
    for name, m in moments[side].items():
      assert torch.equal(loaded['moments'][side][name], m), (side, name)
  state = checkpoints.safe_load(root / 'state_dict.pth')
  assert state['itr'] == 7 and state['save_num'] == 1
  assert state['best_IS'] == 1.2 and state['best_FID'] == 300.
  lines = read(tmp_path / 'logs' / exp / 'G_loss.log').splitlines()
  assert [int(line.split(':')[0]) for line in lines] == [6, 7]


def test_divergence_stops_without_touching_the_last_good_checkpoint(tmp_path, monkeypatch):
  import train_fns
  make = train_fns.GAN_training_function

  def poisoned(G, D, GD, z_, y_, ema, state_dict, config):
    step = make(G, D, GD, z_, y_, ema, state_dict, config)

    def train_step(x, y):
      if state_dict['itr'] == 3:
        with torch.no_grad():
          D.linear.weight.fill_(float('nan'))
      return step(x, y)
    return train_step
  monkeypatch.setattr(train_fns, 'GAN_training_function', poisoned)
  with pytest.raises(errors.UserError, match=r'diverged: non-finite values at iteration 3 '
                                             r'\(G_loss=nan'):
    train.main(argv(tmp_path, '--num_iters 8 --save_every 2 --sv_log_interval 1'))
  exp = experiment(tmp_path)
  assert checkpoints.safe_load(tmp_path / 'weights' / exp / 'state_dict.pth')['itr'] == 2
  assert all(torch.isfinite(t).all() for t in weights(tmp_path, exp).values()
             if torch.is_tensor(t) and t.is_floating_point())


@pytest.mark.parametrize('extra,message', [
    ('--G_ch 0', '--G_ch must be at least 1'),
    # "-X" drops flag X from the base flags: --use_ema (a base flag) without --ema.
    ('-ema', '--use_ema samples with G_ema, which only exists with --ema'),
    ('--model NoSuchModel', 'unknown --model NoSuchModel'),
    ('--resume', '--resume: no complete checkpoint'),
    ('--resolution 48', 'no G architecture for resolution 48'),
    ('--num_D_accumulations 0', '--num_D_accumulations must be at least 1'),
    ('--G_nl gelu', "argument --G_nl: invalid choice: 'gelu'"),
    ('--base_root {file}/sub', 'is not a writable folder'),
    ('--split_D --which_train_fn GANN', '--which_train_fn GANN is unknown'),
])
def test_bad_flags_fail_before_work_with_one_line(tmp_path, capsys, extra, message):
  (tmp_path / 'a_file').write_text('x')
  args = argv(tmp_path, extra.format(file=tmp_path / 'a_file'))
  for dropped in [a for a in args if a.startswith('-') and not a.startswith('--')]:
    args = [a for a in args if a not in (dropped, '-' + dropped)]
  assert '--use_ema' in args  # every case has the base flags' --use_ema, not always --ema
  with pytest.raises(SystemExit) as e:
    errors.run_main(train.main, args)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err
  assert not os.path.exists(tmp_path / 'weights') or not os.listdir(tmp_path / 'weights')


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_mixed_precision_trains_saves_and_resumes_exactly(tmp_path, amp):
  flags = '--num_iters 4 --save_every 2 --amp ' + amp
  train.main(argv(tmp_path / 'a', flags.replace('--num_iters 4', '--num_iters 6')))
  train.main(argv(tmp_path / 'b', flags))
  exp = experiment(tmp_path)
  state = checkpoints.safe_load(tmp_path / 'b' / 'weights' / exp / 'state_dict.pth')
  assert state['config']['amp'] == amp
  assert state['G_scaler']['scale'] > 1 if amp == 'fp16' else state['G_scaler'] == {}
  G = checkpoints.safe_load(tmp_path / 'b' / 'weights' / exp / 'G.pth')
  assert all(t.dtype in (torch.float32, torch.int64) for t in G.values())  # fp32 weights
  train.main(argv(tmp_path / 'b', flags.replace('--num_iters 4', '--num_iters 6') + ' --resume'))
  assert_same_run(tmp_path / 'a', tmp_path / 'b', exp)
  losses = read(tmp_path / 'b' / 'logs' / exp / 'G_loss.log').splitlines()
  assert len(losses) == 6 and all(np.isfinite(float(line.split(':')[1])) for line in losses)


def test_original_parallel_and_fp16_flags_run_on_one_cpu(tmp_path, capsys):
  """--parallel (DataParallel) and --G_fp16 from the original's scripts: fp16 now means --amp."""
  train.main(argv(tmp_path, '--num_iters 2 --save_every 2 --parallel --G_fp16 --D_fp16'))
  assert 'now means --amp fp16' in capsys.readouterr().out
  exp = experiment(tmp_path, '--G_fp16 --D_fp16')
  assert '_Gfp16_Dfp16_' in exp  # the original's experiment name
  state = checkpoints.safe_load(tmp_path / 'weights' / exp / 'state_dict.pth')
  assert state['config']['amp'] == 'fp16' and state['G_scaler']['scale'] > 1


@pytest.mark.parametrize('sig', ['SIGTERM', 'SIGUSR1'])
def test_preemption_signals_are_remembered_until_the_loop_stops(sig):
  before = signal.getsignal(getattr(signal, sig))
  preemption = train.Preemption()
  try:
    assert preemption.requested is None
    os.kill(os.getpid(), getattr(signal, sig))
    assert preemption.requested == sig
  finally:
    preemption.close()
  assert signal.getsignal(getattr(signal, sig)) == before
