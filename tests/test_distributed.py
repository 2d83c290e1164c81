"""DDP on the CPU with gloo, 2 processes: a training step on 2 ranks x b equals one process with
2b, also with accumulation (one all-reduce per optimizer step); cross-replica BN equals BN over the
whole batch; torchrun end to end with resume; train.py on 2 forked ranks: per-rank z from one
init, one G_ema for evaluation, unequal IS/FID shares with cross-replica BN, divergence on one
rank stopping all."""
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

import BigGAN
import checkpoints
import distributed
import inception_utils
import train
import train_fns
from conftest import make_config
from errors import UserError
from test_inception_utils import _random_weights
from test_train_fns import scripted

FLAGS = '--G_shared --G_ch 4 --D_ch 4 --G_attn 0 --D_attn 16 --num_D_steps 1'
B = 3  # per rank


def models(config):
  """G and D in float64 with SGD (the update is the averaged gradient itself). Every process does
  the same forward passes, so the SN vectors evolve identically without warming up."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # ortho init's QR differs in the last bits with the thread count
  try:
    torch.manual_seed(1)
    G = BigGAN.Generator(**config).double()
    D = BigGAN.Discriminator(**config).double()
  finally:
    torch.set_num_threads(threads)
  for net in (G, D):
    net.optim = torch.optim.SGD(net.parameters(), lr=1e-2)
  return G, D


def inputs(n=2 * B):
  """The whole batch of both ranks (n samples) and two draws of z, y for it (D's, G's)."""
  torch.manual_seed(0)
  return (torch.randn(n, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (n,)),
          torch.randn(2, n, 128, dtype=torch.float64), torch.randint(0, 10, (2, n)))


def weights():
  """A fixed weighting of G's outputs for the whole batch: the gradient of the weighted sum."""
  return torch.linspace(-1, 1, 2 * B * 3 * 32 * 32, dtype=torch.float64).view(2 * B, 3, 32, 32)


def train_step(config, part, G, D, GD, accumulations=1, n=2 * B):
  """One GAN_training_function step on the samples `part` of inputs(n), in `accumulations`
  micro-batches for D and for G, each with its own slice of the z, y draws."""
  x, y, zs, ys = inputs(n)
  pieces = torch.arange(n)[part].chunk(accumulations)
  m = len(pieces[0])
  like_z, like_y = torch.zeros(m, 128, dtype=torch.float64), torch.zeros(m, dtype=torch.long)
  z_ = scripted([zs[0, p] for p in pieces] + [zs[1, p] for p in pieces], like_z)
  y_ = scripted([ys[0, p] for p in pieces] + [ys[1, p] for p in pieces], like_y)
  train = train_fns.GAN_training_function(G, D, GD, z_, y_, None, {'itr': 1}, config)
  train(x[part], y[part])


def count_reductions(GD):
  """Count the gradient all-reduce rounds of each DDP replica (a round ends with the bucket that
  is_last()), passing the buckets on to DDP's own all-reduce."""
  rounds = {}
  for name, ddp in GD.replicas.items():
    rounds[name] = 0

    def hook(state, bucket, name=name):
      rounds[name] += bucket.is_last()
      return default_hooks.allreduce_hook(None, bucket)
    ddp.register_comm_hook(None, hook)
  return rounds


ACCUMULATE = ' --num_D_accumulations 2 --num_G_accumulations 2'
M = 2  # per micro-batch and rank


