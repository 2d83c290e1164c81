"""Training speed against the REAL original BigGAN-PyTorch: its code and ours, side by side in one
run.

    python bench/bench_vs_original.py --original /path/to/BigGAN-PyTorch-checkout
    python bench/bench_vs_original.py --original /path/to/BigGAN-PyTorch-checkout \\
        --columns fp32,bf16 --ch 32 --batch_size 32 --num_D_steps 2 --rounds 5 --iters 2
    python bench/bench_vs_original.py --original /path/to/checkout --rounds 1 --iters 1 --warmup 1
    python bench/bench_vs_original.py --original /path/to/checkout --device cuda --columns fp32,bf16

--original is a checkout of ajbrock/BigGAN-PyTorch (any folder holding at least its BigGAN.py,
layers.py, utils.py, train_fns.py and losses.py). Its files are imported as they are, never copied
or edited: they are loaded under their own names with the checkout first on sys.path and this
project's folder off it, then moved to sys.modules['original_BigGAN'], ['original_utils'], ... and
our modules of the same names are put back, so both stacks live in one process without clashing.

What runs for the original is what its train.py runs per loader batch: the G, D, G_ema, utils.ema,
G_D and z_/y_ (utils.prepare_z_y) its train.py builds from utils.prepare_parser() flags, and
train_fns.GAN_training_function's train(x, y): num_D_steps D steps, one G step, the per-tensor EMA
update and float(loss.item()) for the logged losses, preceded by train.py's per-batch
state_dict['itr'] += 1, G/D/G_ema.train() and x.to(device). Ours is bench/bench_train.py's Column
(train.py's setup and train_fns.GAN_training_function, with the fp32 or --amp bf16 flags).

Config (both sides from the same flags, bench_train.CIFAR): the CIFAR script
(scripts/launch_cifar_ema.sh: no attention, N(0, 0.02) init, EMA from itr 1000, lr 2e-4) scaled
down to 2 cores: ch 32, batch 32, 2 D steps, 32 px, 10 classes, fp32 weights, random images in
place of the loader; the original gets --dataset C10, ours the offline Shapes dataset at 32 px.

Adaptations of the original, all at run time from this script (its files stay untouched):
  - --device (auto: CUDA when present) where its train.py hard-codes 'cuda' (.to(device),
    prepare_z_y(device=...));
  - modules off the measured path that are missing from the checkout or fail to import are
    replaced by stubs that raise if used: sync_batchnorm (only --cross_replica), datasets (only
    the data loaders) and animal_hash (only --hashname). The table's header says which were.
Nothing on the measured path is patched. Two torch 2.x behaviours apply to the original as to any
2019 code run today and are part of what is measured: optimizer.zero_grad() sets gradients to
None, and utils.Distribution (the z_/y_ tensor subclass) now propagates through every op it
touches, so G's and D's ops dispatch through Tensor.__torch_function__.

Columns (ours, train.py flags; see bench_train.py):
  fp32      (none) the default
  cl        --channels_last
  bf16      --amp bf16                     bf16_cl          --amp bf16 --channels_last
  compile   --compile                      compile_bf16_cl  --compile --amp bf16 --channels_last
  emulated  bench_train.py's stand-in for the original (our G and D with the fast paths off and a
            step written like the original's), to check that stand-in against the real thing
Every column, the original's included, starts from the same seed; they run interleaved, --iters
iterations each per round, so load from other processes hits them alike. The table has the
median seconds per iteration, iterations/s, images/s (batch_size * num_D_steps per iteration),
the ratio original / column (above 1: faster than the original), the best time, process CPU time
per iteration and the warm-up time of the first --warmup iterations. On CUDA every clock read waits
for the device (bench/devices.py) and the table adds each column's peak memory.
"""
import argparse
import importlib
import os
import subprocess
import sys
import time
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_train  # noqa: E402  (puts the project root on sys.path and imports our modules)
import devices  # noqa: E402

ROOT = bench_train.ROOT
# The original's modules the benchmark needs, in import order (each pulls in the ones before).
CORE = ('losses', 'layers', 'utils', 'BigGAN', 'train_fns')
# Modules the original imports at module level that the training step never uses.
OPTIONAL = {
    'sync_batchnorm': ('cross-replica BN (--cross_replica)', ['SynchronizedBatchNorm2d']),
    'datasets': ('the data loaders', ['ImageFolder', 'ILSVRC_HDF5', 'CIFAR10', 'CIFAR100']),
    'animal_hash': ('--hashname', []),
}
OUR_COLUMNS = dict(bench_train.COLUMNS, emulated=None)


