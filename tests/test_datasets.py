"""The data pipeline: names, Shapes, folder -> make_hdf5 -> loader round trips, samplers, ranks
(make_hdf5.py's own tests: test_make_hdf5.py)."""
import os
import tempfile

import h5py
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision.transforms as T
from PIL import Image

import datasets
import errors
import make_hdf5


def batches(loader, count=None):
  out = []
  for x, y in loader:
    out.append((x, y))
    if count is not None and len(out) == count:
      break
  return out


def assert_same_batches(first, second):
  assert len(first) == len(second) > 0
  for (x1, y1), (x2, y2) in zip(first, second):
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.fixture(scope='module')
def shapes_folder(tmp_path_factory):
  """60 Shapes images at 32 px as lossless PNGs in class folders, and their source dataset."""
  root = str(tmp_path_factory.mktemp('data') / 'shapes folder')
  source = datasets.Shapes(32, num_images=60)
  datasets.write_image_folder(source, root)
  return root, source


# --- Names ---------------------------------------------------------------------------------------


def test_original_lookups_and_new_names():
  for res in (32, 64, 128, 256, 512):
    for name in ('I%d' % res, 'I%d_hdf5' % res):
      assert datasets.imsize_dict[name] == res and datasets.nclass_dict[name] == 1000
      assert datasets.classes_per_sheet_dict[name] == (50 if res <= 64 else 20)
    assert datasets.root_dict['I%d' % res] == 'ImageNet'
    assert datasets.root_dict['I%d_hdf5' % res] == 'ILSVRC%d.hdf5' % res
    assert datasets.dset_dict['I%d_hdf5' % res] is datasets.ILSVRC_HDF5
  assert (datasets.nclass_dict['C10'], datasets.nclass_dict['C100']) == (10, 100)
  assert datasets.root_dict['C100'] == 'cifar' and datasets.imsize_dict['C100'] == 32
  assert datasets.nclass_dict['Shapes'] == 10 and datasets.imsize_dict['Shapes'] == 32


def test_dataset_info_of_names(tmp_path):
  info = datasets.dataset_info('I128_hdf5', str(tmp_path))
  assert (info['resolution'], info['n_classes'], info['tag'], info['stats_name'],
          info['classes_per_sheet']) == (128, 1000, 'I128_hdf5', 'I128', 20)
  # The original's dataset.strip('_hdf5') strips characters: I256_hdf5 happened to survive.
  assert datasets.dataset_info('I256_hdf5')['stats_name'] == 'I256'
  assert datasets.dataset_info('I64')['stats_name'] == 'I64'
  assert datasets.dataset_info('C10')['tag'] == 'C10'
  shapes = datasets.dataset_info('Shapes')
  assert (shapes['resolution'], shapes['tag'], shapes['stats_name']) == (32, 'Shapes32', 'Shapes32')
  assert len(shapes['class_names']) == 10 == shapes['n_classes']
  assert datasets.dataset_info('Shapes', resolution=64)['tag'] == 'Shapes64'
  with pytest.raises(errors.UserError, match='128 px'):
    datasets.dataset_info('I128', resolution=64)
  with pytest.raises(errors.UserError, match='unknown --dataset'):
    datasets.dataset_info('I100', str(tmp_path))


def test_dataset_info_of_paths(shapes_folder, tmp_path):
  root, _ = shapes_folder
  info = datasets.dataset_info(root, resolution=48)
  assert info['kind'] == 'folder' and info['n_classes'] == 10 and info['resolution'] == 48
  assert info['tag'] == info['stats_name'] == 'shapes_folder48'  # filesystem-safe
  assert info['class_names'] == sorted(os.listdir(root))
  # Relative to data_root as well.
  relative = datasets.dataset_info('shapes folder', os.path.dirname(root), 48)
  assert relative['path'] == root
  with pytest.raises(errors.UserError, match='--resolution'):
    datasets.dataset_info(root)


# --- Shapes --------------------------------------------------------------------------------------


def test_shapes_are_deterministic_balanced_and_in_range():
  a, b = datasets.Shapes(40, num_images=30), datasets.Shapes(40, num_images=30)
  other = datasets.Shapes(40, num_images=30, seed=1)
  for i in range(30):
    x, y = a[i]
    assert x.shape == (3, 40, 40) and x.dtype == torch.float32 and y == i % 10
    assert -1 <= x.min() and x.max() <= 1
    assert torch.equal(x, b[i][0])
    assert not torch.equal(x, other[i][0])
  assert np.bincount(datasets.Shapes(32).labels).tolist() == [1000] * 10
  kept = datasets.open_dataset('Shapes', resolution=40, load_in_mem=True)
  flipped = datasets.Shapes(40, augment=True, load_in_mem=True)
  for i in (3, 7, 3):  # kept images are the drawn ones; a flip does not change what is kept
    assert np.array_equal(kept.read(i)[0], a.read(i)[0])
    flipped[(i, (5,))]
    assert np.array_equal(flipped.read(i)[0], a.read(i)[0])
  assert sorted(kept._kept) == [3, 7]


