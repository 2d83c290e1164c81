"""Training options, through train.main or the real training step: --which_train_fn (dummy and a
module.function hook), --pbar, --no_toggle_grads, --split_D, G_ortho / D_ortho, --finetune_from,
--resume --load_weights, map_location."""
import contextlib
import copy
import hashlib
import os
import re
import sys

import numpy as np
import pytest
import torch

import BigGAN
import checkpoints
import config as configuration
import sampling
import train
import train_fns
from conftest import make_config
from errors import UserError

FLAGS = ('--dataset Shapes --resolution 32 --G_ch 4 --D_ch 4 --batch_size 4 --num_D_steps 2 '
         '--G_attn 0 --D_attn 0 --G_shared --dim_z 8 --shared_dim 8 --num_workers 0 '
         '--test_every 100000 --sv_log_interval 1 --save_every 100')


def argv(root, extra=''):
  return (FLAGS + ' --base_root %s ' % root + extra).split()


def prepared(root, extra=''):
  args = configuration.prepare_parser().parse_args(argv(root, extra))
  return configuration.prepare_config(vars(args))


def read(path):
  with open(path) as f:
    return f.read()


def tensors_equal(a, b):
  """Nested state dicts (models and optimizers) are equal tensor by tensor."""
  if torch.is_tensor(a):
    return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
  if isinstance(a, dict):
    return (isinstance(b, dict) and a.keys() == b.keys()
            and all(tensors_equal(a[k], b[k]) for k in a))
  if isinstance(a, (list, tuple)):
    return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b))
  return a == b


def test_old_fp16_flags_next_to_amp_bf16_say_they_are_overruled(tmp_path, capsys):
  config = prepared(tmp_path, '--G_fp16 --D_mixed_precision --amp bf16')
  assert config['amp'] == 'bf16'
  out = capsys.readouterr().out
  assert 'Notice: --G_fp16 --D_mixed_precision would mean --amp fp16, but --amp bf16' in out
  prepared(tmp_path, '--amp bf16')
  assert 'Notice' not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# --which_train_fn and --pbar through train.main
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('pbar', ['mine', 'tqdm'])
def test_dummy_train_fn_moves_only_data_and_both_progress_bars_show_rate_and_eta(
    tmp_path, capsys, pbar):
  train.main(argv(tmp_path, '--which_train_fn dummy --num_iters 3 --pbar ' + pbar))
  captured = capsys.readouterr()
  if pbar == 'mine':
    assert re.search(r'itr 3/3 \(100%\) [\d.]+ it/s, ETA \d+:\d\d:\d\d', captured.out)
  else:  # tqdm on stderr: "3/3 [00:01<00:00,  2.50it/s]"
    assert re.search(r'3/3 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(it/s|s/it)', captured.err), captured.err
  config = prepared(tmp_path, '--which_train_fn dummy')
  exp = configuration.name_from_config(config)
  assert exp.startswith('Bigdummy_Shapes32_')  # the original's name
  assert checkpoints.safe_load(tmp_path / 'weights' / exp / 'state_dict.pth')['itr'] == 3
  assert not os.path.exists(tmp_path / 'logs' / exp / 'G_loss.log')
  checkpoints.seed_rng(config['seed'])  # as train.py builds them: no step was taken
  G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
  for name, net in [('G', G), ('D', D)]:
    assert tensors_equal(checkpoints.safe_load(tmp_path / 'weights' / exp / ('%s.pth' % name)),
                         net.state_dict()), name


HOOKS = '''
import torch
calls = []

def make_train(G, D, GD, z_, y_, ema, state_dict, config):
  calls.append(config['which_train_fn'])
  def train(x, y):
    calls.append((state_dict['itr'], tuple(x.shape)))
    return {'my_metric': torch.tensor(0.5 * state_dict['itr'])}
  return train
'''


