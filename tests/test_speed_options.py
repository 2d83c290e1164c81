"""Speed options: G and D with folded resampling and CPU channels_last activations against the
original's op sequence (the ops alone: tests/test_layers.py), --channels_last, --amp bf16/fp16
training steps, and --compile."""
import copy
import os

import pytest
import torch
import torch.nn as nn

import BigGAN
import BigGANdeep
import layers
import sampling
import train_fns
from conftest import make_config

TINY = ('--G_ch 4 --D_ch 4 --G_shared --hier --dim_z 20 --shared_dim 8 --G_attn 16 --D_attn 16 '
        '--G_init N02 --D_init N02 --SN_eps 1e-6')


# The config keys of the original's op sequence: resampling as separate ops, NCHW activations.
ORIGINAL_OPS = {'fold_resampling': False, 'cpu_channels_last': False}


def with_original_ops(module, nets, config):
  """Copies of (G, D) built with ORIGINAL_OPS, holding the same weights and buffers."""
  with torch.random.fork_rng():  # the caller's random draws stay as they were
    copies = (module.Generator(**{**config, **ORIGINAL_OPS, 'skip_init': True}),
              module.Discriminator(**{**config, **ORIGINAL_OPS, 'skip_init': True}))
  for copy_, net in zip(copies, nets):
    copy_.to(next(net.parameters()).dtype).load_state_dict(net.state_dict())
  return copies