def rank_main(rank, world, store, out, flags, mode):
  dist.init_process_group('gloo', init_method='file://' + store, rank=rank, world_size=world)
  torch.set_num_threads(1)  # OpenMP's pool does not survive fork
  try:
    config = make_config(flags + (ACCUMULATE + ' --batch_size %d' % M if mode == 'accumulate'
                                  else ' --batch_size %d' % B))
    G, D = models(config)
    ctx = distributed.Context(rank, world, 0, 'cpu')
    if mode == 'step':
      G.eval()  # BN with stored statistics: the batch split does not matter for G
      GD = distributed.wrap(BigGAN.G_D(G, D), ctx)
      train_step(config, slice(rank * B, (rank + 1) * B), G, D, GD)
      result = {'G': G.state_dict(), 'D': D.state_dict()}
    elif mode == 'accumulate':  # 2 micro-batches of M on each rank, for D and for G
      # eval: SN divides by its stored sv and does no power iteration, so the extra forward
      # passes of accumulation (after D's update, in the G step) leave the maths alone.
      G.eval()
      D.eval()
      GD = distributed.wrap(BigGAN.G_D(G, D), ctx)
      rounds = count_reductions(GD)
      train_step(config, slice(rank * 2 * M, (rank + 1) * 2 * M), G, D, GD, 2, 4 * M)
      result = {'G': G.state_dict(), 'D': D.state_dict(), 'rounds': rounds}
    else:  # cross-replica forward and backward of G alone
      G_ddp = distributed.wrap(BigGAN.G_D(G, D), ctx).replicas['G']
      x, y, zs, ys = inputs()
      part = slice(rank * B, (rank + 1) * B)
      out_G = G_ddp(zs[0, part], ys[0, part])
      (out_G * weights()[part]).sum().backward()
      result = {'out': out_G.detach(), 'grads': {n: p.grad for n, p in G.named_parameters()},
                'G': G.state_dict()}
    torch.save(result, '%s.%d' % (out, rank))
  finally:
    dist.destroy_process_group()


def run_ranks(tmp_path, flags, mode, world=2):
  ctx = multiprocessing.get_context('fork')
  procs = [ctx.Process(target=rank_main, args=(r, world, str(tmp_path / 'store'),
                                               str(tmp_path / 'out'), flags, mode))
           for r in range(world)]
  for p in procs:
    p.start()
  for p in procs:
    p.join(120)
  assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
  return [torch.load('%s.%d' % (tmp_path / 'out', r), weights_only=True) for r in range(world)]


def assert_close_dicts(a, b, rtol=1e-9, atol=1e-9):
  assert a.keys() == b.keys()
  for k in a:
    torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=k)


@pytest.mark.parametrize('extra', ['', ' --reuse_fakes'])
def test_training_step_on_two_ranks_equals_one_process_with_twice_the_batch(tmp_path, extra):
  """With --reuse_fakes G's replica generates in the D step and is backpropagated in the G
  step: DDP still averages G's gradients once, as one process with the whole batch."""
  flags = FLAGS + extra
  ranks = run_ranks(tmp_path, flags, 'step')
  config = make_config(flags + ' --batch_size %d' % (2 * B))
  G, D = models(config)
  G.eval()
  train_step(config, slice(None), G, D, BigGAN.G_D(G, D))
  for rank in ranks:
    assert_close_dicts(rank['D'], D.state_dict())
    assert_close_dicts(rank['G'], G.state_dict())


def test_accumulation_all_reduces_once_per_step_and_equals_one_process(tmp_path):
  """no_sync on all but the last micro-batch: one all-reduce round per optimizer step (one D
  step, one G step), and the update of one process with the whole batch of 4M."""
  ranks = run_ranks(tmp_path, FLAGS, 'accumulate')
  config = make_config(FLAGS + ' --batch_size %d' % (4 * M))
  G, D = models(config)
  G.eval()
  D.eval()
  train_step(config, slice(None), G, D, BigGAN.G_D(G, D), 1, 4 * M)
  for rank in ranks:
    assert rank['rounds'] == {'G': 1, 'D': 1}
    assert_close_dicts(rank['D'], D.state_dict())
    assert_close_dicts(rank['G'], G.state_dict())


def test_a_short_loader_batch_is_a_user_error():
  config = make_config(FLAGS + ACCUMULATE + ' --batch_size 2')
  G, D = models(config)
  z_ = scripted([], torch.zeros(2, 128, dtype=torch.float64))
  y_ = scripted([], torch.zeros(2, dtype=torch.long))
  train = train_fns.GAN_training_function(G, D, BigGAN.G_D(G, D), z_, y_, None, {'itr': 1},
                                          config)
  x, y, _, _ = inputs(4)
  with pytest.raises(UserError, match='has 3 samples.*needs 4 per iteration') as e:
    train(x[:3], y[:3])  # two micro-batches: 2 and a short 1
  assert '\n' not in str(e.value)


