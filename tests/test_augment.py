"""augment.py and LeCam: every augmentation op (shape, range, per-image independence, gradients,
p = 0, seeds) against float64 references written here; ADA's p controller on a synthetic signal
and on 2 gloo ranks; LeCam's formula and anchors; the training step applying them to everything D
sees; bit-exact resume (stop and SIGKILL) with all of them on, and --AC_weight."""
import os
import signal

import numpy as np
import pytest
import torch
import torch.distributed as dist

import augment
import BigGAN
import checkpoints
import losses
import sampling
import train
import train_fns
from conftest import fork_ranks, make_config
from errors import UserError
from test_train import argv, assert_same_run, experiment, run_with_signal

DIFF_OPS = {'brightness': augment.brightness, 'saturation': augment.saturation,
            'contrast': augment.contrast, 'translation': augment.translation,
            'cutout': augment.cutout}
ALL_OPS = list(DIFF_OPS) + ['ada_' + name for name in augment.ADA_OPS]
# Ops whose output is a convex combination of input pixels (or zeros for the two DiffAugment ones).
RANGE_KEEPING = {'translation', 'cutout'} | {'ada_' + n for n in augment.ADA_GEOMETRIC}


def apply(name, x, seed=0, p=1.0):
  gen = torch.Generator().manual_seed(seed)
  if name in DIFF_OPS:
    return DIFF_OPS[name](x, gen)
  return augment.ada_augment(x, p, gen, ops=(name[len('ada_'):],))


def images(n=8, size=16, seed=0, dtype=torch.float32):
  return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed),
                    dtype=dtype) * 2 - 1


# ---------------------------------------------------------------------------------------------
# Every op
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('name', ALL_OPS)
def test_every_op_shape_range_independence_gradient_and_seed(name):
  x = images()
  out = apply(name, x)
  assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
  if name in RANGE_KEEPING:
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    assert lo - 1e-5 <= float(out.min()) and float(out.max()) <= hi + 1e-5
  # Per image: one image repeated gets several different augmentations, and an image's result
  # does not depend on the other images of its batch.
  same = apply(name, x[:1].repeat(16, 1, 1, 1))
  assert len({tuple(o.flatten().tolist()) for o in same}) > 1
  other = x.clone()
  other[1:] = images(seed=5)[1:]
  assert torch.equal(apply(name, other)[0], out[0])
  # Seeds: the same seed repeats the augmentation, another one does not.
  assert torch.equal(apply(name, x), out)
  assert not torch.equal(apply(name, x, seed=1), out)
  # Gradients reach the input and are right: every op is affine in the pixels for fixed draws,
  # so <w, op(x + d) - op(x)> is the exact derivative along d.
  x64 = images(2, 8, dtype=torch.float64).requires_grad_(True)
  w = images(2, 8, seed=6, dtype=torch.float64)
  grad, = torch.autograd.grad((apply(name, x64) * w).sum(), x64)
  assert grad.abs().sum() > 0
  for seed in (7, 8):
    d = images(2, 8, seed=seed, dtype=torch.float64)
    with torch.no_grad():
      change = ((apply(name, x64 + d) - apply(name, x64)) * w).sum()
    assert float((grad * d).sum()) == pytest.approx(float(change), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize('name', augment.ADA_OPS)
def test_ada_ops_at_probability_zero_return_the_input_itself(name):
  x = images()
  assert augment.ada_augment(x, 0.0, torch.Generator(), ops=(name,)) is x
  assert augment.diff_augment(x, (), torch.Generator()) is x


def test_images_without_a_drawn_op_come_back_bit_for_bit():
  x = images(64)
  out = augment.ada_augment(x, 0.1, torch.Generator().manual_seed(3))
  gen = torch.Generator().manual_seed(3)
  inv, colour = augment.geometric_matrix(x, gen, 0.1), augment.colour_matrix(x, gen, 0.1)
  untouched = [i for i in range(64) if torch.equal(inv[i], torch.eye(3))
               and torch.equal(colour[i], torch.eye(4))]
  assert 10 < len(untouched) < 64
  for i in range(64):
    assert torch.equal(out[i], x[i]) == (i in untouched), i


# ---------------------------------------------------------------------------------------------
# DiffAugment ops against their definitions
# ---------------------------------------------------------------------------------------------


def shifted(x, dy, dx):
  """x moved by (dy, dx) whole pixels, zeros coming in (float64 numpy)."""
  out = np.zeros_like(x)
  h, w = x.shape[-2:]
  out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
      x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
  return out


def test_diffaugment_ops_are_their_definitions():
  x = images(32).double()
  xn = x.numpy()
  out = {name: apply(name, x).numpy() for name in DIFF_OPS}
  for i in range(32):
    shift = out['brightness'][i] - xn[i]
    assert np.allclose(shift, shift.flat[0]) and -0.5 <= shift.flat[0] < 0.5
    for name, axes, low in [('saturation', (0,), 0.0), ('contrast', (0, 1, 2), 0.5)]:
      mean = xn[i].mean(axes, keepdims=True)
      np.testing.assert_allclose(out[name][i].mean(axes, keepdims=True), mean, atol=1e-12)
      factor = (out[name][i] - mean).flat[0] / (xn[i] - mean).flat[0]
      np.testing.assert_allclose(out[name][i] - mean, factor * (xn[i] - mean), atol=1e-12)
      assert low <= factor < low + (2.0 if name == 'saturation' else 1.0)
    moves = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
             if np.array_equal(out['translation'][i], shifted(xn[i], dy, dx))]
    assert len(moves) == 1  # a shift by at most 16/8 = 2 pixels
    holes = out['cutout'][i] != xn[i]
    assert (out['cutout'][i][holes] == 0).all() and (holes == holes[:1]).all()
    rows, cols = np.nonzero(holes[0].any(1))[0], np.nonzero(holes[0].any(0))[0]
    assert holes[0].sum() == len(rows) * len(cols)  # one box ...
    assert np.ptp(rows) == len(rows) - 1 and np.ptp(cols) == len(cols) - 1
    assert 4 <= len(rows) <= 8 and 4 <= len(cols) <= 8  # ... of 8 x 8, clipped by the border
  assert augment.parse_policy(' translation, color,cutout') == ('translation', 'color', 'cutout')
  with pytest.raises(UserError, match='unknown op colour'):
    augment.parse_policy('translation,colour')


