"""Shared test setup: the repository root on sys.path, CPU only, few threads."""
import multiprocessing
import os
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