def test_cross_replica_bn_equals_bn_over_the_whole_batch(tmp_path):
  flags = FLAGS + ' --cross_replica'
  ranks = run_ranks(tmp_path, flags, 'forward')
  config = make_config(flags + ' --batch_size %d' % (2 * B))
  G, _ = models(config)
  _, _, zs, ys = inputs()
  out = G(zs[0], G.shared(ys[0]))
  (out * weights()).sum().backward()
  for r, rank in enumerate(ranks):
    torch.testing.assert_close(rank['out'], out.detach()[r * B:(r + 1) * B], rtol=1e-9, atol=1e-12)
    # DDP averages the ranks' gradients of their half-sums: half the full gradient.
    assert_close_dicts(rank['grads'], {n: p.grad / 2 for n, p in G.named_parameters()})
    stats = {k: v for k, v in G.state_dict().items() if 'running' in k}
    assert stats and all(torch.allclose(rank['G'][k], v, rtol=1e-9, atol=1e-12)
                         for k, v in stats.items())


def torchrun(root, repo_root, extra):
  flags = ('--dataset Shapes --resolution 32 --G_ch 4 --D_ch 4 --batch_size 4 --num_D_steps 1 '
           '--G_attn 0 --D_attn 0 --G_shared --num_workers 0 --shuffle --test_every 100000 '
           '--sv_log_interval 2 --ema --cross_replica --num_D_accumulations 2 --base_root %s %s'
           % (root, extra))
  env = dict(os.environ, OMP_NUM_THREADS='1')
  return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                         '--master_port', '29517', os.path.join(repo_root, 'train.py')]
                        + flags.split(), capture_output=True, text=True, timeout=600, env=env)


def test_torchrun_trains_saves_once_and_resumes(tmp_path, repo_root):
  first = torchrun(tmp_path, repo_root, '--num_iters 4 --save_every 2')
  assert first.returncode == 0, first.stderr[-3000:]
  [exp] = os.listdir(tmp_path / 'weights')
  assert '_cr_' in exp + '_' and 'nDa2' in exp
  files = sorted(os.listdir(tmp_path / 'weights' / exp))
  assert 'G.pth' in files and 'G_copy1.pth' in files and not any(f.endswith('.new') for f in files)
  log = (tmp_path / 'logs' / exp / 'G_loss.log').read_text().splitlines()
  assert [int(line.split(':')[0]) for line in log] == [1, 2, 3, 4]  # rank 0 alone writes
  state = checkpoints.safe_load(tmp_path / 'weights' / exp / 'state_dict.pth')
  assert state['itr'] == 4 and len(state['rng']) == 2  # every rank's random state
  second = torchrun(tmp_path, repo_root, '--num_iters 6 --save_every 2 --resume')
  assert second.returncode == 0, second.stderr[-3000:]
  log = (tmp_path / 'logs' / exp / 'G_loss.log').read_text().splitlines()
  assert [int(line.split(':')[0]) for line in log] == [1, 2, 3, 4, 5, 6]
  assert checkpoints.safe_load(tmp_path / 'weights' / exp / 'state_dict.pth')['itr'] == 6


def test_two_nodes_of_one_process_each(tmp_path, repo_root):
  """torchrun --nnodes 2 --node_rank R with a rendezvous endpoint, both nodes on this machine."""
  flags = ('--dataset Shapes --resolution 32 --G_ch 4 --D_ch 4 --batch_size 4 --num_D_steps 1 '
           '--G_attn 0 --D_attn 0 --num_workers 0 --test_every 100000 --num_iters 2 '
           '--save_every 2 --base_root %s' % tmp_path)
  env = dict(os.environ, OMP_NUM_THREADS='1')
  nodes = [subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--nnodes', '2',
                             '--nproc_per_node', '1', '--node_rank', str(rank),
                             '--master_addr', '127.0.0.1', '--master_port', '29531',
                             os.path.join(repo_root, 'train.py')] + flags.split(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
           for rank in range(2)]
  outputs = [node.communicate(timeout=600) for node in nodes]
  assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:]
  assert 'rank 1 of 2' in outputs[1][0]  # the second node's process reads its own shard
  [exp] = os.listdir(tmp_path / 'weights')
  state = checkpoints.safe_load(tmp_path / 'weights' / exp / 'state_dict.pth')
  assert state['itr'] == 2 and len(state['rng']) == 2


