"""glow_fns.py and --model Glow in train.py and sample.py. The step: gradient accumulation gives the
whole batch's gradient (autograd in float64), clipping and warm-up; the held-out split (folder,
HDF5, CIFAR's test batch, other Shapes); test bits/dim re-derived in float64 from the
dequantisation formula; encoded real images come back at the ends of their interpolations and at
alpha 0 of a manipulation, whose direction is the brute-force difference of the class means.
train.py: held-out bits/dim fall on Shapes and on a folder; a stopped and a SIGKILLed run resume
bit-exactly without initialising actnorm; 2 gloo ranks end with one flow. sample.py: temperature
0 gives each class's mean image, encoded interpolations and manipulations through the script,
IS/FID of the samples; bad inputs are one-line errors before any work."""
import copy
import json
import math
import os
import pickle
import signal

import numpy as np
import pytest
import torch

import checkpoints
import config as configuration
import datasets
import evaluate
import Glow
import glow_fns
import inception_utils
import make_hdf5
import sample
import train
from errors import UserError
from test_Glow import perturb
from test_data_inputs import write_fake_cifar10
from test_distributed import train_ranks
from test_resume_matrix import assert_equal, outputs, run_killed

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors: threads only wait


def config_of(**overrides):
  config = {'resolution': 8, 'n_classes': 10, 'glow_levels': 2, 'glow_depth': 2,
            'glow_hidden': 8, 'batch_size': 8, 'num_G_accumulations': 1, 'amp': 'off',
            'seed': 0, 'ema': False, 'use_ema': False}
  config.update({**Glow.training_defaults, **Glow.sample_defaults})
  config.update(overrides)
  return config


def shapes(n, resolution=8, seed=0):
  data = datasets.Shapes(resolution, num_images=n, seed=seed)
  return torch.stack([data[i][0] for i in range(n)]), torch.as_tensor(data.labels[:n])


def trained_flow(config, dtype=torch.float32):
  """A flow initialised on Shapes and moved off its initial values."""
  torch.manual_seed(0)
  flow = Glow.Generator(**config).to(dtype)
  x, y = shapes(32, config['resolution'])
  with torch.no_grad():
    flow(x.to(dtype), y)
  return perturb(flow, std=0.02)


# ---------------------------------------------------------------------------------------------
# Training step
# ---------------------------------------------------------------------------------------------


def one_step(config, x, y, itr=1):
  torch.manual_seed(0)
  flow = Glow.Generator(**config).double()
  state = {'itr': itr}
  train = glow_fns.Glow_training_function(flow, None, Glow.Objective(flow), None, None, None,
                                          state, config)
  torch.manual_seed(1)
  metrics = train(x, y)
  return flow, metrics


def test_accumulated_gradient_is_the_whole_batch_gradient_and_clipping_and_warmup_apply():
  x, y = shapes(8)
  x, config = x.double(), config_of(glow_ycond=True, glow_warmup=10)
  whole, m_whole = one_step(config, x, y, itr=4)
  split, m_split = one_step({**config, 'batch_size': 4, 'num_G_accumulations': 2}, x, y, itr=4)
  # Independently: actnorm initialised on the same batch, then autograd of the mean loss over
  # the 8 images with the same dequantisation noise (the init pass draws first).
  torch.manual_seed(0)
  reference = Glow.Glow(**config).double()
  torch.manual_seed(1)
  with torch.no_grad():
    reference(x, y)
  reference.loss(x, y)['loss'].backward()
  for (name, p), q, r in zip(reference.named_parameters(), whole.parameters(),
                             split.parameters()):
    torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=name)
    torch.testing.assert_close(r.grad, p.grad, rtol=1e-9, atol=1e-12, msg=name)
  torch.testing.assert_close(m_split['bpd'], m_whole['bpd'], rtol=1e-12, atol=0)
  assert set(m_whole) == {'bpd', 'bits_y', 'lr'}
  assert m_whole['lr'] == pytest.approx(config['glow_lr'] * 0.4)  # warm-up: 4 of 10 iterations
  assert [g['lr'] for g in whole.optim.param_groups] == [m_whole['lr']]
  assert isinstance(whole.optim, torch.optim.Adamax)
  # clipping: the gradient's global norm (reported before clipping) is cut to the limit
  clipped, m_clip = one_step({**config, 'glow_grad_clip': 0.01, 'glow_optimizer': 'adam'}, x, y)
  norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in reference.parameters()]))
  torch.testing.assert_close(m_clip['grad_norm'], norm, rtol=1e-9, atol=0)
  after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in clipped.parameters()]))
  assert after.item() == pytest.approx(0.01, rel=1e-4) and isinstance(clipped.optim,
                                                                        torch.optim.Adam)
  assert clipped.optim.param_groups[0]['fused'] is None
  Glow.check_flags({'model': 'Glow', 'resolution': 32, 'n_classes': 10, 'fused_optim': True,
                    'glow_optimizer': 'adam'})
  fused = Glow.make_optimizer(clipped.parameters(), {'glow_optimizer': 'adam', 'fused_optim': True})
  assert isinstance(fused, torch.optim.Adam) and fused.param_groups[0]['fused'] is True


