"""Bad and unusual input to the data pipeline: one-line errors, logged skips, nothing half
written."""
import os
import pickle
import tarfile

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import datasets
import errors
import make_hdf5
from test_bad_inputs import error_line


def save(path, array, mode=None, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array, mode).save(path, **kwargs) if mode else Image.fromarray(array).save(path)


def rgb(seed, size=16):
  return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


# --- Folders -------------------------------------------------------------------------------------


def test_folder_layout_errors(tmp_path):
  with pytest.raises(errors.UserError, match='unknown --dataset'):
    datasets.dataset_info(str(tmp_path / 'missing'), resolution=16)
  with pytest.raises(errors.UserError, match='does not exist'):
    datasets.get_data_loaders('I32', str(tmp_path), num_workers=0)
  with pytest.raises(errors.UserError, match='does not exist.*make_hdf5'):
    datasets.get_data_loaders('I32_hdf5', str(tmp_path), num_workers=0)
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(errors.UserError, match='no class subfolders'):
    datasets.dataset_info(str(empty), resolution=16)
  save(str(tmp_path / 'flat' / 'a.png'), rgb(0))
  with pytest.raises(errors.UserError, match='holds images but no class subfolders'):
    datasets.dataset_info(str(tmp_path / 'flat'), resolution=16)
  save(str(tmp_path / 'uneven' / 'cat' / 'a.png'), rgb(0))
  (tmp_path / 'uneven' / 'dog').mkdir()
  (tmp_path / 'uneven' / 'dog' / 'notes.txt').write_text('no images here')
  with pytest.raises(errors.UserError, match='dog has no images'):
    datasets.get_data_loaders(str(tmp_path / 'uneven'), resolution=16, num_workers=0)
  with pytest.raises(errors.UserError, match='fewer than one batch'):
    datasets.EpochSampler(range(3), 4)


def test_unreadable_images_are_skipped_and_counted(tmp_path, capfd):
  root = tmp_path / 'data'
  for i in range(4):
    save(str(root / ('c%d' % (i % 2)) / ('%d.png' % i)), rgb(i))
  (root / 'c0' / 'garbage.jpg').write_bytes(b'not an image at all')
  whole = root / 'c1' / 'whole.png'
  save(str(whole), rgb(9, 64))
  (root / 'c1' / 'truncated.png').write_bytes(whole.read_bytes()[:300])
  whole.unlink()
  out = str(tmp_path / 'out.hdf5')
  make_hdf5.main(['--dataset', str(root), '--resolution', '16', '--out', out, '--num_workers', '2',
                  '--batch_size', '3'])
  assert capfd.readouterr().err.count("warning: skipping unreadable image") == 2
  with h5py.File(out, 'r') as f:
    assert len(f['imgs']) == 4 and f.attrs['skipped'] == 2
    assert f['labels'][:].tolist() == [0, 0, 1, 1]
  # The training loader replaces an unreadable image by the next readable one, and counts it.
  folder = datasets.open_dataset(str(root), resolution=16)
  bad = [i for i in range(len(folder)) if 'garbage' in folder.path(i) or 'trunc' in folder.path(i)]
  assert len(bad) == 2
  x, y = folder[bad[0]]
  assert torch.equal(x, folder[bad[0] + 1][0]) and folder.num_skipped == 1
  assert sum(1 for _ in datasets.get_data_loaders(str(root), resolution=16, batch_size=2,
                                                   num_workers=0)[0]) == 3


def test_image_modes_are_converted(tmp_path):
  gray = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
  rgba = np.random.default_rng(1).integers(0, 256, (16, 16, 4), dtype=np.uint8)
  deep = np.random.default_rng(2).integers(0, 65536, (16, 16), dtype=np.uint16)
  cmyk = Image.fromarray(rgb(3)).convert('CMYK')
  save(str(tmp_path / 'a' / '0_gray.png'), gray)
  save(str(tmp_path / 'a' / '1_rgba.png'), rgba)
  save(str(tmp_path / 'a' / '2_deep.png'), deep)
  cmyk.save(str(tmp_path / 'a' / '3_cmyk.jpg'), quality=100)
  alpha = rgba[..., 3:].astype(np.float64) / 255
  expected = [
      np.repeat(gray[..., None], 3, 2),
      np.round(rgba[..., :3] * alpha + 255 * (1 - alpha)),  # composited on white
      np.repeat(np.round(deep / 257.0)[..., None], 3, 2),  # 16 bit scaled, not clipped
      np.asarray(Image.open(tmp_path / 'a' / '3_cmyk.jpg').convert('RGB')),
  ]
  data = datasets.open_dataset(str(tmp_path), resolution=16)
  assert [os.path.basename(data.path(i)) for i in range(4)] == ['0_gray.png', '1_rgba.png',
                                                                '2_deep.png', '3_cmyk.jpg']
  for i, reference in enumerate(expected):
    pixels, _ = data.read(i)
    assert pixels.shape == (3, 16, 16)
    assert np.abs(pixels.transpose(1, 2, 0).astype(int) - reference).max() <= 1