# train.py on 2 ranks, each a forked process joining by env:// as under torchrun (no interpreter
# start-ups); `patch(rank, out)` instruments a rank before it runs.
TRAIN = ('--dataset Shapes --resolution 32 --G_ch 4 --D_ch 4 --batch_size 4 --num_D_steps 1 '
         '--G_attn 0 --D_attn 0 --G_shared --dim_z 16 --shared_dim 8 --num_workers 0 '
         '--save_every 1000 --sv_log_interval 0')


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def train_rank(rank, world, port, argv, patch, out):
  os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                    MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
  torch.set_num_threads(1)  # OpenMP's pool does not survive fork
  if patch is not None:
    patch(rank, out)
  try:
    train.main(argv)
  except UserError as e:
    with open('%s.%d.error' % (out, rank), 'w') as f:
      f.write(str(e))
    sys.exit(2)


def train_ranks(root, extra, patch=None, world=2, timeout=120):
  """(exit codes, UserError messages, seconds) of train.py on `world` ranks; a rank still
  running after `timeout` is killed and reported as exit code None."""
  out = str(root / 'out')
  argv = ('%s --base_root %s %s' % (TRAIN, root, extra)).split()
  ctx = multiprocessing.get_context('fork')
  port = free_port()
  procs = [ctx.Process(target=train_rank, args=(r, world, port, argv, patch, out))
           for r in range(world)]
  start = time.time()
  for p in procs:
    p.start()
  for p in procs:
    p.join(max(1, start + timeout - time.time()))
  codes = [p.exitcode for p in procs]
  for p in procs:
    if p.is_alive():
      p.kill()
      p.join()
  messages = []
  for r in range(world):
    path = '%s.%d.error' % (out, r)
    messages.append(open(path).read() if os.path.exists(path) else None)
  return codes, messages, time.time() - start


def nan_on_rank_1(rank, out):
  """Records the models as built and the first z; at iteration 2 rank 1 alone reports a NaN
  loss (rank 0's values and everyone's weights stay finite)."""
  make = train_fns.training_function

  def training_function(name):
    def build(G, D, GD, z_, y_, ema, state_dict, config):
      init = {'G': {k: v.clone() for k, v in G.state_dict().items()},
              'D': {k: v.clone() for k, v in D.state_dict().items()}}
      step = make(name)(G, D, GD, z_, y_, ema, state_dict, config)

      def train(x, y):
        metrics = step(x, y)
        if state_dict['itr'] == 1:
          torch.save({'init': init, 'z': z_.as_subclass(torch.Tensor).clone()},
                     '%s.%d' % (out, rank))
        if state_dict['itr'] == 2 and rank == 1:
          metrics['G_loss'] = metrics['G_loss'] * float('nan')
        return metrics
      return train
    return build
  train_fns.training_function = training_function


@pytest.fixture(scope='module')
def diverging_run(tmp_path_factory):
  root = tmp_path_factory.mktemp('diverge')
  codes, messages, seconds = train_ranks(root, '--num_iters 6 --sv_log_interval 1', nan_on_rank_1)
  records = [torch.load('%s.%d' % (root / 'out', r), weights_only=True) for r in range(2)]
  return codes, messages, seconds, records


def test_ranks_start_from_one_init_with_their_own_z(diverging_run):
  records = diverging_run[3]
  for net in ('G', 'D'):
    assert_close_dicts(records[0]['init'][net], records[1]['init'][net], rtol=0, atol=0)
  assert records[0]['z'].shape == (4, 16)
  assert not torch.allclose(records[0]['z'], records[1]['z'])


def test_divergence_on_one_rank_stops_every_rank_with_the_message(diverging_run):
  codes, messages, seconds, _ = diverging_run
  assert codes == [2, 2], (codes, messages)  # not a hang in DDP's all-reduce, not a finished run
  assert seconds < 100
  assert messages[0] == messages[1]
  assert messages[0].startswith('training diverged: non-finite values at iteration 2 (G_loss=nan')
  assert 'on rank 1;' in messages[0] and '\n' not in messages[0]


