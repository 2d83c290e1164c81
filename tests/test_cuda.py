"""What only a CUDA GPU can check (`pytest -m cuda`; skipped without one; bench/gpu_report.sh runs
them): --amp bf16 and fp16 (GradScaler) training, --channels_last, --compile, torchrun with one
process on NCCL with and without --cross_replica, Inception metrics in training, evaluate.py and
sample.py on the device, save/resume on CUDA with what exactness holds there, and --fused_optim
resuming a run saved without it.

With BIGGAN_CUDA_REPORT=FILE set, the resume test appends its finding (bit-exact or the largest
difference) to FILE as a Markdown line, for the GPU report."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import checkpoints
import evaluate
import sample
import train
from test_train_metrics import write_moments

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]

FLAGS = ('--dataset Shapes --resolution 32 --G_ch 8 --D_ch 8 --batch_size 8 --num_D_steps 2 '
         '--G_attn 16 --D_attn 16 --G_shared --hier --dim_z 16 --shared_dim 8 --num_workers 0 '
         '--shuffle --sv_log_interval 1 --G_lr 1e-3 --D_lr 1e-3 --ema --use_ema --ema_start 2 '
         '--test_every 100000 --save_every 2 --device cuda --experiment_name exp')


def argv(root, extra=''):
  return ('%s --base_root %s %s' % (FLAGS, root, extra)).split()


def weights(root, suffix=None):
  """Every tensor of the plain set (G, D, G_ema and the optimizers), keyed by file and entry."""
  out = {}
  for name in ('G', 'D', 'G_ema', 'G_optim', 'D_optim'):
    state = checkpoints.safe_load(checkpoints.file_path('%s/weights/exp' % root, name, suffix))
    flat = state if name[-5:] != 'optim' else {
        '%s.%s' % (i, k): v for i, s in state['state'].items() for k, v in s.items()}
    out.update({'%s:%s' % (name, k): v for k, v in flat.items() if torch.is_tensor(v)})
  return out


def losses(root, name='G_loss'):
  with open('%s/logs/exp/%s.log' % (root, name)) as f:
    return [float(line.split(':')[1]) for line in f]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A short CUDA run (bf16 autocast, channels_last) that the sampling tests read."""
  root = tmp_path_factory.mktemp('trained')
  train.main(argv(root, '--num_iters 4 --amp bf16 --channels_last'))
  return root


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_mixed_precision_trains_with_finite_losses(tmp_path, amp):
  train.main(argv(tmp_path, '--num_iters 4 --amp ' + amp))
  state = checkpoints.safe_load(tmp_path / 'weights' / 'exp' / 'state_dict.pth')
  assert all(np.isfinite(losses(tmp_path, name)).all() for name in ('G_loss', 'D_loss_real'))
  if amp == 'fp16':  # the GradScaler ran and its state is checkpointed
    assert state['G_scaler']['scale'] > 0 and state['D_scaler']['_growth_tracker'] >= 0
  else:
    assert state['G_scaler'] == {}
  G = checkpoints.safe_load(tmp_path / 'weights' / 'exp' / 'G.pth')
  assert all(t.dtype in (torch.float32, torch.int64) for t in G.values())  # fp32 weights


def test_channels_last_and_compile_train_like_eager(tmp_path):
  """--channels_last and --compile change the memory layout and the kernels, not the maths: the
  first iteration's losses agree with the eager run's (to TF32 tolerance: cuDNN's convolutions
  run in TF32 by default, and each layout picks its own algorithms)."""
  runs = {}
  for name, extra in (('eager', ''), ('cl', '--channels_last'), ('compile', '--compile')):
    train.main(argv(tmp_path / name, '--num_iters 2 ' + extra))
    runs[name] = losses(tmp_path / name)
  for name in ('cl', 'compile'):
    assert np.allclose(runs[name][0], runs['eager'][0], rtol=0.05, atol=1e-3), (name, runs)
    assert np.isfinite(runs[name]).all()


