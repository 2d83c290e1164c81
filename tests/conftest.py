"""Shared test setup: the repository root on sys.path, CPU only, few threads; the helpers that
several test files share."""
import errno
import multiprocessing
import os
import re
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import config as configuration  # noqa: E402
import inception_utils  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def repo_root():
  return ROOT


def make_config(flags='', resolution=32, n_classes=10, **overrides):
  """A model config as train.py builds it: parsed flags + resolution, n_classes, activations."""
  parser = configuration.add_sample_parser(configuration.prepare_parser())
  config = vars(parser.parse_args(shlex.split(flags)))
  config.update(resolution=resolution, n_classes=n_classes,
                G_activation=nn.ReLU(inplace=False), D_activation=nn.ReLU(inplace=False))
  config.update(overrides)
  return config


@pytest.fixture(scope='module')
def inception_weights(tmp_path_factory):
  """A torchvision Inception weights file with random weights, for --inception_weights offline."""
  path = str(tmp_path_factory.mktemp('inception') / 'torchvision.pth')
  inception_utils.save_random_weights('torchvision', path)
  return path


@pytest.fixture
def one_thread():
  """Small ops: with more threads they mostly wait for each other on a busy machine."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def fork_ranks(target, args=(), world=2, timeout=60):
  """target(rank, *args) in `world` forked processes (gloo tests), all of which must exit 0."""
  context = multiprocessing.get_context('fork')
  procs = [context.Process(target=target, args=(rank,) + tuple(args)) for rank in range(world)]
  for p in procs:
    p.start()
  for p in procs:
    p.join(timeout)
  assert [p.exitcode for p in procs] == [0] * world


def failing_replace(monkeypatch, fail_at, error=errno.ENOSPC):
  """os.replace that raises OSError(error) from its call number fail_at on."""
  calls = [0]
  real_replace = os.replace

  def replace(src, dst):
    calls[0] += 1
    if calls[0] >= fail_at:
      raise OSError(error, os.strerror(error), src)
    return real_replace(src, dst)
  monkeypatch.setattr(os, 'replace', replace)


# ---------------------------------------------------------------------------------------------
# The model families (tests/test_models.py, test_BigGAN.py, test_BigGANdeep.py)
# ---------------------------------------------------------------------------------------------

sys.path.append(os.path.join(ROOT, 'bench'))  # the functional oracle, shared with the benches
from biggan_reference import Ref  # noqa: E402,F401 (for the model tests)

RELEASED = ('--G_shared --hier --dim_z 120 --shared_dim 128 --G_ch 96 --D_ch 96 --G_attn 64 '
            '--D_attn 64 --G_nl inplace_relu --D_nl inplace_relu --SN_eps 1e-6 --adam_eps 1e-6')
DEEP = ('--model BigGANdeep --G_ch 128 --D_ch 128 --G_depth 2 --D_depth 2 --G_shared --hier '
        '--dim_z 128 --shared_dim 128 --G_attn 64 --D_attn 64')
TINY = ('--G_shared --hier --dim_z 20 --shared_dim 12 --G_ch 8 --D_ch 8 --G_attn 16 --D_attn 16 '
        '--SN_eps 1e-6 --BN_eps 1e-4')


def build_meta(module, flags, resolution=128, n_classes=1000):
  """Big configs are built on the meta device: shapes without memory or init time."""
  config = make_config(flags, resolution, n_classes, skip_init=True)
  with torch.device('meta'):
    return module.Generator(**config), module.Discriminator(**config)


def randomise(model):
  """Move every weight and buffer off its special initial value so the test sees all terms."""
  torch.manual_seed(1)
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if t.is_floating_point():
        if 'stored_var' in name:
          t.copy_(torch.rand_like(t) + 0.5)
        elif 'gamma' in name:
          t.fill_(0.7)
        elif name.endswith('accumulation_counter'):
          t.zero_()  # running (not standing) statistics, as after loading
        elif not name.endswith(('sv0', 'sv1')):
          t.add_(0.1 * torch.randn_like(t))


def assert_matches_reference(net, ref, run_net, run_ref):
  """Same output, same gradients for every parameter (through sv, not through u/v), and in
  train mode the same new buffers, no other buffer touched; in eval mode no buffer touched."""
  params = dict(net.named_parameters())
  for k, v in ref.sd.items():
    v.requires_grad_(v.is_floating_point() and k in params)
  before = {k: v.clone() for k, v in net.state_dict().items() if k not in params}
  expected = run_ref()
  out = run_net()
  torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
  weights = torch.randn_like(out)
  (out * weights).sum().backward()
  (expected * weights).sum().backward()
  for name, p in params.items():
    assert p.grad is not None and ref.sd[name].grad is not None, name
    torch.testing.assert_close(p.grad, ref.sd[name].grad, rtol=1e-9, atol=1e-10, msg=name)
  after = net.state_dict()
  changed = {k for k in before if not torch.equal(before[k], after[k])}
  if ref.train:
    assert ref.new and changed <= set(ref.new)
    for k, v in ref.new.items():
      torch.testing.assert_close(after[k].reshape(v.shape), v.detach(), rtol=1e-10, atol=1e-12,
                                 msg=k)
  else:
    assert not ref.new and not changed


def n_itrs(flags, net):
  """--num_{net}_SV_itrs of flags (default 1)."""
  found = re.search(r'--num_%s_SV_itrs (\d+)' % net, flags)
  return int(found.group(1)) if found else 1