def test_a_module_function_train_fn_is_imported_and_drives_training(tmp_path, monkeypatch):
  (tmp_path / 'hooks').mkdir()
  (tmp_path / 'hooks' / 'my_hooks.py').write_text(HOOKS)
  monkeypatch.syspath_prepend(str(tmp_path / 'hooks'))
  try:
    train.main(argv(tmp_path, '--which_train_fn my_hooks.make_train --num_iters 2 '
                              '--experiment_name hooked'))
    import my_hooks
  finally:
    sys.modules.pop('my_hooks', None)
  # Loader batches are batch_size * num_D_steps.
  assert my_hooks.calls == ['my_hooks.make_train', (1, (8, 3, 32, 32)), (2, (8, 3, 32, 32))]
  assert read(tmp_path / 'logs' / 'hooked' / 'my_metric.log') == '1: 5.000e-01\n2: 1.000e+00\n'
  with pytest.raises(UserError, match='--which_train_fn my_hooks.nope is unknown'):
    train_fns.training_function('my_hooks.nope')


# ---------------------------------------------------------------------------------------------
# Options of the training step, through train_fns.GAN_training_function
# ---------------------------------------------------------------------------------------------

STEP = '--G_ch 4 --D_ch 4 --batch_size 2 --G_attn 0 --D_attn 16 --G_shared --dim_z 8 '


def noise(config, dtype):
  z_ = torch.zeros(config['batch_size'], config['dim_z'], dtype=dtype)
  z_ = z_.as_subclass(sampling.Distribution).init_distribution('normal', mean=0, var=1.0)
  y_ = torch.zeros(config['batch_size'], dtype=torch.int64).as_subclass(sampling.Distribution)
  return z_, y_.init_distribution('categorical', num_categories=config['n_classes'])


def run_steps(flags, steps=1, dtype=torch.float32, sgd=None, watch=None):
  """Fresh G and D from seed 0, `steps` training steps on fixed data and noise (seed 1).
  Returns (the nets before the steps, the nets after, the losses); D.calls counts D's forward
  passes. sgd: a learning rate for plain SGD, whose update is the gradient itself (Adam would
  blow rounding noise in near-zero gradients up to full steps). watch(train_G, G, D) sees each
  G_D call."""
  config = make_config(STEP + flags)
  torch.manual_seed(0)
  G = BigGAN.Generator(**config).to(dtype)
  D = BigGAN.Discriminator(**config).to(dtype)
  if sgd:
    G.optim, D.optim = (torch.optim.SGD(net.parameters(), lr=sgd) for net in (G, D))
  before = copy.deepcopy(G), copy.deepcopy(D)
  D.calls = 0
  D.register_forward_hook(lambda module, args, out: setattr(module, 'calls', module.calls + 1))
  GD = BigGAN.G_D(G, D)

  def call(*args, train_G=False, **kwargs):
    if watch is not None:
      watch(train_G, G, D)
    return GD(*args, train_G=train_G, **kwargs)
  z_, y_ = noise(config, dtype)
  step = train_fns.GAN_training_function(G, D, call, z_, y_, None, {'itr': 1}, config)
  torch.manual_seed(1)
  n = config['batch_size'] * config['num_D_steps']
  x, y = torch.randn(n, 3, 32, 32, dtype=dtype), torch.randint(0, 10, (n,))
  out = [{k: float(v) for k, v in step(x, y).items()} for _ in range(steps)]
  return before, (G, D), out


def params(net):
  return {name: p.detach().clone() for name, p in net.named_parameters()}


def test_no_toggle_grads_keeps_requires_grad_and_trains_identically():
  states = {}
  for toggle in [True, False]:
    seen = states[toggle] = set()

    def watch(train_G, G, D, seen=seen):
      seen.add((train_G, tuple({p.requires_grad for p in G.parameters()}),
                tuple({p.requires_grad for p in D.parameters()})))
    _, (G, D), out = run_steps('' if toggle else '--no_toggle_grads', steps=2, watch=watch)
    states[toggle, 'result'] = params(G), params(D), out
  # (train_G, G requires_grad, D requires_grad) during D steps and G steps.
  assert states[True] == {(False, (False,), (True,)), (True, (True,), (False,))}
  assert states[False] == {(False, (True,), (True,)), (True, (True,), (True,))}
  # Freezing changes which gradients are computed, not any value: the same weights and losses.
  (G_a, D_a, out_a), (G_b, D_b, out_b) = states[True, 'result'], states[False, 'result']
  assert out_a == out_b
  for a, b in [(G_a, G_b), (D_a, D_b)]:
    for name in a:
      assert torch.equal(a[name], b[name]), name