def test_small_images_are_upscaled_with_one_warning(tmp_path, capsys):
  for i in range(3):
    save(str(tmp_path / 'a' / ('%d.png' % i)), rgb(i, 8))
  datasets._warned.clear()
  data = datasets.open_dataset(str(tmp_path), resolution=20)
  for i in range(3):
    x, _ = data[i]
    reference = Image.fromarray(rgb(i, 8)).resize((20, 20), Image.BILINEAR)
    assert torch.equal(x, datasets.to_float(np.asarray(reference).transpose(2, 0, 1)))
  assert capsys.readouterr().err.count('smaller than 20 px') == 1


def test_a_damaged_index_cache_is_rebuilt_with_a_warning(tmp_path, capsys):
  for i in range(4):
    save(str(tmp_path / 'data' / ('c%d' % (i % 2)) / ('%d.png' % i)), rgb(i))
  first = datasets.open_dataset(str(tmp_path / 'data'), resolution=16)
  cache = tmp_path / 'data' / '.biggan_index_16.npz'
  cache.write_bytes(cache.read_bytes()[:200])  # as a full disk or a killed run leaves it
  capsys.readouterr()
  again = datasets.open_dataset(str(tmp_path / 'data'), resolution=16)
  assert [again.path(i) for i in range(4)] == [first.path(i) for i in range(4)]
  assert capsys.readouterr().err.count('warning: the file index %s is damaged' % cache) == 1
  datasets.open_dataset(str(tmp_path / 'data'), resolution=16)  # rewritten whole
  assert capsys.readouterr().err == ''


def test_split_folders_are_said_to_look_like_splits(tmp_path, capsys):
  for split in ('train', 'val'):
    for c in ('cat', 'dog'):
      save(str(tmp_path / 'data' / split / c / '0.png'), rgb(0))
  datasets._warned.clear()
  info = datasets.dataset_info(str(tmp_path / 'data'), resolution=16)
  assert info['n_classes'] == 2  # as asked, but not silently:
  assert capsys.readouterr().err.strip() == (
      'warning: %s has the subfolders train, val, which look like dataset splits, not classes, '
      'yet become 2 classes; if each holds one subfolder per class, point --dataset at %s'
      % (tmp_path / 'data', tmp_path / 'data' / 'train'))
  assert datasets.dataset_info(str(tmp_path / 'data' / 'train'), resolution=16)['n_classes'] == 2
  assert capsys.readouterr().err == ''


def test_an_error_in_a_loader_worker_is_one_line(tmp_path, capsys):
  for i in range(2):
    (tmp_path / 'data' / 'c0').mkdir(parents=True, exist_ok=True)
    (tmp_path / 'data' / 'c0' / ('%d.png' % i)).write_bytes(b'not an image')
  loader = datasets.get_data_loaders(str(tmp_path / 'data'), resolution=16, batch_size=1,
                                     num_workers=1)[0]
  with pytest.raises(SystemExit):
    errors.run_main(lambda: next(iter(loader)))
  assert error_line(capsys.readouterr().err) == (
      'error: 2 unreadable images in a row from item 0; check the data (in data-loader worker 0)')


# --- HDF5 ----------------------------------------------------------------------------------------