def test_shapes_classes_are_learnable(one_thread):
  """A tiny CNN, trained for a second, tells the 10 classes apart far above chance (10%)."""
  torch.manual_seed(0)
  data = datasets.Shapes(32, num_images=2000)
  x = torch.nn.functional.avg_pool2d(torch.stack([data[i][0] for i in range(2000)]), 2)
  y = torch.as_tensor(data.labels)
  net = torch.nn.Sequential(
      torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
      torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveMaxPool2d(1),
      torch.nn.Flatten(), torch.nn.Linear(32, 10))
  optimizer = torch.optim.Adam(net.parameters(), 5e-3)
  for _ in range(300):
    i = torch.randint(0, 1500, (64,))
    loss = torch.nn.functional.cross_entropy(net(x[i]), y[i])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
  with torch.no_grad():
    accuracy = (net(x[1500:]).argmax(1) == y[1500:]).float().mean().item()
  assert accuracy > 0.7


# --- Folders, HDF5, round trips ------------------------------------------------------------------


def test_folder_loader_matches_torchvision_reference(tmp_path):
  """Long-edge centre crop + bilinear resize + [-1, 1], as the original's transforms do."""
  rng = np.random.default_rng(0)
  sizes = [(50, 30), (31, 70), (64, 64), (45, 44)]  # (width, height)
  for i, (w, h) in enumerate(sizes):
    os.makedirs(tmp_path / ('c%d' % (i % 2)), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        tmp_path / ('c%d' % (i % 2)) / ('%d.png' % i))
  data = datasets.open_dataset(str(tmp_path), resolution=24)
  for index in range(len(data)):
    path = data.path(index)
    img = Image.open(path).convert('RGB')
    reference = T.Compose([T.CenterCrop(min(img.size)), T.Resize(24), T.ToTensor(),
                           T.Normalize([0.5] * 3, [0.5] * 3)])(img)
    x, y = data[index]
    assert torch.equal(x, reference)
    assert y == int(os.path.basename(os.path.dirname(path))[1])
  assert os.path.exists(tmp_path / '.biggan_index_24.npz')  # next to the data, not in cwd


def test_round_trip_folder_make_hdf5_loader(shapes_folder, tmp_path):
  root, source = shapes_folder
  out = str(tmp_path / 'shapes.hdf5')
  assert make_hdf5.main(['--dataset', root, '--resolution', '32', '--out', out, '--num_workers',
                         '0', '--batch_size', '16', '--chunk_size', '25']) == out
  assert sorted(os.listdir(tmp_path)) == ['shapes.hdf5']  # no temporary left behind
  with h5py.File(out, 'r') as f:
    assert f['imgs'].dtype == np.uint8 and f['imgs'].shape == (60, 3, 32, 32)
    assert f['imgs'].chunks == (25, 3, 32, 32) and f['labels'].dtype == np.int64
    assert f.attrs['resolution'] == 32 and f.attrs['n_classes'] == 10
    assert list(f.attrs['class_names']) == sorted(source.class_names)
    assert f.attrs['crop'] == 'center_long_edge' and f.attrs['skipped'] == 0
    images, labels = f['imgs'][:], f['labels'][:]
  # Pixels are the Shapes pixels exactly (PNG is lossless), labels the folder's classes.
  folder = datasets.open_dataset(root, resolution=32)
  for i in range(len(folder)):
    index = int(os.path.splitext(os.path.basename(folder.path(i)))[0])
    assert np.array_equal(images[i], source.read(index)[0])
    assert folder.class_names[labels[i]] == source.class_names[source.labels[index]]
  info = datasets.dataset_info(out)
  assert (info['n_classes'], info['resolution'], info['stats_name']) == (10, 32, 'shapes_folder32')
  common = dict(batch_size=8, num_workers=0, shuffle=True, seed=3)
  from_folder = batches(datasets.get_data_loaders(root, resolution=32, **common)[0])
  from_hdf5 = batches(datasets.get_data_loaders(out, **common)[0])
  assert_same_batches(from_folder, from_hdf5)
  assert len(from_hdf5) == 7 and from_hdf5[0][0].dtype == torch.float32