def _stub(name, use, classes):
  """A module standing in for one of the original's that the training step never touches."""
  module = types.ModuleType(name, 'Stub from bench_vs_original.py for the original\'s %s (used for '
                            '%s only).' % (name, use))

  def make(cls_name):
    def refuse(*args, **kwargs):
      raise RuntimeError('%s.%s is a stub in bench_vs_original.py: the original\'s %s could not '
                         'be imported' % (name, cls_name, name))
    return type(cls_name, (object,), {'__init__': refuse})
  for cls_name in classes:
    setattr(module, cls_name, make(cls_name))
  return module


def _inside(module, folder):
  path = getattr(module, '__file__', None)
  return bool(path) and os.path.abspath(path).startswith(folder + os.sep)


def load_original(folder):
  """Imports the original's CORE modules from `folder` without disturbing ours. Returns a
  namespace of them and a list of notes (which optional modules were stubbed and why)."""
  folder = os.path.realpath(folder)
  missing = [name for name in CORE if not os.path.isfile(os.path.join(folder, name + '.py'))]
  if missing:
    raise SystemExit('--original %s: no %s there; give a checkout of ajbrock/BigGAN-PyTorch'
                     % (folder, ', '.join(name + '.py' for name in missing)))
  names = CORE + tuple(OPTIONAL)

  def ours(name):
    return name in names or name.split('.')[0] in names

  saved = {name: module for name, module in sys.modules.items() if ours(name)}
  for name in saved:
    del sys.modules[name]
  old_path = list(sys.path)
  root = os.path.realpath(ROOT)
  sys.path[:] = [folder] + [p for p in old_path if os.path.realpath(p or os.getcwd()) != root]
  notes, loaded = [], {}
  try:
    for name, (use, classes) in OPTIONAL.items():
      present = (os.path.isfile(os.path.join(folder, name + '.py'))
                 or os.path.isfile(os.path.join(folder, name, '__init__.py')))
      why = 'not in the checkout'
      if present:
        try:
          if _inside(importlib.import_module(name), folder):
            continue
          why = 'imported from outside the checkout'
        except Exception as error:  # noqa: BLE001  (any import failure: stub it, say why)
          why = 'import failed: %s: %s' % (type(error).__name__, error)
      for stale in [n for n in sys.modules if n == name or n.startswith(name + '.')]:
        del sys.modules[stale]
      sys.modules[name] = _stub(name, use, classes)
      notes.append('%s stubbed (%s; used for %s only)' % (name, why, use))
    for name in CORE:
      module = importlib.import_module(name)
      if not _inside(module, folder):
        raise SystemExit('the original\'s %s was imported from %s, not from %s'
                         % (name, module.__file__, folder))
    loaded = {name: module for name, module in sys.modules.items() if ours(name)}
  finally:
    sys.path[:] = old_path
    for name in [n for n in sys.modules if ours(n)]:
      del sys.modules[name]
    sys.modules.update(saved)
  for name, module in loaded.items():
    sys.modules['original_' + name] = module
  return types.SimpleNamespace(**{name: loaded[name] for name in CORE}), notes


