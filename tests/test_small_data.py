"""The small-data tools (the Shapes scorer itself: test_shapes_classifier.py):
sample.py --sample_shapes_accuracy, and scripts/quickstart.sh and
scripts/launch_small_data.sh end to end at a tiny size, stopped by SIGTERM and resumed."""
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import checkpoints
import config as configuration
import datasets
import sample
import shapes_classifier
from errors import UserError

SHAPES = datasets.Shapes.read_class_names(None)
TINY = ('--G_ch 2 --D_ch 2 --batch_size 4 --dim_z 8 --shared_dim 4 --num_workers 0 '
        '--sv_log_interval 1')



def test_sample_py_refuses_shapes_accuracy_for_other_classes_before_loading(tmp_path):
  for name in ('cat', 'dog'):
    (tmp_path / 'data' / name).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'data' / name / 'a.png')
  with pytest.raises(UserError, match='class accuracy needs the Shapes classes'):
    sample.main(['--dataset', str(tmp_path / 'data'), '--resolution', '32', '--base_root',
                 str(tmp_path), '--sample_shapes_accuracy'])


# ---------------------------------------------------------------------------------------------
# The scripts
# ---------------------------------------------------------------------------------------------


def tiny_classifier(data_root, resolution=16):
  """A cached Shapes classifier, so the scripts do not spend seconds training one."""
  images, labels = shapes_classifier.shapes_images(resolution, 40, 1)
  model = shapes_classifier.fit(images, labels, 10, epochs=1, batch_size=20, log=lambda s: None)
  shapes_classifier.save_cache(model, 0.5, resolution, data_root)


def start(command, log, env=None):
  return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                          env={**os.environ, **(env or {})}, start_new_session=True)


def stop_once_training(proc, logs, timeout=240):
  """SIGTERM to proc once an iteration has been logged under `logs`."""
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if any(os.path.exists(os.path.join(logs, exp, 'G_loss.log'))
           for exp in (os.listdir(logs) if os.path.isdir(logs) else [])):
      proc.send_signal(signal.SIGTERM)
      return proc.wait(timeout)
    time.sleep(0.2)
  raise AssertionError('no training iteration was logged in time')


def test_quickstart_stops_cleanly_on_sigterm_then_resumes_and_scores(tmp_path, repo_root):
  root = tmp_path / 'qs'
  tiny_classifier(str(root / 'data'))
  env = {'QUICKSTART_ROOT': str(root)}
  script = os.path.join(repo_root, 'scripts', 'quickstart.sh')
  with open(tmp_path / 'first.log', 'w') as log:
    code = stop_once_training(start(['bash', script] + shlex.split(TINY + ' --num_iters 1000'), log,
                                    env), str(root / 'logs'))
  first = (tmp_path / 'first.log').read_text()
  assert code == 0, first
  assert 'Received SIGTERM: saved the checkpoint' in first and 'Stopped by a signal' in first
  exp, = [e for e in os.listdir(root / 'weights')]
  assert exp.startswith('BigGAN_Shapes16_')
  stopped_at = checkpoints.safe_load(root / 'weights' / exp / 'state_dict.pth')['itr']
  assert os.path.exists(root / 'weights' / exp / 'G_ema.pth')
  done = subprocess.run(['bash', script] + shlex.split(TINY + ' --num_iters %d --resume'
                                                       % (stopped_at + 2)),
                        capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
  assert done.returncode == 0, done.stdout + done.stderr
  assert 'Resuming from' in done.stdout
  accuracy = [line for line in done.stdout.splitlines() if 'class accuracy' in line]
  assert len(accuracy) >= 1 and 'itr %d' % (stopped_at + 2) in accuracy[-1]
  sheet = done.stdout.split('final sheet, a row per class: ')[1].split(')')[0]
  assert sheet.endswith('/%d/samples0.jpg' % (stopped_at + 2)) and os.path.exists(sheet)
  assert os.path.exists(root / 'training.png')
  # The classifier started beside the training read the cache (a tiny one: 0.5) as sample.py did.
  assert 'held-out accuracy 0.500' in (root / 'classifier.log').read_text()
  assert 'held-out accuracy 0.500' in (root / 'score.log').read_text()


def test_launcher_trains_a_folder_and_stops_cleanly_on_sigterm(tmp_path, repo_root):
  datasets.write_image_folder(datasets.Shapes(32, num_images=40), str(tmp_path / 'shapes40'))
  script = os.path.join(repo_root, 'scripts', 'launch_small_data.sh')
  flags = ('--dataset %s --resolution 32 --base_root %s %s'
           % (tmp_path / 'shapes40', tmp_path / 'out', TINY))
  with open(tmp_path / 'launch.log', 'w') as log:
    code = stop_once_training(start(['bash', script] + shlex.split(flags), log, {}),
                              str(tmp_path / 'out' / 'logs'))
  out = (tmp_path / 'launch.log').read_text()
  assert code == 0, out
  assert 'Received SIGTERM: saved the checkpoint' in out
  exp, = os.listdir(tmp_path / 'out' / 'weights')
  assert '_DA' in exp  # the recipe's augmentation is in the name
  state = checkpoints.safe_load(tmp_path / 'out' / 'weights' / exp / 'state_dict.pth')
  assert state['itr'] >= 1 and 'augment_rng' in state
  G = checkpoints.safe_load(tmp_path / 'out' / 'weights' / exp / 'G_ema.pth')
  assert all(torch.isfinite(t).all() for t in G.values() if t.is_floating_point())
  # The bench reads the same recipe from the script, and it parses.
  sys.path.insert(0, os.path.join(repo_root, 'bench'))
  import bench_small_data
  recipe = bench_small_data.script_flags(script)
  config = vars(configuration.prepare_parser().parse_args(shlex.split(recipe)))
  assert config['ema'] and config['DiffAugment'] == state['config']['DiffAugment']