def record_evaluated_G(rank, out):
  """Metrics that save the buffers of the G they sample from, then return fixed values."""
  def prepare(*args, **kwargs):
    def get_inception_metrics(sample, num_inception_images, num_splits=10, **kw):
      sample()
      torch.save({k: b.clone() for k, b in sample.keywords['G'].named_buffers()},
                 '%s.%d' % (out, rank))
      return 1.0, 0.0, 10.0
    get_inception_metrics.network = 'torchvision'
    return get_inception_metrics
  inception_utils.prepare_inception_metrics = prepare


@pytest.mark.parametrize('extra', ['', '--accumulate_stats'])
def test_every_rank_evaluates_the_same_G_ema(tmp_path, extra):
  """Without cross-replica BN each rank's G, hence G_ema, has its own BN statistics (and its own
  standing statistics): all must sample from rank 0's, which rank 0 saves."""
  codes, messages, _ = train_ranks(tmp_path, '--num_iters 2 --test_every 2 --ema --use_ema '
                                   '--G_eval_mode ' + extra, record_evaluated_G)
  assert codes == [0, 0], messages
  buffers = [torch.load('%s.%d' % (tmp_path / 'out', r), weights_only=True) for r in range(2)]
  assert any('stored_mean' in k for k in buffers[0])
  assert_close_dicts(buffers[0], buffers[1], rtol=0, atol=0)
  [exp] = os.listdir(tmp_path / 'weights')
  saved = checkpoints.safe_load(tmp_path / 'weights' / exp / 'G_ema.pth')
  assert_close_dicts({k: saved[k] for k in buffers[1]}, buffers[1], rtol=0, atol=0)


def test_unequal_metric_shares_with_cross_replica_bn_in_train_mode(tmp_path):
  """5 images on 2 ranks with batches of 2: rank 0 samples 2 batches, rank 1 one; G in train
  mode (no --G_eval_mode) with cross-replica BN must not wait for the other rank's batches."""
  weights = str(tmp_path / 'inception.pth')
  _random_weights('torchvision', weights)
  codes, messages, _ = train_ranks(tmp_path, '--num_iters 1 --test_every 1 --cross_replica '
                                   '--batch_size 2 --num_inception_images 5 --no_fid '
                                   '--inception_weights %s' % weights, timeout=90)
  assert codes == [0, 0], messages
  [log] = [f for f in os.listdir(tmp_path / 'logs') if f.endswith('_log.jsonl')]
  [record] = [json.loads(line) for line in open(tmp_path / 'logs' / log)]
  assert record['itr'] == 1 and record['IS_mean'] >= 1


_FAULTS = '''
import resource, sys, torch, distributed
if sys.argv[1] == 'device':
  print('device', distributed.pick_device('cpu'))
counts = []
for _ in range(8):  # two 48 MB tensors, allocated and freed as a sampling loop does
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  x, y = torch.ones(12 * 2 ** 20), torch.ones(12 * 2 ** 20)
  del x, y
  counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print('faults', min(counts[2:]))
'''


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                    reason="glibc's malloc only")
def test_a_cpu_process_keeps_its_freed_memory_unless_the_environment_sets_malloc(repo_root):
  def faults(mode, **env):
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith('MALLOC_') and k != 'GLIBC_TUNABLES'}
    out = subprocess.run([sys.executable, '-c', _FAULTS, mode], cwd=repo_root, check=True,
                         capture_output=True, text=True, env=dict(environ, **env)).stdout
    return int(out.split('faults')[1])
  pages = 2 * 48 * 2 ** 20 // os.sysconf('SC_PAGE_SIZE')
  # glibc's default: each 48 MB block mmap'ed afresh and page-faulted on first touch.
  assert faults('plain') >= pages // 2
  assert faults('device') < pages // 20  # pick_device('cpu'): the heap is reused
  assert faults('device', MALLOC_MMAP_MAX_='65536') >= pages // 2  # the environment's choice