def forward_backward(G, D, z, y, x):
  """Train-mode G and D passes; returns outputs, parameter gradients and buffers."""
  out = G(z, G.shared(y))
  d = D(torch.cat([out, x]), torch.cat([y, y]))
  (d * torch.linspace(-1, 1, d.numel()).view_as(d)).sum().backward()
  result = {'G_z': out.detach(), 'D': d.detach()}
  for prefix, net in (('G.', G), ('D.', D)):
    result.update({prefix + n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    result.update({prefix + n: b.clone() for n, b in net.named_buffers()})
  return result


@pytest.mark.parametrize('module,flags', [
    (BigGAN, TINY),
    (BigGANdeep, '--model BigGANdeep --G_ch 8 --D_ch 8 --G_depth 2 --D_depth 1 --G_shared '
                 '--hier --dim_z 16 --shared_dim 8 --G_attn 16 --D_attn 16'),
])
def test_fast_paths_match_the_original_ops_in_float32(module, flags):
  """The default path (folded resampling, channels_last activations on CPU) computes what the
  original's op sequence computes: equal to rounding in float64, and in float32 no further from
  the float64 truth than the original ops are. G still returns NCHW images."""
  torch.manual_seed(0)
  config = make_config(flags)
  G, D = module.Generator(**config), module.Discriminator(**config)
  with torch.no_grad():
    for m in list(G.modules()) + list(D.modules()):
      if isinstance(m, layers.Attention):
        m.gamma.fill_(0.5)  # attention on, not the identity it starts as
  nets32 = with_original_ops(module, (G, D), config)
  nets64 = [copy.deepcopy(n).double() for n in (G, D)]
  slow64 = with_original_ops(module, nets64, config)
  z, y = torch.randn(4, G.dim_z), torch.randint(0, 10, (4,))
  x = torch.rand(4, 3, 32, 32) * 2 - 1
  fast = forward_backward(G, D, z, y, x)
  fast64 = forward_backward(*copy.deepcopy(nets64), z.double(), y, x.double())
  slow = forward_backward(*nets32, z, y, x)
  truth = forward_backward(*slow64, z.double(), y, x.double())
  assert fast['G_z'].is_contiguous()
  assert fast.keys() == slow.keys() == truth.keys()
  # Errors relative to each tensor's largest entry, or to 1% of the largest gradient of the net
  # for gradients that are 0 but for rounding (biases of convs followed by BN).
  largest = {net: max(v.abs().max() for k, v in truth.items() if k.startswith(net))
             for net in ('G.', 'D.')}

  def error(result, name):
    scale = max(truth[name].abs().max(), 0.01 * largest.get(name[:2], 0), 1e-3)
    return ((result[name].double() - truth[name]).abs().max() / scale).item()

  assert max(error(fast64, name) for name in truth) < 1e-9  # the same maths
  # float32: outputs and buffers as close to the truth as the original ops' (max pooling is
  # continuous). Gradients may differ more: where a 2x2 window of attention's max pooling holds a
  # near-tie, float32 rounding of either path can pick the other pixel (seen with torch 2.14).
  forward = [n for n in truth if n in ('G_z', 'D') or not n.endswith(('weight', 'bias', 'gamma'))]
  fast_err = max(error(fast, name) for name in forward)
  slow_err = max(error(slow, name) for name in forward)
  assert fast_err <= 3 * slow_err + 1e-6, (fast_err, slow_err)
  assert max(error(fast, name) for name in truth) < 1e-3
  assert max(error(slow, name) for name in truth) < 1e-3


def training_setup(flags, optimizer=None):
  """Tiny G, D and the GAN step as train.py builds them (channels_last as --channels_last)."""
  config = make_config(TINY + ' --batch_size 4 --num_D_steps 2 --ema ' + flags)
  torch.manual_seed(0)
  G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
  G_ema = BigGAN.Generator(**{**config, 'skip_init': True, 'no_optim': True})
  train_fns.apply_speed_options(config, G, D, G_ema)
  ema = train_fns.ema(G, G_ema, 0.9, 0)
  if optimizer is not None:  # plain SGD: updates proportional to gradients, unlike Adam's
    G.optim, D.optim = optimizer(G.parameters()), optimizer(D.parameters())
  z_, y_ = sampling.prepare_z_y(4, G.dim_z, 10, device='cpu')
  state = {'itr': 1}
  train = train_fns.GAN_training_function(G, D, BigGAN.G_D(G, D), z_, y_, ema, state, config)
  return G, D, G_ema, train, config


def batch(channels_last=False):
  gen = torch.Generator().manual_seed(1)
  x = torch.rand(8, 3, 32, 32, generator=gen) * 2 - 1
  if channels_last:
    x = x.contiguous(memory_format=torch.channels_last)
  return x, torch.randint(0, 10, (8,), generator=gen)


def run_steps(flags, steps=2, optimizer=None):
  G, D, G_ema, train, config = training_setup(flags, optimizer)
  run_steps.initial_G = {k: v.clone() for k, v in G.state_dict().items()}
  x, y = batch(config['channels_last'])
  torch.manual_seed(2)
  metrics = [train(x, y) for _ in range(steps)]
  return G, D, G_ema, metrics


def sgd(params):
  return torch.optim.SGD(params, lr=1e-3)


def test_channels_last_flag_gives_the_default_results():
  results = [run_steps(flags, optimizer=sgd) for flags in ('', '--channels_last')]
  (G0, D0, E0, m0), (G1, D1, E1, m1) = results
  for a, b in zip(m0, m1):
    for key in a:
      torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
  for net0, net1 in ((G0, G1), (D0, D1), (E0, E1)):
    sd1 = net1.state_dict()
    for key, value in net0.state_dict().items():
      torch.testing.assert_close(sd1[key], value, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize('amp,steps', [('bf16', 2), ('fp16', 5)])
def test_amp_training_keeps_fp32_state(amp, steps):
  """Low-precision forward passes; weights, BN statistics, SN buffers and losses stay fp32. fp16
  skips its first steps while the GradScaler finds its scale, as on a GPU."""
  _, _, _, m0 = run_steps('', steps=1)
  G, D, G_ema, metrics = run_steps('--amp %s --channels_last' % amp, steps=steps)
  before = run_steps.initial_G
  for m in metrics:
    for key, value in m.items():
      assert value.dtype == torch.float32 and torch.isfinite(value), (key, value)
  for net in (G, D, G_ema):
    for key, value in net.state_dict().items():
      assert value.dtype == torch.float32 and torch.isfinite(value).all(), key
  sd = G.state_dict()
  for key in ('blocks.0.0.bn1.stored_mean', 'blocks.0.0.bn1.stored_var', 'blocks.0.0.conv1.u0',
              'blocks.0.0.conv1.sv0', 'blocks.0.0.conv1.weight', 'blocks.1.1.gamma'):
    assert not torch.equal(sd[key], before[key]), key  # trained
  assert G.scaler.is_enabled() == (amp == 'fp16')
  if amp == 'fp16':
    assert G.scaler.get_scale() < 2.0 ** 16 and D.scaler.get_scale() < 2.0 ** 16
  # The first D loss, before any update, is the fp32 one up to low-precision rounding.
  torch.testing.assert_close(metrics[0]['D_loss_real'], m0[0]['D_loss_real'], rtol=0.05, atol=0.05)


INDUCTOR = os.environ.get('BIGGAN_TEST_INDUCTOR') == '1'


@pytest.mark.parametrize('backend', [
    'aot_eager',
    pytest.param('inductor', marks=pytest.mark.skipif(
        not INDUCTOR, reason='inductor spends 45-85 s compiling C++ kernels on 2 cores; run with '
                             'BIGGAN_TEST_INDUCTOR=1 (bench/bench_train.py runs it too)')),
])
def test_compile_matches_eager(backend, monkeypatch):
  """--compile (train_fns.apply_speed_options): a training step and an eval-mode sample of z_
  itself give the eager results, SN and BN buffers included. aot_eager traces and functionalises
  exactly what inductor gets (buffer updates in place, train/eval guards, the z_ Distribution)
  without generating C++."""
  flags = ('--G_ch 2 --D_ch 2 --G_attn 16 --D_attn 16 --dim_z 8 --batch_size 2 --num_D_steps 1 '
           '--G_init N02 --D_init N02')
  compile_with_backend = torch.compile
  monkeypatch.setattr(torch, 'compile', lambda fn: compile_with_backend(fn, backend=backend))
  torch._dynamo.reset()
  runs = []
  for compiled in (False, True):
    config = make_config(flags + (' --compile' if compiled else ''))
    torch.manual_seed(0)
    G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
    G.optim, D.optim = sgd(G.parameters()), sgd(D.parameters())
    train_fns.apply_speed_options(config, G, D)
    z_, y_ = sampling.prepare_z_y(2, G.dim_z, 10, device='cpu')
    train = train_fns.GAN_training_function(G, D, BigGAN.G_D(G, D), z_, y_, None, {'itr': 1},
                                            config)
    x, y = batch()
    torch.manual_seed(2)
    metrics = train(x[:2], y[:2])
    G.eval()
    torch.manual_seed(3)
    sample, _ = sampling.sample(G, z_, y_, config)
    runs.append((metrics, sample, G.state_dict(), D.state_dict()))
  (m0, s0, g0, d0), (m1, s1, g1, d1) = runs
  for key in m0:
    torch.testing.assert_close(m1[key], m0[key], rtol=1e-4, atol=1e-5)
  torch.testing.assert_close(s1, s0, rtol=1e-4, atol=1e-5)
  for sd0, sd1 in ((g0, g1), (d0, d1)):
    for key in sd0:
      torch.testing.assert_close(sd1[key], sd0[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize('native', [True, False])
def test_emulated_bf16_on_cpu_is_announced(monkeypatch, capsys, native):
  monkeypatch.setattr(train_fns, 'cpu_has_native_bf16', lambda: native)
  G, D = nn.Linear(1, 1), nn.Linear(1, 1)
  train_fns.make_scalers(G, D, {'amp': 'bf16'}, 'cpu')
  err = capsys.readouterr().err
  assert ('no native bfloat16' in err) == (not native)
  train_fns.make_scalers(G, D, {'amp': 'off'}, 'cpu')
  assert capsys.readouterr().err == ''
  assert not G.scaler.is_enabled()