def test_original_layout_hdf5_loads(tmp_path):
  """A file as the original make_hdf5.py wrote it: no attributes, chunks of 500 along N."""
  rng = np.random.default_rng(1)
  imgs = rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)
  labels = rng.integers(0, 7, 40).astype(np.int64)
  with h5py.File(tmp_path / 'ILSVRC32.hdf5', 'w') as f:
    f.create_dataset('imgs', data=imgs, dtype='uint8', maxshape=(40, 3, 32, 32),
                     chunks=(40, 3, 32, 32))
    f.create_dataset('labels', data=labels, dtype='int64', maxshape=(40,), chunks=(40,))
  loader = datasets.get_data_loaders('I32_hdf5', str(tmp_path), batch_size=10, num_workers=0,
                                     shuffle=False, drop_last=False)[0]
  x, y = map(torch.cat, zip(*batches(loader)))
  expected = ((imgs.astype(np.float32) / 255) - 0.5) * 2
  assert np.array_equal(x.numpy(), expected) and np.array_equal(y.numpy(), labels)
  info = datasets.dataset_info(str(tmp_path / 'ILSVRC32.hdf5'))
  assert (info['tag'], info['n_classes'], info['class_names']) == ('ILSVRC32', 7, None)
  assert labels.max() == 6


def test_hdf5_workers_memory_and_augment_agree(shapes_folder, tmp_path):
  """Lazy (2 workers, each its own handle), lazy in-process and in-memory give the same batches,
  augmented flips included: draws are seeded per item, not per worker."""
  root, _ = shapes_folder
  out = str(tmp_path / 's.hdf5')
  make_hdf5.main(['--dataset', root, '--resolution', '32', '--out', out, '--num_workers', '0'])
  common = dict(batch_size=8, shuffle=True, augment=True, seed=5)
  runs = [batches(datasets.get_data_loaders(out, num_workers=w, load_in_mem=m, **common)[0])
          for w, m in [(0, False), (2, False), (0, True)]]
  assert_same_batches(runs[0], runs[1])
  assert_same_batches(runs[0], runs[2])
  plain = datasets.ILSVRC_HDF5(out)
  order = datasets.EpochSampler(plain, 8, seed=5).order(0)
  flipped = 0
  for position, (x, y) in enumerate(zip(*map(torch.cat, zip(*runs[0])))):
    reference = plain[int(order[position])][0]
    assert torch.equal(x, reference) or torch.equal(x, reference.flip(-1))
    flipped += not torch.equal(x, reference)
  assert 10 < flipped < 46  # about half of 56


def reference_pixels(path, resolution):
  """uint8 3 x res x res by PIL alone: torchvision's centre crop of the short side, then PIL's
  bilinear resize (what the original's CenterCrop + Resize did to PIL images)."""
  img = Image.open(path).convert('RGB')
  img = T.CenterCrop(min(img.size))(img)
  if img.size[0] != resolution:
    img = img.resize((resolution, resolution), Image.BILINEAR)
  return np.asarray(img).transpose(2, 0, 1)


def test_imagenet_layout_and_its_hdf5_load(tmp_path):
  """The original layout: data_root/ImageNet/<wnid>/*.JPEG for --dataset I32, and
  data_root/ILSVRC32.hdf5 (written by make_hdf5 --dataset I32) for I32_hdf5."""
  rng = np.random.default_rng(4)
  sizes = [(40, 30), (30, 52), (32, 32), (75, 64), (20, 24), (33, 35)]
  wnids = ['n01440764', 'n01443537', 'n01484850']
  for i, (w, h) in enumerate(sizes):
    folder = tmp_path / 'ImageNet' / wnids[i % 3]
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        folder / ('%s_%d.JPEG' % (wnids[i % 3], i)), quality=90)
  info = datasets.dataset_info('I32', str(tmp_path))
  assert (info['kind'], info['n_classes'], info['tag'], info['stats_name']) == (
      'folder', 1000, 'I32', 'I32')
  assert info['class_names'] == wnids
  common = dict(batch_size=2, num_workers=0, shuffle=False, drop_last=False)
  folder_batches = batches(datasets.get_data_loaders('I32', str(tmp_path), **common)[0])
  x, y = map(torch.cat, zip(*folder_batches))
  data = datasets.open_dataset('I32', str(tmp_path))
  assert x.shape == (6, 3, 32, 32) and y.tolist() == [0, 0, 1, 1, 2, 2]
  for i in range(6):
    assert data.path(i).endswith('.JPEG')
    assert torch.equal(x[i], datasets.to_float(reference_pixels(data.path(i), 32)))
  out = make_hdf5.main(['--dataset', 'I32', '--data_root', str(tmp_path), '--num_workers', '0'])
  assert out == os.path.join(str(tmp_path), 'ILSVRC32.hdf5')
  info = datasets.dataset_info('I32_hdf5', str(tmp_path))
  assert (info['kind'], info['n_classes'], info['stats_name'], info['class_names']) == (
      'hdf5', 1000, 'I32', wnids)
  assert_same_batches(
      folder_batches, batches(datasets.get_data_loaders('I32_hdf5', str(tmp_path), **common)[0]))