def original_revision(folder):
  try:
    return subprocess.run(['git', '-C', folder, 'rev-parse', '--short', 'HEAD'], check=True,
                          capture_output=True, text=True, timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return 'not a git checkout'


class OriginalColumn(object):
  """The original's G, D, G_ema, ema, G_D and training step, built as its train.py builds them."""

  def __init__(self, original, args):
    self.name, self.times, self.cpu_times, self.warmup = 'original', [], [], 0.0
    self.device, self.dtype, self.peak_mib, self.resolution = args.device, torch.float32, None, 32
    device = args.device
    utils, model = original.utils, original.BigGAN
    flags = ('%s --dataset C10 --G_ch %d --D_ch %d --batch_size %d --num_D_steps %d --seed %d'
             % (bench_train.CIFAR, args.ch, args.ch, args.batch_size, args.num_D_steps, args.seed))
    config = vars(utils.prepare_parser().parse_args(flags.split()))
    # The start of the original train.run(config):
    config['resolution'] = utils.imsize_dict[config['dataset']]
    config['n_classes'] = utils.nclass_dict[config['dataset']]
    config['G_activation'] = utils.activation_dict[config['G_nl']]
    config['D_activation'] = utils.activation_dict[config['D_nl']]
    config = utils.update_config_roots(config)
    utils.seed_rng(config['seed'])
    G = model.Generator(**config).to(device)
    D = model.Discriminator(**config).to(device)
    G_ema = model.Generator(**{**config, 'skip_init': True, 'no_optim': True}).to(device)
    ema = utils.ema(G, G_ema, config['ema_decay'], config['ema_start'])
    GD = model.G_D(G, D)
    self.state_dict = {'itr': 0, 'epoch': 0, 'save_num': 0, 'save_best_num': 0, 'best_IS': 0,
                       'best_FID': 999999, 'config': config}
    G_batch_size = max(config['G_batch_size'], config['batch_size'])
    z_, y_ = utils.prepare_z_y(G_batch_size, G.dim_z, config['n_classes'], device=device,
                               fp16=config['G_fp16'])
    self.train = original.train_fns.GAN_training_function(G, D, GD, z_, y_, ema,
                                                          self.state_dict, config)
    self.nets, self.n_classes = (G, D, G_ema), config['n_classes']

  resident_mib = bench_train.Column.resident_mib

  def step(self, x, y):
    """One iteration of the original train.py's inner loop (without its logging)."""
    start, cpu = devices.clock(self.device), time.process_time()
    self.state_dict['itr'] += 1
    for net in self.nets:
      net.train()
    metrics = self.train(x.to(self.device), y.to(self.device))
    return devices.clock(self.device) - start, time.process_time() - cpu, metrics


def our_column(name, args):
  if name == 'emulated':
    column = bench_train.Column('original', '', args)  # bench_train's reference, renamed
    column.name = 'emulated'
    return column
  return bench_train.Column(name, OUR_COLUMNS[name], args)


def parameter_count(net):
  return sum(p.numel() for p in net.parameters())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--original', required=True,
                      help='Folder of a BigGAN-PyTorch checkout (the original\'s BigGAN.py, '
                           'layers.py, utils.py, train_fns.py, losses.py); imported as is')
  parser.add_argument('--columns', type=str, default='fp32',
                      help='Comma-separated columns of ours to measure against the original, from: '
                           '%s (default: %%(default)s; fp32,bf16 adds --amp bf16)'
                           % ', '.join(OUR_COLUMNS))
  bench_train.add_timing_flags(parser)
  args = parser.parse_args()
  names = [name for name in args.columns.split(',') if name]
  unknown = [name for name in names if name not in OUR_COLUMNS]
  if unknown:
    parser.error('unknown column(s) %s; choose from %s'
                 % (', '.join(unknown), ', '.join(OUR_COLUMNS)))
  if min(args.rounds, args.iters, args.warmup + 1) < 1:
    parser.error('--rounds and --iters must be at least 1, --warmup at least 0')
  if not os.path.isdir(args.original):
    parser.error('--original %s is not a folder' % args.original)
  torch.set_num_threads(args.threads)
  torch.backends.cudnn.benchmark = True  # as both train.py's
  args.device = devices.pick(args.device)

  original, notes = load_original(args.original)
  folder = os.path.realpath(args.original)
  print('torch %s; %s; ch %d, batch %d, %d D steps, 32 px, 10 classes, fp32 weights'
        % (torch.__version__, devices.describe(args.device), args.ch, args.batch_size,
           args.num_D_steps))
  print('original: %s (%s), loaded as %s' % (folder, original_revision(folder),
                                             ', '.join('original_' + n for n in CORE)))
  for note in notes:
    print('  ' + note)

  columns = [OriginalColumn(original, args)] + [our_column(name, args) for name in names]
  G, D = columns[0].nets[:2]
  for column in columns[1:]:
    ours = (parameter_count(column.nets[0]), parameter_count(column.nets[1]))
    if ours != (parameter_count(G), parameter_count(D)):
      raise RuntimeError('column %s: G/D have %d/%d parameters, the original\'s %d/%d'
                         % ((column.name,) + ours + (parameter_count(G), parameter_count(D))))
  print('G %d, D %d parameters in every column' % (parameter_count(G), parameter_count(D)))

  batch = bench_train.time_columns(columns, args)
  bench_train.print_table(columns, batch, args.rounds * args.iters,
                          'original = the real original\'s code; ')


if __name__ == '__main__':
  main()