# ---------------------------------------------------------------------------------------------
# ADA's pipeline against a float64 resampler and its distributions
# ---------------------------------------------------------------------------------------------


def resample(x, inv):
  """Bilinear resampling of x (N, C, H, W) at inv @ (u, v, 1) for each output pixel centre
  (pixel units from the image centre), borders reflected about the outer pixel edges and
  clamped to the outer pixel centres (float64 numpy)."""
  n, c, h, w = x.shape
  v, u = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing='ij')
  out = np.empty_like(x)
  for i in range(n):
    src = np.einsum('ij,jhw->ihw', inv[i], np.stack([u, v, np.ones_like(u)]))
    coords = []
    for value, size in ((src[1] + (h - 1) / 2, h), (src[0] + (w - 1) / 2, w)):
      value = np.abs(np.mod(value + 0.5, 2 * size)) - 0.5  # reflect about -0.5 and size - 0.5
      value = np.where(value > size - 0.5, 2 * size - 1 - value, value)
      coords.append(np.clip(value, 0, size - 1))
    y, xx = coords
    y0, x0 = np.floor(y).astype(int), np.floor(xx).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = y - y0, xx - x0
    img = x[i]
    out[i] = (img[:, y0, x0] * (1 - fy) * (1 - fx) + img[:, y0, x1] * (1 - fy) * fx
              + img[:, y1, x0] * fy * (1 - fx) + img[:, y1, x1] * fy * fx)
  return out


@pytest.mark.parametrize('name', augment.ADA_GEOMETRIC)
def test_ada_geometric_ops_resample_as_their_matrix_says(name):
  x = images(6).double()
  out = augment.ada_augment(x, 1.0, torch.Generator().manual_seed(4), ops=(name,))
  inv = augment.geometric_matrix(x, torch.Generator().manual_seed(4), 1.0, ops=(name,))
  np.testing.assert_allclose(out.numpy(), resample(x.numpy(), inv.numpy()), atol=1e-9)