def test_training_step_refuses_a_short_batch():
  x, y = shapes(6)
  with pytest.raises(UserError, match='needs 8 per iteration'):
    one_step(config_of(batch_size=4, num_G_accumulations=2), x.double(), y)


# ---------------------------------------------------------------------------------------------
# Held-out data and test bits/dim
# ---------------------------------------------------------------------------------------------


def test_held_out_split_is_a_fixed_disjoint_tenth_and_other_data_have_test_images(tmp_path):
  datasets.write_image_folder(datasets.Shapes(8, num_images=50), str(tmp_path / 'folder'))
  config = config_of(dataset=str(tmp_path / 'folder'), data_root=str(tmp_path),
                     glow_test_images=1000)
  full = datasets.open_dataset(config['dataset'], config['data_root'], 8)
  train = glow_fns.training_set(full, config)
  test = glow_fns.test_set(config)
  assert len(test) == 5 and len(train) == 45
  assert set(test.indices) | set(train.indices) == set(range(50))
  assert not set(test.indices) & set(train.indices)
  assert list(glow_fns.test_set(config).indices) == list(test.indices)  # the same every time
  pixels, label = test.read(0)
  assert np.array_equal(pixels, full.read(int(test.indices[0]))[0]) and label == full.labels[
      test.indices[0]]
  # an HDF5 file of the folder: the same images, the same split
  make_hdf5.main(['--dataset', str(tmp_path / 'folder'), '--resolution', '8', '--out',
                  str(tmp_path / 'f.hdf5'), '--num_workers', '0'])
  hdf5 = glow_fns.test_set({**config, 'dataset': str(tmp_path / 'f.hdf5')})
  assert np.array_equal(hdf5.indices, test.indices)
  assert np.array_equal(hdf5.read(1)[0], test.read(1)[0])
  # CIFAR-10: its own test batch
  cifar = str(tmp_path / 'cifar' / 'cifar-10-batches-py')
  write_fake_cifar10(cifar)
  pixels = np.random.default_rng(5).integers(0, 256, (7, 3072), dtype=np.uint8)
  with open(os.path.join(cifar, 'test_batch'), 'wb') as f:
    pickle.dump({'data': pixels, 'labels': list(range(7))}, f)
  cifar_test = glow_fns.test_set({**config, 'dataset': 'C10', 'resolution': 32})
  assert len(cifar_test) == 7 and np.array_equal(cifar_test.read(6)[0],
                                                 pixels[6].reshape(3, 32, 32))
  config = config_of(dataset='Shapes', data_root=str(tmp_path), glow_test_images=20)
  shapes_test = glow_fns.test_set(config)
  assert len(shapes_test) == 20
  assert glow_fns.training_set(datasets.open_dataset('Shapes', str(tmp_path), 8), config).kind \
      == 'shapes'
  training = datasets.Shapes(8, num_images=20)
  assert all(not np.array_equal(shapes_test.read(i)[0], training.read(i)[0]) for i in range(20))


