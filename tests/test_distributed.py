"""DDP on the CPU with gloo, 2 processes: a training step on 2 ranks x b equals one process with
2b; cross-replica BN equals BN over the whole batch; torchrun end to end with resume."""
import multiprocessing
import os
import subprocess
import sys

import torch
import torch.distributed as dist

import BigGAN
import checkpoints
import distributed
import train_fns
from conftest import make_config
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


def inputs():
  """The whole batch of both ranks (2B samples) and two draws of z, y for it."""
  torch.manual_seed(0)
  n = 2 * B
  return (torch.randn(n, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (n,)),
          torch.randn(2, n, 128, dtype=torch.float64), torch.randint(0, 10, (2, n)))


def weights():
  """A fixed weighting of G's outputs for the whole batch: the gradient of the weighted sum."""
  return torch.linspace(-1, 1, 2 * B * 3 * 32 * 32, dtype=torch.float64).view(2 * B, 3, 32, 32)


def train_step(config, part, G, D, GD):
  """One GAN_training_function step on the samples `part` of inputs()."""
  x, y, zs, ys = inputs()
  n = len(x[part])
  like_z, like_y = torch.zeros(n, 128, dtype=torch.float64), torch.zeros(n, dtype=torch.long)
  z_ = scripted([zs[0, part], zs[1, part]], like_z)
  y_ = scripted([ys[0, part], ys[1, part]], like_y)
  train = train_fns.GAN_training_function(G, D, GD, z_, y_, None, {'itr': 1}, config)
  train(x[part], y[part])


def rank_main(rank, world, store, out, flags, mode):
  dist.init_process_group('gloo', init_method='file://' + store, rank=rank, world_size=world)
  torch.set_num_threads(1)  # OpenMP's pool does not survive fork
  try:
    config = make_config(flags + ' --batch_size %d' % B)
    G, D = models(config)
    ctx = distributed.Context(rank, world, 0, 'cpu')
    if mode == 'step':
      G.eval()  # BN with stored statistics: the batch split does not matter for G
      GD = distributed.wrap(BigGAN.G_D(G, D), ctx)
      train_step(config, slice(rank * B, (rank + 1) * B), G, D, GD)
      result = {'G': G.state_dict(), 'D': D.state_dict()}
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


def test_training_step_on_two_ranks_equals_one_process_with_twice_the_batch(tmp_path):
  flags = FLAGS
  ranks = run_ranks(tmp_path, flags, 'step')
  config = make_config(flags + ' --batch_size %d' % (2 * B))
  G, D = models(config)
  G.eval()
  train_step(config, slice(None), G, D, BigGAN.G_D(G, D))
  for rank in ranks:
    assert_close_dicts(rank['D'], D.state_dict())
    assert_close_dicts(rank['G'], G.state_dict())


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