def test_index_cache_sees_images_in_nested_subfolders(tmp_path, monkeypatch):
  def add(relative, seed):
    path = tmp_path / relative
    os.makedirs(path.parent, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
        path)
  add('a/1.png', 0)
  add('a/sub/2.png', 1)
  add('b/3.png', 2)

  def age_folders():  # mtimes far from now, so a change is visible at any clock resolution
    for folder, dirs, _ in os.walk(tmp_path):
      os.utime(folder, ns=(10 ** 18, 10 ** 18))

  def files():
    data = datasets.open_dataset(str(tmp_path), resolution=8)
    return sorted(os.path.relpath(data.path(i), tmp_path) for i in range(len(data)))
  age_folders()
  assert files() == ['a/1.png', 'a/sub/2.png', 'b/3.png']
  real, calls = datasets._list_images, []
  monkeypatch.setattr(datasets, '_list_images', lambda *a: calls.append(a) or real(*a))
  assert files() == ['a/1.png', 'a/sub/2.png', 'b/3.png'] and calls == []  # from the cache
  add('a/sub/new.png', 3)  # only a/sub changes
  assert files() == ['a/1.png', 'a/sub/2.png', 'a/sub/new.png', 'b/3.png'] and calls
  age_folders()
  files()
  calls.clear()
  add('b/x/y/deep.png', 4)  # two new levels: b changes
  assert 'b/x/y/deep.png' in files() and calls
  age_folders()
  files()
  calls.clear()
  os.remove(tmp_path / 'b/x/y/deep.png')  # only b/x/y changes
  add('b/x/y/other.png', 5)
  assert files() == ['a/1.png', 'a/sub/2.png', 'a/sub/new.png', 'b/3.png', 'b/x/y/other.png']
  assert calls


def test_folder_augment_crops_along_the_long_edge(tmp_path):
  os.makedirs(tmp_path / 'a')
  wide = np.random.default_rng(2).integers(0, 256, (16, 40, 3), dtype=np.uint8)  # h 16, w 40
  Image.fromarray(wide).save(tmp_path / 'a' / 'wide.png')
  data = datasets.open_dataset(str(tmp_path), resolution=16, augment=True)
  crops = [datasets.to_float(wide[:, left:left + 16].transpose(2, 0, 1)) for left in range(25)]
  seen = set()
  for draw in range(60):
    x, _ = data[(0, (0, draw))]
    matches = [i for i, c in enumerate(crops) if torch.equal(x, c) or torch.equal(x, c.flip(-1))]
    assert len(matches) == 1
    seen.add(matches[0])
  assert len(seen) > 10


# --- Samplers ------------------------------------------------------------------------------------