def test_test_bits_per_dim_is_the_dequantised_likelihood_with_the_same_noise_each_time():
  config = config_of(glow_ycond=True, batch_size=3, n_bits_x=5)
  flow = trained_flow(config)
  x, y = shapes(7, seed=3)
  loader = torch.utils.data.DataLoader(list(zip(x, y)), batch_size=3)
  value = glow_fns.test_bpd(flow, loader, 'cpu')
  assert glow_fns.test_bpd(flow, loader, 'cpu') == value
  # float64 re-derivation: pixels -> 5-bit bins + the same uniform noise -> v; -log p(v) in bits
  # plus log2(32) per dimension for the bin width.
  flow64 = copy.deepcopy(flow).double()
  generator = torch.Generator().manual_seed(glow_fns.HELD_OUT_SEED)
  total = 0.0
  for xb, yb in loader:
    pixels = torch.round((xb.double() + 1) * 127.5)
    noise = torch.rand(xb.shape, generator=generator).double()
    v = (torch.floor(pixels / 8) + noise) / 32 - 0.5
    _, logdet, logp = flow64.encode(v, yb)
    dims = 3 * 8 * 8
    total += (-(logdet + logp) / (dims * math.log(2)) + math.log2(32)).sum().item()
  assert value == pytest.approx(total / 7, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Real images: interpolation and manipulation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('method', ['lerp', 'slerp'])
def test_interpolation_ends_at_the_encoded_real_images(method):
  flow = trained_flow(config_of())
  x, _ = shapes(6, seed=4)
  out = glow_fns.interpolate(flow, x[:3], x[3:], num_midpoints=3, method=method)
  rows = out.view(3, 5, *x.shape[1:])
  torch.testing.assert_close(rows[:, 0], x[:3], rtol=0, atol=1e-5)
  torch.testing.assert_close(rows[:, -1], x[3:], rtol=0, atol=1e-5)
  assert (rows[:, 2] - rows[:, 0]).abs().amax((1, 2, 3)).min() > 0.05  # moves in between


def test_manipulation_direction_is_the_class_mean_difference_and_alpha_zero_is_the_image(
    tmp_path):
  folder = str(tmp_path / 'folder')
  datasets.write_image_folder(datasets.Shapes(8, num_images=40), folder)  # 4 images per class
  config = config_of(dataset=folder, data_root=str(tmp_path), encode_count=3,
                     glow_manipulate='red_circle,1', glow_alphas='-1,0,1')
  flow = trained_flow(config)
  encoding = glow_fns.Encoding(config)
  direction = encoding.direction(flow)
  # brute force: every image of each class, one at a time, float64 means
  data = datasets.open_dataset(folder, str(tmp_path), 8)
  means = []
  for label in (data.class_names.index('red_circle'), 1):
    zs = [flow(data[int(i)][0][None], dequantize=False)[0]
          for i in np.flatnonzero(data.labels == label)]
    means.append([sum(z[level][0].double() for z in zs) / len(zs) for level in range(2)])
  for d, a, b in zip(direction, *means):
    torch.testing.assert_close(d.double(), a - b, rtol=0, atol=1e-5)
  assert encoding.sheet_name() == 'manipulate_red_circle_minus_1'
  alphas = Glow.alphas(config)
  x, _ = encoding.images(3)
  out = glow_fns.manipulate(flow, x, direction, alphas).view(3, 3, *x.shape[1:])
  torch.testing.assert_close(out[:, 1], x, rtol=0, atol=1e-5)
  expected = flow.reverse([z + d for z, d in zip(flow(x, dequantize=False)[0], direction)])
  torch.testing.assert_close(out[:, 2], expected, rtol=0, atol=1e-5)
  assert (out[:, 0] - out[:, 2]).abs().max() > 0.05


# ---------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------


def test_flags_of_one_family_are_one_line_errors_for_the_other():
  base = {'model': 'BigGAN', 'resolution': 32, 'n_classes': 10, 'which_best': 'IS'}
  for extra, match in [({'glow_depth': 4}, '--glow_depth is an option of --model Glow'),
                       ({'temperature': 0.5}, '--temperature is an option of --model Glow'),
                       ({'encode': True}, '--encode is an option of --model Glow'),
                       ({'which_best': 'test_bpd'}, 'test_bpd is Glow')]:
    with pytest.raises(UserError, match=match):
      Glow.check_flags({**base, **extra})
  Glow.check_flags(base)  # defaults pass
  glow = {**base, 'model': 'Glow'}
  for extra, match in [({'truncation': 0.5}, '--truncation is not used by --model Glow'),
                       ({'accumulate_stats': True}, 'no batch norm'),
                       ({'which_best': 'FID'}, 'use --which_best test_bpd'),
                       ({'glow_B1': 1.0}, 'glow_B1 must be in'),
                       ({'glow_alphas': '0,2'}, 'in \\[-1, 1\\]'),
                       ({'glow_manipulate': 'a'}, 'two different classes'),
                       ({'glow_levels': 6}, 'not divisible'),
                       ({'fused_optim': True}, 'no fused Adamax')]:
    with pytest.raises(UserError, match=match) as e:
      Glow.check_flags({**glow, **extra})
    assert '\n' not in str(e.value)
  Glow.check_flags(glow)
  parts = Glow.name_parts({**config_of(glow_lu=True, ema=True), 'dataset_tag': 'Shapes32',
                           'num_G_accumulations': 2})
  assert '_'.join(parts) == ('Glow_Shapes32_seed0_L2_K2_hidden8_affine_LU_nbits8_bs8_acc2_'
                             'adamax_lr1.0e-03_warmup1000_ema')


# ---------------------------------------------------------------------------------------------
# train.py and sample.py
# ---------------------------------------------------------------------------------------------

FLAGS = ('--model Glow --dataset Shapes --resolution 8 --glow_levels 2 --glow_depth 2 '
         '--glow_hidden 16 --num_workers 0 --shuffle --sv_log_interval 1 --glow_test_images 64')


def argv(root, extra):
  return ('%s --base_root %s %s' % (FLAGS, root, extra)).split()


def held_out_log(root, experiment):
  with open(os.path.join(root, 'logs', experiment + '_log.jsonl')) as f:
    return [(r['itr'], r['test_bpd']) for r in map(json.loads, f)]


@pytest.mark.parametrize('data', ['Shapes', 'folder'])
def test_training_through_train_py_lowers_held_out_bits_per_dim(tmp_path, data, capsys):
  extra = ''
  if data == 'folder':  # 30 of its 300 images are held out
    datasets.write_image_folder(datasets.Shapes(8, num_images=300), str(tmp_path / 'folder'))
    extra = '--dataset %s' % (tmp_path / 'folder')
  train.main(argv(tmp_path, '--batch_size 16 --glow_lr 3e-3 --glow_warmup 10 --num_iters 60 '
                  '--test_every 10 --save_every 1000 --experiment_name exp ' + extra))
  out = capsys.readouterr().out
  assert ('folder8, 270 images' if data == 'folder' else 'Shapes8, 10000 images') in out
  log = held_out_log(tmp_path, 'exp')
  assert [itr for itr, _ in log] == [10, 20, 30, 40, 50, 60]
  assert log[-1][1] < log[0][1] - 0.5, log
  with open(tmp_path / 'logs' / 'exp' / 'bpd.log') as f:
    assert len(f.read().splitlines()) == 60
  files = set(os.listdir(tmp_path / 'weights' / 'exp'))
  assert {'G.pth', 'G_optim.pth', 'state_dict.pth', 'G_best0.pth'} <= files
  assert not [f for f in files if f.startswith('D')]  # no discriminator
  state = checkpoints.safe_load(tmp_path / 'weights' / 'exp' / 'state_dict.pth')
  assert state['best_test_bpd'] == min(bpd for _, bpd in log)


RESUME = ('--batch_size 4 --num_G_accumulations 2 --glow_ycond --glow_grad_clip 5 --glow_warmup 3 '
          '--ema --ema_start 2 --ema_decay 0.9 --use_ema --save_every 2 --test_every 2 '
          '--glow_test_images 8 --experiment_name exp')


def never_initialise(*args):
  raise AssertionError('actnorm re-initialised on resume')


def after_iteration(itr, action):
  """From now on train.py calls action(run, x) once iteration itr (no save or evaluation due
  there) is over."""
  iteration = train.iteration

  def hooked(r, x, y):
    stop = iteration(r, x, y)
    if r.state_dict['itr'] == itr:
      action(r, x)
    return stop
  train.iteration = hooked


def killed_after(itr):
  """In a forked child: SIGKILL after iteration itr; actnorm must not initialise before."""
  after_iteration(itr, lambda r, x: os.kill(os.getpid(), signal.SIGKILL))
  Glow.ActNorm._initialize = never_initialise


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """4 uninterrupted iterations (saves and evaluations at 2 and 4)."""
  root = tmp_path_factory.mktemp('trained')
  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # as the tests that compare with it (one_thread)
  try:
    train.main(argv(root, RESUME + ' --num_iters 4'))
  finally:
    torch.set_num_threads(threads)  # later modules' in-process runs match their subprocesses
  return root


def test_stopped_and_killed_runs_resume_bit_exactly_without_initialising_actnorm(
    tmp_path, trained, monkeypatch):
  root = tmp_path / 'b'
  train.main(argv(root, RESUME + ' --num_iters 1'))  # stops (saves) at iteration 1 ...
  run_killed(argv(root, RESUME + ' --num_iters 4 --resume'), killed_after, 3)  # ... dies ...
  monkeypatch.setattr(Glow.ActNorm, '_initialize', never_initialise)
  train.main(argv(root, RESUME + ' --num_iters 4 --resume'))  # ... and goes on to 4
  a, b = outputs(trained), outputs(root)
  assert sorted(a) == sorted(b)
  assert {'weights/exp/G_ema_best0.pth', 'weights/exp/G_copy1.pth', 'samples/exp/4/interp0.jpg',
          'samples/exp/4/samples0.jpg', 'logs/exp/bits_y.log', 'logs/exp/grad_norm.log'} <= set(a)
  assert [r['itr'] for r in a['logs/exp_log.jsonl']] == [2, 4]
  assert_equal(a, b, 'run')


def load_npz(path):
  with np.load(path) as f:
    return f['x'], f['y']


def sample_argv(root, extra):
  return ('--model Glow --experiment_name exp --config_from_name --base_root %s --use_ema %s'
          % (root, extra)).split()


@pytest.mark.filterwarnings('ignore:FID from 4 images')  # 4 images: the numbers are finite
def test_sample_py_temperature_encoded_interpolation_and_manipulation(trained, tmp_path,
                                                                        inception_weights):
  rng = np.random.default_rng(0)  # synthetic moments of Shapes8 for the FID
  a = rng.standard_normal((inception_utils.FEATURE_DIM, 8))
  inception_utils.save_moments(os.path.join(trained, 'data', inception_utils.moments_filename(
      'Shapes8')), rng.standard_normal(inception_utils.FEATURE_DIM), a @ a.T, 'torchvision', 8)
  results = sample.main(sample_argv(trained, '--temperature 0 --sample_npz --sample_num_npz 12 '
                                    '--sample_sheets --sample_random --sample_inception_metrics '
                                    '--num_inception_images 4 --inception_weights '
                                    + inception_weights))
  assert all(math.isfinite(v) for v in results['metrics'][:3])  # IS_mean, IS_std, FID
  x, y = load_npz(results['npz'])
  assert x.shape == (12, 3, 8, 8)
  for label in np.unique(y):  # at temperature 0 each class gives its prior's mean image
    assert (x[y == label] == x[y == label][0]).all()
  assert len({x[i].tobytes() for i in range(12)}) > 1  # the classes' priors differ
  assert os.path.exists(os.path.join(results['sheets'], 'samples0.jpg'))
  results = sample.main(sample_argv(trained, '--sample_npz --sample_num_npz 12 --sample_interps '
                                    '--encode --encode_count 2 --glow_alphas=-1,0,1 '
                                    '--glow_manipulate red_circle,blue_circle'))
  x, _ = load_npz(results['npz'])  # temperature 0.7: every sample its own
  assert len({x[i].tobytes() for i in range(12)}) == 12
  # The real images: Shapes' images in the seeded order (--seed 0)
  data = datasets.Shapes(8)
  order = np.random.RandomState(0).permutation(len(data))
  real = np.stack([data.read(int(i))[0] for i in order[:4]])
  frames, labels = load_npz(results['interp_real_npz'])
  rows = frames.reshape(2, 10, 3, 8, 8)
  assert np.array_equal(rows[:, 0], real[:2]) and np.array_equal(rows[:, -1], real[2:4])
  assert list(labels[::10]) == [int(data.labels[i]) for i in order[:2]]
  assert os.path.exists(results['interp_real']) and os.path.exists(results['interps'])
  manipulated, _ = load_npz(results['manipulate_red_circle_minus_blue_circle_npz'])
  columns = manipulated.reshape(2, 3, 3, 8, 8)
  assert np.array_equal(columns[:, 1], real[:2])  # alpha 0
  assert (columns[:, 0] != columns[:, 2]).any()
  assert results['manipulation'].endswith('manipulate_red_circle_minus_blue_circle.jpg')


def test_evaluate_py_samples_a_glow_weights_folder_at_its_temperature(trained, inception_weights):
  """With IFID the classes come in turn; at temperature 0 each class is its prior's mean image,
  the one sample.py draws; the JSON names the temperature."""
  argv = [str(trained / 'weights' / 'exp'), '--temperature', '0', '--use_ema', '--metrics', 'IS',
          '--num_images', '12', '--inception_weights', inception_weights]
  config = vars(evaluate.prepare_parser().parse_args(argv))
  config = configuration.update_config_roots(config)
  source = evaluate.open_source('SOURCE', config['source'], config, evaluate.given_flags(argv),
                                'cpu', 12, ['IS', 'IFID'])
  assert list(source.labels) == [i % 10 for i in range(12)]
  draw = source.sampler(config)
  images, labels = draw()
  more, more_labels = draw()
  assert labels.tolist() + more_labels.tolist() == [i % 10 for i in range(len(labels) * 2)]
  npz = load_npz(sample.main(sample_argv(trained, '--temperature 0 --sample_npz '
                                                  '--sample_num_npz 20'))['npz'])
  for image, label in zip(images, labels):  # the same flow, weights and temperature
    first = np.flatnonzero(npz[1] == int(label))
    if len(first):
      pixels = np.clip(np.round((image.numpy() + 1) * 127.5), 0, 255)
      assert np.abs(pixels - npz[0][first[0]]).max() <= 1
  out = evaluate.main(argv)
  assert 'Glow at temperature 0' in out['source'] and out['N'] == 12
  assert math.isfinite(out['IS_mean'])


def test_bad_inputs_are_one_line_errors_before_any_work(tmp_path, trained):
  for script, args, match in [
      (train, argv(tmp_path, '--model BigGAN'), '--glow_levels is an option of --model Glow; '
       'drop it for --model BigGAN'),
      (train, argv(tmp_path, '--glow_levels 4'), 'not divisible by 2\\^glow_levels'),
      (train, argv(tmp_path, '--which_best FID'), 'use --which_best test_bpd'),
      (sample, sample_argv(trained, '--encode --sample_npz'), '--encode encodes real images'),
      (sample, sample_argv(trained, '--glow_manipulate red_circle,green'), 'green is neither'),
      (sample, sample_argv(trained, '--sample_interps --encode --encode_images %s'
                           % (tmp_path / 'nothing')), 'unknown --dataset'),
      (sample, sample_argv(trained, '--truncation 0.5 --sample_npz'), 'use --temperature'),
      (sample, ('--experiment_name x --temperature 0.5 --dataset Shapes --sample_npz --base_root '
                '%s' % tmp_path).split(), '--temperature is an option of --model Glow')]:
    with pytest.raises(UserError, match=match) as e:
      script.main(args)
    assert '\n' not in str(e.value)
  assert not os.path.exists(tmp_path / 'weights')  # nothing was made


def record_flow(rank, out):
  """In each rank's process: the flow's weights and the batch of iteration 2 -> out.<rank>."""
  after_iteration(2, lambda r, x: torch.save({'G': r.G.state_dict(), 'x': x},
                                             '%s.%d' % (out, rank)))


def test_two_gloo_ranks_train_one_flow_from_their_own_batches(tmp_path):
  codes, messages, _ = train_ranks(tmp_path, '--model Glow --resolution 8 --glow_levels 2 '
                                   '--glow_depth 2 --glow_hidden 8 --glow_warmup 1 --num_iters 3 '
                                   '--test_every 3 --glow_test_images 8 --experiment_name exp',
                                   record_flow)
  assert codes == [0, 0], messages
  ranks = [torch.load('%s.%d' % (tmp_path / 'out', r), weights_only=True) for r in range(2)]
  assert not torch.equal(ranks[0]['x'], ranks[1]['x'])  # each its own shard
  for key, value in ranks[0]['G'].items():  # actnorm from both batches, averaged gradients
    assert torch.equal(value, ranks[1]['G'][key]), key
  assert [itr for itr, _ in held_out_log(tmp_path, 'exp')] == [3]
