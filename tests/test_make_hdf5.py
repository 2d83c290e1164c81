"""make_hdf5.py: the file holds PIL's resize, refuses to overwrite, leaves nothing half written,
and its command-line errors are one line."""
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

import datasets
import errors
import make_hdf5
from test_data_inputs import rgb, save
from test_datasets import reference_pixels

def test_make_hdf5_refuses_hdf5_and_leaves_nothing_half_written(tmp_path, monkeypatch):
  for i in range(12):
    save(str(tmp_path / 'data' / ('c%d' % (i % 3)) / ('%d.png' % i)), rgb(i))
  with pytest.raises(errors.UserError, match='already HDF5'):
    make_hdf5.main(['--dataset', 'I128_hdf5', '--data_root', str(tmp_path)])
  out = tmp_path / 'data16.hdf5'  # the default name next to the folder
  out.write_bytes(b'previous contents')
  command = ['--dataset', str(tmp_path / 'data'), '--resolution', '16', '--batch_size', '4',
             '--num_workers', '0']
  with pytest.raises(errors.UserError, match=r'--out .*data16.hdf5 already exists \(not an HDF5 '
                                             r'dataset\); .* pass --overwrite'):
    make_hdf5.main(command)
  real_collate, calls = make_hdf5._collate, []

  def interrupted(items):  # Ctrl-C, then SIGTERM (which used to leave the temporary file)
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt
    if len(calls) == 4:
      os.kill(os.getpid(), signal.SIGTERM)
    return real_collate(items)
  monkeypatch.setattr(make_hdf5, '_collate', interrupted)
  with pytest.raises(KeyboardInterrupt):
    make_hdf5.main(command + ['--overwrite'])
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(SystemExit) as e:
    make_hdf5.main(command + ['--overwrite'])
  assert e.value.code == 128 + signal.SIGTERM and signal.getsignal(signal.SIGTERM) == before
  assert out.read_bytes() == b'previous contents'
  assert sorted(os.listdir(tmp_path)) == ['data', 'data16.hdf5']
  monkeypatch.setattr(make_hdf5, '_collate', real_collate)
  assert make_hdf5.main(command + ['--overwrite']) == str(out)
  assert datasets.dataset_info(str(out))['n_classes'] == 3
  with pytest.raises(errors.UserError, match=r'already exists \(an HDF5 dataset of 12 images\)'):
    make_hdf5.main(command)


def test_make_hdf5_command_line_error_is_one_line(tmp_path, repo_root):
  result = subprocess.run([sys.executable, os.path.join(repo_root, 'make_hdf5.py'), '--dataset',
                           str(tmp_path / 'nowhere'), '--resolution', '16'],
                          capture_output=True, text=True, cwd=str(tmp_path))
  assert result.returncode == 2
  assert result.stderr.startswith('error: unknown --dataset') and result.stderr.count('\n') == 1
  assert os.listdir(tmp_path) == []


def test_make_hdf5_resizes_as_pil_does(tmp_path):
  """Sources of other sizes than --resolution, larger and smaller: the file holds exactly PIL's
  bilinear resize of the centre crop (rounded, not the original's truncation)."""
  rng = np.random.default_rng(5)
  sizes = [(50, 37), (23, 41), (64, 64), (33, 33), (97, 20)]
  for i, (w, h) in enumerate(sizes):
    os.makedirs(tmp_path / 'src' / ('c%d' % (i % 2)), exist_ok=True)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (h // 3 + 1, w // 3 + 1, 3),
                                                     dtype=np.uint8)).resize((w, h)))
    Image.fromarray(smooth).save(tmp_path / 'src' / ('c%d' % (i % 2)) / ('%d.png' % i))
  out = str(tmp_path / 'out.hdf5')
  make_hdf5.main(['--dataset', str(tmp_path / 'src'), '--resolution', '24', '--out', out,
                  '--num_workers', '0', '--batch_size', '2'])
  folder = datasets.open_dataset(str(tmp_path / 'src'), resolution=24)
  with h5py.File(out, 'r') as f:
    images = f['imgs'][:]
  assert images.shape == (5, 3, 24, 24)
  for i in range(5):
    assert np.array_equal(images[i], reference_pixels(folder.path(i), 24)), folder.path(i)