def test_split_D_gives_the_same_losses_and_updates():
  """D without BN (and without SN, whose power iteration would run once per D call) is the same
  function of fake and real batches run together or apart."""
  runs = [run_steps('--D_param none' + split, steps=2, dtype=torch.float64, sgd=1e-3)[1:]
          for split in ['', ' --split_D']]
  # 2 iterations of 2 D steps and a G step; with split_D the D steps call D twice.
  assert [nets[1].calls for nets, _ in runs] == [2 * (2 + 1), 2 * (2 * 2 + 1)]
  (nets_a, out_a), (nets_b, out_b) = runs
  for a, b in zip(out_a, out_b):
    assert all(np.isfinite(list(a.values())))
    assert a == pytest.approx(b, rel=1e-12)
  for net_a, net_b in zip(nets_a, nets_b):
    a, b = params(net_a), params(net_b)
    for name in a:
      torch.testing.assert_close(a[name], b[name], rtol=1e-11, atol=1e-13, msg=name)


def ortho_gradient(w, strength):
  """Autograd of BigGAN's ortho penalty (strength/2) ||W W^T * (1 - I)||_F^2 (W as (out, -1))."""
  w = w.detach().clone().requires_grad_(True)
  flat = w.reshape(w.shape[0], -1)
  gram = (flat @ flat.t()) * (1 - torch.eye(flat.shape[0], dtype=w.dtype))
  return torch.autograd.grad(strength * 0.5 * (gram ** 2).sum(), w)[0]


def test_ortho_reg_in_the_step_adds_exactly_its_gradient_and_skips_the_shared_embedding():
  """One step with SGD (lr 1) with and without G_ortho / D_ortho: the weights differ by exactly
  the ortho gradient at the starting weights (N02 init: ortho init would make it ~0)."""
  strength = 0.5
  flags = '--num_D_steps 1 --G_init N02 --D_init N02 '
  run = lambda extra: run_steps(flags + extra, dtype=torch.float64, sgd=1.)  # noqa: E731
  (G0, D0), (G_plain, D_plain), _ = run('')
  _, (G_ortho, D_same), _ = run('--G_ortho %g' % strength)
  _, (_, D_ortho), _ = run('--D_ortho %g' % strength)
  assert all(torch.equal(p, q) for p, q in zip(D_plain.parameters(), D_same.parameters()))
  for start, plain, reg, side in [(G0, G_plain, G_ortho, 'G'), (D0, D_plain, D_ortho, 'D')]:
    before, a, b = params(start), params(plain), params(reg)
    touched = 0
    for name in before:
      if before[name].dim() < 2 or name == 'shared.weight':  # biases, gains, the blacklist
        assert torch.equal(a[name], b[name]), (side, name)
        continue
      expected = ortho_gradient(before[name], strength)
      # Rounding follows the size of the GAN update, which is large here (SN, lr 1).
      atol = 1e-13 * float((before[name] - a[name]).abs().max())
      torch.testing.assert_close(a[name] - b[name], expected, rtol=1e-9, atol=atol,
                                 msg='%s %s' % (side, name))
      if before[name].shape[0] > 1:  # one row (D.linear) has no off-diagonal: a zero term
        assert float(expected.abs().max()) > 1e3 * atol, (side, name)  # so the check bites
        touched += 1
    assert touched >= 8, side
  assert not torch.equal(G0.shared.weight, G_ortho.shared.weight)  # it did train


# ---------------------------------------------------------------------------------------------
# --finetune_from, --resume --load_weights, map_location
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def saved_as_if_on(tag):
  """torch.save records each storage's device by asking the registered taggers in turn; putting
  one first that answers `tag` writes the file a machine with that device would."""
  registry = getattr(torch.serialization, '_package_registry', None)
  if registry is None:
    pytest.skip('this torch has no serialization registry to fake a device tag with')
  entry = (-1, lambda storage: tag, lambda storage, location: None)
  registry.insert(0, entry)
  try:
    yield
  finally:
    registry.remove(entry)