def test_ada_geometric_matrices_have_the_papers_distributions():
  x = torch.zeros(4000, 3, 16, 16, dtype=torch.float64)

  def draw(name, p=1.0):
    return augment.geometric_matrix(x, torch.Generator().manual_seed(7), p, ops=(name,)).numpy()
  eye = np.eye(3)
  m = draw('xflip')
  assert set(np.round(m[:, 0, 0], 9)) == {-1.0, 1.0} and abs((m[:, 0, 0] < 0).mean() - 0.5) < 0.03
  assert np.allclose(m[:, 1:], eye[1:]) and np.allclose(m[:, 0, 1:], 0)
  m = draw('rotate90')
  k = np.round(np.arctan2(m[:, 1, 0], m[:, 0, 0]) / (np.pi / 2)) % 4
  np.testing.assert_allclose(m[:, 0, 0], np.cos(-k * np.pi / 2), atol=1e-12)
  assert all(abs((k == i).mean() - 0.25) < 0.03 for i in range(4))
  m = draw('xint')
  shifts = m[:, :2, 2]
  assert np.array_equal(shifts, np.round(shifts)) and np.abs(shifts).max() == 2  # 16 / 8
  assert np.allclose(m[:, :2, :2], eye[:2, :2])
  for name, sx, sy in [('scale', 1, 1), ('aniso', 1, -1)]:
    m = draw(name)
    log_s = -np.log2(m[:, 0, 0])  # inv holds 1 / s
    assert abs(log_s.std() - 0.2) < 0.01 and abs(log_s.mean()) < 0.01
    np.testing.assert_allclose(np.log2(m[:, 1, 1]), -sy * log_s, atol=1e-9)
  m = draw('xfrac')
  assert abs(m[:, :2, 2].std() / 16 - 0.125) < 0.005 and np.allclose(m[:, :2, :2], eye[:2, :2])
  for p in (1.0, 0.4):
    m = draw('rotate', p)
    np.testing.assert_allclose(np.einsum('bij,bkj->bik', m[:, :2, :2], m[:, :2, :2]),
                               np.broadcast_to(eye[:2, :2], (4000, 2, 2)), atol=1e-12)
    rotated = ~np.all(np.isclose(m, eye), axis=(1, 2))
    assert abs(rotated.mean() - p) < 0.03  # 1 - (1 - p_rot)^2 = p
  angles = np.arctan2(m[rotated, 1, 0], m[rotated, 0, 0])
  assert abs(angles.mean()) < 0.15 and abs(angles.std() - np.pi / np.sqrt(3)) < 0.15


def test_ada_colour_ops_apply_their_matrices_with_the_papers_distributions():
  x = images(4000, 2).double()
  luma = np.ones(3) / np.sqrt(3)

  def draw(name):
    gen = torch.Generator().manual_seed(8)
    out = augment.ada_augment(x, 1.0, gen, ops=(name,)).numpy()
    gen = torch.Generator().manual_seed(8)
    augment.geometric_matrix(x, gen, 1.0, ops=(name,))  # the draws that come first
    m = augment.colour_matrix(x, gen, 1.0, ops=(name,)).numpy()
    expected = np.einsum('bij,bjhw->bihw', m[:, :3, :3], x.numpy()) + m[:, :3, 3, None, None]
    np.testing.assert_allclose(out, expected, atol=1e-12)
    return m
  m = draw('brightness')
  assert np.allclose(m[:, :3, :3], np.eye(3)) and np.allclose(m[:, :3, 3], m[:, :1, 3])
  assert abs(m[:, 0, 3].std() - 0.2) < 0.01
  m = draw('contrast')
  assert abs(np.log2(m[:, 0, 0]).std() - 0.5) < 0.02
  assert np.allclose(m[:, :3, :3], m[:, :1, :1] * np.eye(3))
  m = draw('lumaflip')[:, :3, :3]
  flipped = ~np.all(np.isclose(m, np.eye(3)), axis=(1, 2))
  assert abs(flipped.mean() - 0.5) < 0.03
  np.testing.assert_allclose(m[flipped], np.broadcast_to(np.eye(3) - 2 * np.outer(luma, luma),
                                                         m[flipped].shape), atol=1e-12)
  for name in ('hue', 'saturation'):
    m = draw(name)[:, :3, :3]
    np.testing.assert_allclose(m @ luma, np.broadcast_to(luma, (4000, 3)), atol=1e-12)  # grey stays
  grey_free = np.array([1.0, -1.0, 0.0]) / np.sqrt(2)
  hue = draw('hue')[:, :3, :3]
  np.testing.assert_allclose(np.einsum('bij,bkj->bik', hue, hue),
                             np.broadcast_to(np.eye(3), (4000, 3, 3)), atol=1e-12)
  cos = hue @ grey_free @ grey_free
  assert abs(cos.mean()) < 0.05  # angle uniform in (-pi, pi)
  s = np.linalg.norm(draw('saturation')[:, :3, :3] @ grey_free, axis=1)
  assert abs(np.log2(s).std() - 1.0) < 0.04


# ---------------------------------------------------------------------------------------------
# ADA's p
# ---------------------------------------------------------------------------------------------