def test_truncated_and_foreign_hdf5_files(tmp_path):
  good = str(tmp_path / 'good.hdf5')
  with h5py.File(good, 'w') as f:
    f['imgs'] = np.zeros((50, 3, 16, 16), np.uint8)
    f['labels'] = np.zeros(50, np.int64)
  truncated = str(tmp_path / 'truncated.hdf5')
  with open(good, 'rb') as f:
    blob = f.read()
  with open(truncated, 'wb') as f:
    f.write(blob[:len(blob) // 2])
  (tmp_path / 'text.hdf5').write_text('hello')
  with h5py.File(tmp_path / 'foreign.hdf5', 'w') as f:
    f['weights'] = np.zeros(3)
  with h5py.File(tmp_path / 'float.hdf5', 'w') as f:
    f['imgs'] = np.zeros((2, 3, 8, 8), np.float32)
    f['labels'] = np.zeros(2, np.int64)
  for name, message in [('truncated', 'not a readable HDF5'), ('text', 'not a readable HDF5'),
                        ('foreign', 'no "imgs" and "labels"'), ('float', 'expected "imgs" uint8')]:
    path = str(tmp_path / (name + '.hdf5'))
    with pytest.raises(errors.UserError, match=message):
      datasets.dataset_info(path)
    with pytest.raises(errors.UserError, match=message):
      datasets.get_data_loaders(path, num_workers=0)
  with pytest.raises(errors.UserError, match='holds 16 px'):
    datasets.dataset_info(good, resolution=32)



# --- CIFAR ---------------------------------------------------------------------------------------


def write_fake_cifar10(folder, n_per_batch=6):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  images, labels = [], []
  for i in range(1, 6):
    batch = {'data': rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
             'labels': rng.integers(0, 10, n_per_batch).tolist()}
    with open(os.path.join(folder, 'data_batch_%d' % i), 'wb') as f:
      pickle.dump(batch, f)
    images.append(batch['data'])
    labels += batch['labels']
  with open(os.path.join(folder, 'batches.meta'), 'wb') as f:
    pickle.dump({'label_names': ['class%d' % c for c in range(10)]}, f)
  return np.concatenate(images).reshape(-1, 3, 32, 32), np.array(labels)


def test_cifar_from_local_files(tmp_path):
  images, labels = write_fake_cifar10(str(tmp_path / 'cifar' / 'cifar-10-batches-py'))
  info = datasets.dataset_info('C10', str(tmp_path))
  assert info['class_names'][3] == 'class3' and info['n_classes'] == 10
  loader = datasets.get_data_loaders('C10', str(tmp_path), batch_size=5, num_workers=0,
                                     shuffle=False)[0]
  x, y = map(torch.cat, zip(*loader))
  assert torch.equal(x, ((torch.from_numpy(images).float() / 255) - 0.5) * 2)
  assert y.tolist() == labels.tolist()
  # Augment: zero padding of 4, a random 32 px crop, a random flip (as the original).
  data = datasets.open_dataset('C10', str(tmp_path), augment=True)
  padded = np.pad(images[0], ((0, 0), (4, 4), (4, 4)))
  windows = [datasets.to_float(padded[:, t:t + 32, s:s + 32]) for t in range(9) for s in range(9)]
  for draw in range(10):
    x, _ = data[(0, (0, draw))]
    assert any(torch.equal(x, w) or torch.equal(x, w.flip(-1)) for w in windows)


def write_fake_cifar100(folder, n=12):
  """cifar-100-python as published: one 'train' pickle with fine and coarse labels, 'meta'."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
  fine = (np.arange(n) * 9 % 100).tolist()  # up to 99, not the coarse labels
  with open(os.path.join(folder, 'train'), 'wb') as f:
    pickle.dump({'filenames': ['%d.png' % i for i in range(n)], 'batch_label': 'training batch',
                 'fine_labels': fine, 'coarse_labels': [c // 5 for c in fine], 'data': images}, f)
  with open(os.path.join(folder, 'meta'), 'wb') as f:
    pickle.dump({'fine_label_names': ['fine%d' % c for c in range(100)],
                 'coarse_label_names': ['coarse%d' % c for c in range(20)]}, f)
  return images.reshape(-1, 3, 32, 32), np.array(fine)


def test_cifar100_from_local_files(tmp_path):
  images, labels = write_fake_cifar100(str(tmp_path / 'cifar' / 'cifar-100-python'))
  info = datasets.dataset_info('C100', str(tmp_path))
  assert (info['kind'], info['n_classes'], info['resolution'], info['classes_per_sheet']) == (
      'cifar100', 100, 32, 100)
  assert len(info['class_names']) == 100 and info['class_names'][99] == 'fine99'
  loader = datasets.get_data_loaders('C100', str(tmp_path), batch_size=4, num_workers=0,
                                     shuffle=False)[0]
  x, y = map(torch.cat, zip(*loader))
  assert torch.equal(x, ((torch.from_numpy(images).float() / 255) - 0.5) * 2)
  assert y.tolist() == labels.tolist() and max(y.tolist()) == 99  # the fine labels
  shuffled = datasets.get_data_loaders('C100', str(tmp_path), batch_size=4, num_workers=0,
                                       shuffle=True, seed=1)[0]
  assert sorted(torch.cat([b for _, b in shuffled]).tolist()) == sorted(labels.tolist())


def test_cifar_download_path_and_offline_error(tmp_path, monkeypatch):
  monkeypatch.setattr(datasets.CIFAR10, 'url', 'http://127.0.0.1:9/cifar-10-python.tar.gz')
  with pytest.raises(errors.UserError, match='data_batch_1.*download it'):
    datasets.get_data_loaders('C10', str(tmp_path), num_workers=0)
  # An archive already in data_root/cifar goes through torchvision's check-and-extract path.
  write_fake_cifar10(str(tmp_path / 'build' / 'cifar-10-batches-py'))
  os.makedirs(tmp_path / 'cifar', exist_ok=True)  # the failed download made it
  with tarfile.open(tmp_path / 'cifar' / 'cifar-10-python.tar.gz', 'w:gz') as tar:
    tar.add(str(tmp_path / 'build' / 'cifar-10-batches-py'), arcname='cifar-10-batches-py')
  monkeypatch.setattr(datasets.CIFAR10, 'md5', None)
  assert len(datasets.open_dataset('C10', str(tmp_path))) == 30