def write_run(root, exp, config, sets, ema=False):
  """Save checkpoint sets {suffix: itr} as a run would, each with its own weights and one Adam
  step taken (so the optimizers hold exp_avg state). Returns {suffix: {file: state}}."""
  written = {}
  for k, (suffix, itr) in enumerate(sets.items()):
    torch.manual_seed(10 + k)
    G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
    G_ema = BigGAN.Generator(**{**config, 'no_optim': True}) if ema else None
    z, y = torch.randn(2, config['dim_z']), torch.randint(0, config['n_classes'], (2,))
    for net, loss in [(G, lambda: G(z, G.shared(y)).mean()),
                      (D, lambda: D(torch.randn(2, 3, 32, 32), y).mean())]:
      net.optim.zero_grad()
      loss().backward()
      net.optim.step()
    state = {'itr': itr, 'epoch': 0, 'save_num': 0, 'save_best_num': 0, 'best_IS': 0,
             'best_FID': 999999, 'config': config}
    checkpoints.save_weights(G, D, state, str(root / 'weights'), exp, suffix, G_ema)
    written[suffix] = {'G': G.state_dict(), 'D': D.state_dict(), 'G_optim': G.optim.state_dict(),
                       'D_optim': D.optim.state_dict(), 'G_ema': ema and G_ema.state_dict()}
  return written


def capture_loaded_state(monkeypatch):
  """What the models hold when training starts (after any loading)."""
  seen = {}
  make = train_fns.GAN_training_function

  def hooked(G, D, GD, z_, y_, ema, state_dict, config):
    seen.update(G=copy.deepcopy(G.state_dict()), D=copy.deepcopy(D.state_dict()),
                G_optim=copy.deepcopy(G.optim.state_dict()),
                D_optim=copy.deepcopy(D.optim.state_dict()), itr=state_dict['itr'],
                G_ema=ema and copy.deepcopy(ema.target.state_dict()))
    return make(G, D, GD, z_, y_, ema, state_dict, config)
  monkeypatch.setattr(train_fns, 'GAN_training_function', hooked)
  return seen


def assert_loaded(seen, saved, names):
  for name in names:
    assert tensors_equal(seen[name], saved[name]), name
  for name in ['G_optim', 'D_optim']:  # Adam moments present, and compared above
    assert seen[name]['state'] and all('exp_avg' in s for s in seen[name]['state'].values())


def snapshot(folder):
  return {f: (os.stat(folder / f).st_mtime_ns, hashlib.sha256((folder / f).read_bytes()).digest())
          for f in sorted(os.listdir(folder))}


def test_finetune_from_loads_weights_and_optimizers_and_trains_into_a_new_folder(
    tmp_path, capsys, monkeypatch):
  config = prepared(tmp_path, '--ema')
  saved = write_run(tmp_path, 'EXP', config, {None: 7}, ema=True)[None]
  before = snapshot(tmp_path / 'weights' / 'EXP')
  seen = capture_loaded_state(monkeypatch)
  train.main(argv(tmp_path, '--ema --finetune_from EXP --experiment_name NEW --num_iters 2'))
  out = capsys.readouterr().out
  assert 'Fine-tuning from EXP (the plain files) into NEW' in out
  assert 'Beginning training at iteration 0 ' in out
  assert seen['itr'] == 0
  assert_loaded(seen, saved, ['G', 'D', 'G_optim', 'D_optim', 'G_ema'])
  assert snapshot(tmp_path / 'weights' / 'EXP') == before  # untouched
  assert not os.path.exists(tmp_path / 'logs' / 'EXP')
  assert checkpoints.safe_load(tmp_path / 'weights' / 'NEW' / 'state_dict.pth')['itr'] == 2
  lines = read(tmp_path / 'logs' / 'NEW' / 'G_loss.log').splitlines()
  assert [int(line.split(':')[0]) for line in lines] == [1, 2]


def test_finetune_trains_at_its_own_learning_rates(tmp_path, monkeypatch):
  """The Adam moments come from EXP; the learning rates and Adam constants from this run."""
  saved = write_run(tmp_path, 'EXP', prepared(tmp_path), {None: 3})[None]
  seen = capture_loaded_state(monkeypatch)
  train.main(argv(tmp_path, '--finetune_from EXP --experiment_name NEW --num_iters 1 '
                            '--G_lr 1e-5 --D_lr 3e-5 --G_B1 0.5 --D_B2 0.99 --adam_eps 1e-7'))
  for name, lr, betas in [('G_optim', 1e-5, (0.5, 0.999)), ('D_optim', 3e-5, (0.0, 0.99))]:
    assert tensors_equal(seen[name]['state'], saved[name]['state'])
    for group in seen[name]['param_groups']:
      assert (group['lr'], tuple(group['betas']), group['eps']) == (lr, betas, 1e-7)
    assert all(g['lr'] != lr for g in saved[name]['param_groups'])