def test_ada_p_follows_the_sign_of_r_t_minus_target_at_the_configured_speed():
  ada = augment.AdaController(target=0.6, p=0.5, interval=4, kimg=0.5)
  expected = 0.5
  for itr in range(1, 61):
    positive = 14 if itr <= 20 else 8  # r_t = 0.75 > 0.6, then r_t = 0.0 < 0.6
    ada.observe(torch.tensor([1.0] * positive + [-1.0] * (16 - positive)).view(16, 1))
    r_t = ada.update(itr)
    if itr % 4:
      assert r_t is None
      continue
    assert r_t == pytest.approx(0.75 if itr <= 20 else 0.0)
    expected = min(max(expected + (1 if r_t > 0.6 else -1) * 64 / 500.0, 0.0), 1.0)
    assert ada.p == pytest.approx(expected, abs=1e-12)
  assert ada.p == 0.0  # clipped both ways: up to 1 after 4 steps, down to 0 after 8
  fixed = augment.AdaController(target=0.0, p=0.3)
  fixed.observe(torch.ones(8, 1))
  assert fixed.update(4) is None and fixed.p == 0.3


def _ada_rank(rank, store, out):
  dist.init_process_group('gloo', init_method='file://' + store, rank=rank, world_size=2)
  try:
    ada = augment.AdaController(target=0.6, p=0.5, interval=2, kimg=0.1)
    for itr in (1, 2):  # rank 0 sees r = 1, rank 1 sees r = -0.5: 0.25 over both
      ada.observe(torch.ones(8) if rank == 0 else torch.tensor([1.0] * 2 + [-1.0] * 6))
      ada.update(itr)
    torch.save({'p': ada.p, 'r_t': ada.r_t}, '%s.%d' % (out, rank))
  finally:
    dist.destroy_process_group()


def test_ada_p_is_the_same_on_two_gloo_ranks(tmp_path):
  fork_ranks(_ada_rank, (str(tmp_path / 'store'), str(tmp_path / 'out')))
  results = [torch.load('%s.%d' % (tmp_path / 'out', r)) for r in range(2)]
  assert results[0] == results[1]
  assert results[0]['r_t'] == pytest.approx(0.25)  # (16 - 8) / 32 over both ranks
  assert results[0]['p'] == pytest.approx(0.5 - 32 / 100.0)  # down, by 32 images of 100


# ---------------------------------------------------------------------------------------------
# LeCam
# ---------------------------------------------------------------------------------------------


def test_lecam_term_and_anchors():
  lecam = losses.LeCam(decay=0.9)
  real1, fake1 = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([-1.0, 0.5, 0.0])
  real2, fake2 = torch.tensor([0.5, 0.5]), torch.tensor([-2.0, 1.5])

  def term(real, fake, a_real, a_fake):
    return (sum(max(r - a_fake, 0.0) ** 2 for r in real) / len(real)
            + sum(max(a_real - f, 0.0) ** 2 for f in fake) / len(fake))
  # First update: the bias-corrected anchors are the batch means.
  a_real, a_fake = 2.5 / 3, -0.5 / 3
  assert float(lecam(real1, fake1)) == pytest.approx(term(real1.tolist(), fake1.tolist(), a_real,
                                                          a_fake), rel=1e-6)
  # Second: EMA 0.9 * (0.1 m1) + 0.1 m2, divided by 1 - 0.9^2.
  ema_real, ema_fake = 0.9 * 0.1 * a_real + 0.1 * 0.5, 0.9 * 0.1 * a_fake + 0.1 * -0.25
  assert lecam.ema.tolist() == pytest.approx([0.1 * a_real, 0.1 * a_fake], rel=1e-6)
  value = float(lecam(real2, fake2))
  assert lecam.ema.tolist() == pytest.approx([ema_real, ema_fake], rel=1e-6)
  a_real, a_fake = ema_real / 0.19, ema_fake / 0.19
  assert [float(a) for a in lecam.anchors()] == pytest.approx([a_real, a_fake], rel=1e-6)
  assert value == pytest.approx(term(real2.tolist(), fake2.tolist(), a_real, a_fake), rel=1e-6)
  assert float(losses.lecam_reg(torch.tensor([0.0]), torch.tensor([1.0]), 0.5, 0.5)) == 0.0
  copy = losses.LeCam(decay=0.9)
  copy.load_state_dict(lecam.state_dict())
  assert torch.equal(copy.ema, lecam.ema) and copy.updates == 2


# ---------------------------------------------------------------------------------------------
# In the training step
# ---------------------------------------------------------------------------------------------

STEP = ('--G_ch 4 --D_ch 4 --G_attn 0 --D_attn 0 --dim_z 8 --batch_size 3 --num_D_steps 2 '
        '--G_shared --shared_dim 4')