def test_multiepoch_sampler_restarts_exactly_without_the_original_defects():
  data = range(50)
  full = list(datasets.MultiEpochSampler(data, 3, batch_size=8))
  assert len(full) == 144  # 150 samples cut to full batches of 8
  assert np.bincount(full, minlength=50).max() == 3  # three epochs, not nine
  for k in (1, 6, 7, 17):
    tail = datasets.MultiEpochSampler(data, 3, start_itr=k, batch_size=8)
    assert list(tail) == full[8 * k:] and len(tail) == 144 - 8 * k
  finished = datasets.MultiEpochSampler(data, 3, start_itr=40, batch_size=8)
  assert len(finished) == 0 and list(finished) == []
  sampler = datasets.MultiEpochSampler(data, 3, batch_size=8)
  assert [sampler.epoch_of(i) for i in (0, 6, 7, 12, 13)] == [0, 0, 1, 1, 2]
  assert sorted(full[:50]) == list(range(50))  # epoch 0 is a permutation
  sampler.draw_keys = True  # augmentation is seeded by (seed, epoch, index)
  assert list(sampler) == [(index, (0, k // 50)) for k, index in enumerate(full)]


def test_epoch_sampler_passes_and_resume():
  data = range(30)
  sampler = datasets.EpochSampler(data, 4, seed=1)
  assert sampler.batches_per_epoch == 7 and len(sampler) == 28
  passes = [list(sampler) for _ in range(3)]
  assert all(len(p) == 28 for p in passes) and passes[0] != passes[1]
  stream = sum(passes, [])
  for k in (0, 3, 7, 9):
    resumed = datasets.EpochSampler(data, 4, seed=1, start_itr=k)
    assert resumed.epoch == k // 7 and len(resumed) == 28 - 4 * (k % 7)
    rest = []
    while len(rest) < len(stream) - 4 * k:
      rest += list(resumed)
    assert rest == stream[4 * k:]
  keep = datasets.EpochSampler(data, 4, drop_last=False, shuffle=False)
  assert keep.batches_per_epoch == 8 and list(keep) == list(range(30))
  keep.set_epoch(5, start_batch=7)
  assert list(keep) == [28, 29] and keep.epoch == 6


def test_order_depends_on_seed_not_on_global_rng():
  torch.manual_seed(1)
  first = list(datasets.MultiEpochSampler(range(100), 2, batch_size=10, seed=0))
  torch.manual_seed(2)
  torch.rand(10)
  assert list(datasets.MultiEpochSampler(range(100), 2, batch_size=10, seed=0)) == first
  assert list(datasets.MultiEpochSampler(range(100), 2, batch_size=10, seed=1)) != first


def test_ranks_get_disjoint_equal_shards():
  for n in (40, 41):
    shards = [datasets.EpochSampler(range(n), 4, rank=r, world_size=2, seed=3) for r in (0, 1)]
    a, b = map(list, shards)
    assert len(a) == len(b) == 20 and not set(a) & set(b)
    if n == 40:
      assert sorted(a + b) == list(range(40))
    streams = [list(datasets.MultiEpochSampler(range(n), 2, batch_size=4, rank=r, world_size=2))
               for r in (0, 1)]
    assert len(streams[0]) == len(streams[1]) == 40
    assert not set(streams[0][:20]) & set(streams[1][:20])


def _rank_worker(rank, init_file, out_dir):
  dist.init_process_group('gloo', init_method='file://' + init_file, rank=rank, world_size=2)
  sampler = datasets.MultiEpochSampler(range(30), 1, batch_size=5)
  result = [sampler.rank, sampler.world_size] + list(sampler)
  np.save(os.path.join(out_dir, '%d.npy' % rank), result)
  dist.destroy_process_group()


def test_ranks_come_from_the_process_group():
  with tempfile.TemporaryDirectory() as out_dir:
    mp.start_processes(_rank_worker, args=(os.path.join(out_dir, 'init'), out_dir), nprocs=2,
                       start_method='fork')
    results = [np.load(os.path.join(out_dir, '%d.npy' % r)).tolist() for r in (0, 1)]
  assert [r[:2] for r in results] == [[0, 2], [1, 2]]
  assert sorted(results[0][2:] + results[1][2:]) == list(range(30))


def test_loader_resumes_exactly(tmp_path):
  """Shapes with augmentation: the loader from start_itr=k yields the uninterrupted batches."""
  common = dict(batch_size=6, num_workers=0, augment=True, seed=2, use_multiepoch_sampler=True,
                num_epochs=1)
  full = batches(datasets.get_data_loaders('Shapes', **common)[0], 7)
  resumed = batches(datasets.get_data_loaders('Shapes', start_itr=4, **common)[0], 3)
  assert_same_batches(full[4:], resumed)
  # Epoch mode across an epoch boundary, on a small HDF5 file.
  out = str(tmp_path / 'tiny.hdf5')
  tiny = datasets.Shapes(16, num_images=26)
  tiny.info = datasets.dataset_info('Shapes', resolution=16)
  assert make_hdf5.write_hdf5(tiny, out, num_workers=0) == (26, 0)
  common = dict(batch_size=4, num_workers=0, shuffle=True, augment=True, seed=2, num_extra=1)
  loader = datasets.get_data_loaders(out, **common)[0]
  stream = batches(loader) + batches(loader) + batches(loader)
  assert len(stream) == 18 and loader.sampler.epoch_of(13) == 2
  loader = datasets.get_data_loaders(out, start_itr=9, **common)[0]
  assert_same_batches(stream[9:], batches(loader) + batches(loader))