@pytest.mark.parametrize('amp', ['', '--amp fp16'])
def test_fused_optim_resumes_a_run_saved_without_it(tmp_path, amp):
  """--fused_optim on CUDA, also under fp16's GradScaler, and --resume of a run saved with the
  default Adam: the fused kernel needs Adam's step counters on the GPU, where PyTorch only puts
  them when the file says fused."""
  train.main(argv(tmp_path, '--num_iters 2 ' + amp))
  train.main(argv(tmp_path, '--num_iters 4 --resume --fused_optim ' + amp))
  state = checkpoints.safe_load(tmp_path / 'weights' / 'exp' / 'state_dict.pth')
  assert state['itr'] == 4 and np.isfinite(losses(tmp_path)).all()
  optim = checkpoints.safe_load(tmp_path / 'weights' / 'exp' / 'G_optim.pth')
  assert optim['param_groups'][0]['fused'] is True


@pytest.mark.parametrize('cross_replica', [False, True])
def test_torchrun_one_process_on_nccl(tmp_path, repo_root, cross_replica):
  extra = '--num_iters 2' + (' --cross_replica' if cross_replica else '')
  result = subprocess.run(
      [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '1', '--master_port',
       '29541', os.path.join(repo_root, 'train.py')] + argv(tmp_path, extra),
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  state = checkpoints.safe_load(tmp_path / 'weights' / 'exp' / 'state_dict.pth')
  assert state['itr'] == 2 and len(state['rng']) == 1 and 'cuda' in state['rng'][0]
  assert np.isfinite(losses(tmp_path)).all()


def test_inception_metrics_in_training_on_cuda(tmp_path, inception_weights):
  write_moments(str(tmp_path / 'data'))
  train.main(argv(tmp_path, '--num_iters 2 --test_every 2 --num_inception_images 16 '
                            '--inception_weights %s' % inception_weights))
  with open(tmp_path / 'logs' / 'exp_log.jsonl') as f:
    [record] = [json.loads(line) for line in f]
  assert record['itr'] == 2 and np.isfinite(record['IS_mean']) and np.isfinite(record['FID'])


def test_evaluate_and_sample_on_cuda(trained, inception_weights):
  result = evaluate.main([str(trained / 'weights' / 'exp'), '--metrics', 'IS', '--num_images',
                          '16', '--device', 'cuda', '--inception_weights', inception_weights,
                          '--G_eval_mode', '--use_ema'])
  assert result['N'] == 16 and np.isfinite(result['IS_mean'])
  out = sample.main(argv(trained, '--sample_npz --sample_num_npz 20 --sample_sheets '
                                  '--G_eval_mode'))
  with np.load(out['npz']) as npz:
    assert npz['x'].shape == (20, 3, 32, 32) and npz['x'].dtype == np.uint8
  assert os.listdir(out['sheets'])


def test_resume_on_cuda_and_what_exactness_holds(tmp_path):
  """4 iterations against 2 + --resume + 2. On CUDA, cuDNN's benchmark mode (train.py's setting)
  and atomics in some backward kernels need not repeat bit for bit, so the two runs are held to
  float tolerance; the finding (bit-exact or the largest difference) goes to the report."""
  train.main(argv(tmp_path / 'a', '--num_iters 4'))
  train.main(argv(tmp_path / 'b', '--num_iters 2'))
  train.main(argv(tmp_path / 'b', '--num_iters 4 --resume'))
  a, b = weights(tmp_path / 'a'), weights(tmp_path / 'b')
  assert a.keys() == b.keys()
  exact = all(torch.equal(a[k], b[k]) for k in a)
  worst = max(((a[k].double() - b[k].double()).abs().max().item(), k) for k in a
              if a[k].is_floating_point())
  assert worst[0] < 1e-2, worst
  assert len(losses(tmp_path / 'b')) == 4
  finding = ('bit-exact (G, D, G_ema, optimizers)' if exact else
             'not bit-exact; largest difference %.3g in %s' % worst)
  print('CUDA resume: %s' % finding)
  if os.environ.get('BIGGAN_CUDA_REPORT'):
    with open(os.environ['BIGGAN_CUDA_REPORT'], 'a') as f:
      f.write('- resume on CUDA (%s, 4 iterations against 2 + --resume + 2): %s\n'
              % (torch.cuda.get_device_name(), finding))