@pytest.mark.parametrize('saved_flags, tuned_flags', [('', '--AC_weight 1'),
                                                     ('--AC_weight 1', '')])
def test_finetune_adds_or_drops_the_auxiliary_classifier(tmp_path, capsys, monkeypatch,
                                                         saved_flags, tuned_flags):
  """A checkpoint without D's auxiliary classifier fine-tunes with --AC_weight (the head starts
  fresh, without Adam moments) and one with it fine-tunes without (the head is left out); every
  other weight and moment comes from the file."""
  saved = write_run(tmp_path, 'EXP', prepared(tmp_path, saved_flags), {None: 3})[None]
  seen = capture_loaded_state(monkeypatch)
  train.main(argv(tmp_path, '--finetune_from EXP --experiment_name NEW --num_iters 1 '
                  + tuned_flags))
  out = capsys.readouterr().out
  head = ['classifier.weight', 'classifier.bias']
  assert all((key in seen['D']) == bool(tuned_flags) for key in head)
  assert all((key in saved['D']) == bool(saved_flags) for key in head)
  common = [k for k in saved['D'] if not k.startswith('classifier.')]
  assert [k for k in seen['D'] if not k.startswith('classifier.')] == common
  assert tensors_equal({k: seen['D'][k] for k in common}, {k: saved['D'][k] for k in common})
  n_params = len(seen['D_optim']['param_groups'][0]['params'])
  n_common = n_params - 2 if tuned_flags else n_params
  assert n_params == len(saved['D_optim']['param_groups'][0]['params']) + (2 if tuned_flags
                                                                           else -2)
  assert sorted(seen['D_optim']['state']) == list(range(n_common))  # none for a fresh head
  assert tensors_equal(seen['D_optim']['state'],
                       {i: saved['D_optim']['state'][i] for i in range(n_common)})
  assert ('not in the checkpoint, freshly initialised' in out) == bool(tuned_flags)
  assert ('in the checkpoint but not in this model, left out' in out) == bool(saved_flags)
  tuned = checkpoints.safe_load(tmp_path / 'weights' / 'NEW' / 'D_optim.pth')
  assert sorted(tuned['state']) == list(range(n_params))  # the head trained in that iteration


def test_resume_with_load_weights_continues_from_that_copy(tmp_path, capsys, monkeypatch):
  """Written on a GPU machine (every tensor tagged cuda:0), resumed here."""
  config = prepared(tmp_path)
  with saved_as_if_on('cuda:0'):
    saved = write_run(tmp_path, 'EXP', config, {None: 4, 'copy0': 2, 'copy1': 4})
  seen = capture_loaded_state(monkeypatch)
  train.main(argv(tmp_path, '--resume --load_weights copy0 --experiment_name EXP --num_iters 3'))
  out = capsys.readouterr().out
  assert 'Loading copy0 weights from' in out and 'Beginning training at iteration 2 ' in out
  assert seen['itr'] == 2
  assert_loaded(seen, saved['copy0'], ['G', 'D', 'G_optim', 'D_optim'])
  assert not tensors_equal(seen['G'], saved[None]['G'])
  assert checkpoints.safe_load(tmp_path / 'weights' / 'EXP' / 'state_dict.pth')['itr'] == 3
  assert read(tmp_path / 'logs' / 'EXP' / 'G_loss.log').splitlines()[0].startswith('3: ')


def test_checkpoints_load_onto_the_models_device_whatever_they_were_saved_from(tmp_path):
  config = prepared(tmp_path)
  with saved_as_if_on('cuda:0'):
    saved = write_run(tmp_path, 'EXP', config, {None: 1})[None]
  path = tmp_path / 'weights' / 'EXP' / 'G.pth'
  if not torch.cuda.is_available():  # the control: without map_location this file cannot load
    with pytest.raises(RuntimeError, match='CUDA'):
      torch.load(path, weights_only=True)
  torch.manual_seed(99)
  G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
  state = {'itr': 0}
  checkpoints.load_weights(G, D, state, str(tmp_path / 'weights'), 'EXP')
  assert state['itr'] == 1
  assert tensors_equal(G.state_dict(), saved['G']) and tensors_equal(D.state_dict(), saved['D'])
  assert tensors_equal(G.optim.state_dict(), saved['G_optim'])