def make_step(flags):
  config = make_config(STEP + ' ' + flags)
  torch.manual_seed(0)
  G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
  z_, y_ = sampling.prepare_z_y(3, G.dim_z, 10, device='cpu')
  step = train_fns.GAN_training_function(G, D, BigGAN.G_D(G, D), z_, y_, None, {'itr': 4}, config)
  seen = []  # what D's forward gets, after the augmentation's pre-hook
  D.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
  return step, D, seen


def test_the_step_augments_every_image_D_sees_and_nothing_when_off():
  x, y = images(6, 32), torch.randint(0, 10, (6,))
  plain, D, seen_plain = make_step('')
  assert getattr(D, 'small_data', None) is None and len(D._forward_pre_hooks) == 1  # the test's
  assert set(plain(x, y)) == {'G_loss', 'D_loss_real', 'D_loss_fake'}
  train, D, seen = make_step('--DiffAugment translation,color,cutout --ada_target 0.6 '
                             '--ada_p 0.5 --ada_interval 4 --ada_kimg 0.1 --LeCam 0.1')
  metrics = train(x, y)
  assert [len(s) for s in seen] == [6, 6, 3]  # two D steps (fake + real), the G step
  for step in (0, 1):  # the reals of each D step, augmented
    real = x[3 * step:3 * step + 3]
    assert not torch.equal(seen[step][3:], real)
    assert torch.equal(seen_plain[step][3:], real)
  assert metrics['ada_p'] != 0.5  # r_t over the 6 reals moved p at itr 4
  assert D.small_data.lecam.updates == 2
  assert set(D.small_data.state_dict()) == {'ada_p', 'ada_stats', 'augment_rng',
                                                'LeCam_anchors'}


def test_a_resumed_run_with_all_options_is_bit_exact_after_a_stop_and_after_sigkill(tmp_path,
                                                                                    repo_root):
  small = (' --DiffAugment translation,color,cutout --ada_target 0.6 --ada_p 0.3 --ada_kimg 0.05 '
           '--ada_interval 3 --LeCam 0.3 --AC_weight 0.5 --num_D_steps 1 --sv_log_interval 1')
  flags = small + ' --num_iters 3 --save_every 2'
  train.main(argv(tmp_path / 'a', flags))
  exp = experiment(tmp_path, small)
  assert exp.endswith('_ema_DAtranslation-color-cutout_ADA0.6_ADAp0.3_LeCam0.3_AC0.5')
  with open(tmp_path / 'a' / 'logs' / exp / 'ada_p.log') as f:
    p = [float(line.split(':')[1]) for line in f]
  assert p[:2] == [0.3, 0.3] and p[2] != 0.3  # moved at itr 3, by 12 reals / 50
  state = checkpoints.safe_load(tmp_path / 'a' / 'weights' / exp / 'state_dict_copy0.pth')
  assert state['itr'] == 2 and state['ada_stats']['count'] == 8  # mid-interval statistics
  assert set(state) >= {'ada_p', 'augment_rng', 'LeCam_anchors'}
  # Stop at 2 (the end of a run), resume to 3.
  train.main(argv(tmp_path / 'b', small + ' --num_iters 2 --save_every 2'))
  train.main(argv(tmp_path / 'b', flags + ' --resume'))
  assert_same_run(tmp_path / 'a', tmp_path / 'b', exp)
  # SIGKILL at 3, after the save at 2: resume replays 3.
  killed = run_with_signal(tmp_path / 'c', flags, 3, 'SIGKILL', repo_root)
  assert killed.returncode == -signal.SIGKILL
  train.main(argv(tmp_path / 'c', flags + ' --resume'))
  assert_same_run(tmp_path / 'a', tmp_path / 'c', exp)


def test_plot_training_gives_ada_p_its_own_panel(tmp_path):
  from logs import plot_training
  from test_logs import image, write_metric_log, write_run
  plain = write_run(str(tmp_path / 'plain'), n=100, sv_layers=(0, 0))
  with_p = write_run(str(tmp_path / 'ada'), n=100, sv_layers=(0, 0))
  write_metric_log(os.path.join(with_p, 'ada_p.log'), range(1, 101),
                   np.minimum(np.arange(100) // 4 * 0.02, 1.0))
  groups = plot_training.find_metric_logs(with_p)
  assert list(groups['augmentation']) == ['ada_p'] and 'ada_p' not in groups['losses']
  one = image(plot_training.plot_training(plain, str(tmp_path / 'plain.png')))
  two = image(plot_training.plot_training(with_p, str(tmp_path / 'ada.png')))
  assert two.shape[0] > 1.7 * one.shape[0] and two.shape[1] == one.shape[1]
