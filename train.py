"""Train a BigGAN: the original BigGAN-PyTorch training script, on one device or many.

    python train.py --dataset Shapes --resolution 32 ...           # CPU or one GPU
    bash scripts/launch_BigGAN_bs256x8.sh                          # the original launchers
    torchrun --nproc_per_node 8 train.py ...                       # DDP (see distributed.py)

Writes weights_root/<exp>/{G,G_optim,D,D_optim,state_dict,G_ema}.pth (+ copy{n}, best{n}),
logs_root/<exp>_log.jsonl, logs_root/<exp>/*.log, samples_root/<exp>/... with <exp> the
experiment name (config.name_from_config, or --experiment_name). --resume continues from the newest
complete checkpoint, bit-exactly on CPU: the checkpoint holds every random state and the data
position. SIGTERM / SIGUSR1 (and the end of --max_minutes) save at the next iteration boundary
and exit 0. One train.py at a time per experiment (a lock in weights_root/<exp>); without --resume
an earlier run of the same name is moved aside to <exp>.old-<date>, not overwritten.

--model Glow trains the flow of Glow.py by likelihood instead (glow_fns.py): no D (no D.pth,
D_optim.pth), held-out bits/dim every --test_every iterations in the jsonl as test_bpd.
"""
import functools
import math
import os
import signal
import sys
import time

import torch

import checkpoints
import config as configuration
import datasets
import distributed
import Glow
import glow_fns
import logger
import metrics as image_metrics
import models
import sampling
import train_fns
from errors import UserError, run_main


class Preemption(object):
  """Remembers SIGTERM / SIGUSR1 (cluster preemption) until the loop can stop cleanly."""

  def __init__(self):
    self.requested = None
    self.previous = {}
    for sig in (signal.SIGTERM, getattr(signal, 'SIGUSR1', None)):
      if sig is not None:
        self.previous[sig] = signal.signal(sig, self.handle)

  def handle(self, signum, frame):
    self.requested = signal.Signals(signum).name

  def close(self):
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)


def batches(loader, multiepoch):
  """Every training batch of the run: one pass of a multi-epoch loader (the original looped over
  it num_epochs times), else one pass per epoch until the caller stops."""
  if multiepoch:
    yield from loader
    return
  while True:
    yield from loader


def sv_values(G, D):
  """The singular-value buffers as tensors (read at the next log flush, not now)."""
  return {('%s_%s' % (prefix, key)).replace('.', '_'): value.clone().reshape(())
          for prefix, net in (('G', G), ('D', D)) if net is not None
          for key, value in net.state_dict().items() if key.split('.')[-1].startswith('sv')}


class Discard(object):
  """The train log of a rank that writes nothing: its TrainLog still hands back the rows (at the
  same iterations as rank 0's) for check_finite."""

  def log_rows(self, rows):
    pass


def check_finite(rows, nets, itr, state_dict, config, experiment_name, ctx=None):
  """Stop on NaN/Inf losses or weights, before anything is saved over a good checkpoint. Every
  rank calls it at the same iterations and all stop together (a rank that stopped alone would
  leave the others waiting in DDP's all-reduce)."""
  bad = [(i, values) for i, values in rows
         if any(not math.isfinite(v) for k, v in values.items() if '_sv' not in k)]
  params = [p for net in nets for p in net.parameters()]
  weights_ok = not params or bool(torch.stack([torch.isfinite(p).all() for p in params]).all())
  where = None
  if bad or not weights_ok:
    where = ('iteration %d (%s)' % (bad[0][0], ', '.join('%s=%s' % kv for kv in bad[0][1].items()
                                                           if '_sv' not in kv[0]))
             if bad else 'the weights at iteration %d' % itr)
  if ctx is not None and ctx.distributed:
    found = [(rank, w) for rank, w in enumerate(distributed.gather_objects(where, ctx)) if w]
    where = '%s on rank %d' % (found[0][1], found[0][0]) if found else None
  if where is None:
    return
  raise UserError('training diverged: non-finite values at %s; nothing was saved after it, the '
                  'last checkpoint in %s/%s is intact. Lower the learning rates or change --amp, '
                  'then --resume' % (where, config['weights_root'], experiment_name))


# ---------------------------------------------------------------------------------------------
# The run: setup, restore, prepare the loop, loop, finish
# ---------------------------------------------------------------------------------------------


class Run(object):
  """What the steps of a training run share (a namespace: config, ctx, the nets, the logs, ...)."""


@checkpoints.releases_locks
def run(config):
  r = setup(config)
  restore(r)
  prepare_loop(r)
  loop(r)
  return finish(r)


def setup(config):
  """Config, processes, folders and lock, then G, D, G_ema, the EMA and G_D (the same seed on
  every rank)."""
  r = Run()
  r.config = config = configuration.prepare_config(config, training=True)
  r.ctx = distributed.setup(config['device'])
  r.device = r.ctx.device
  configuration.check_distributed(config, r.ctx)
  r.experiment_name = config['experiment_name'] or configuration.name_from_config(config)
  print('Experiment name is %s' % r.experiment_name)
  if r.ctx.is_main:
    configuration.prepare_root(config)
  # One run per experiment folder, locked before anything is written (rank 0 holds the lock for
  # every rank); a --resume or --finetune_from without a folder fails before it is made.
  r.source = r.experiment_name if config['resume'] else config['finetune_from']
  if r.source and not os.path.isdir(os.path.join(config['weights_root'], r.source)):
    checkpoints.newest_save(config['weights_root'], r.source,
                            '--resume' if config['resume'] else '--finetune_from', recover=False)
  distributed.on_main(r.ctx, checkpoints.lock_run,
                      os.path.join(config['weights_root'], r.experiment_name))
  if config['tensorboard']:
    logger.summary_writer_class()  # installed? (before any work)
  torch.backends.cudnn.benchmark = True
  build_models(r)
  return r


def build_models(r):
  """G, D, G_ema from the same seed on every rank; the EMA; G_D; the loss scalers."""
  config = r.config
  checkpoints.seed_rng(config['seed'])
  model = models.load_model_module(config['model'])
  r.G = sampling.build_generator(config, r.device)
  r.D = (model.Discriminator(**config).to(r.device) if hasattr(model, 'Discriminator')
         else None)  # Glow has no D
  r.G_ema = sampling.build_generator(config, r.device, copy=True) if config['ema'] else None
  # --channels_last, --compile; before the EMA, which holds on to the tensors.
  train_fns.apply_speed_options(config, r.G, r.D, r.G_ema)
  r.ema = None
  if config['ema']:
    print('Preparing EMA for G with decay of {}'.format(config['ema_decay']))
    r.ema = train_fns.ema(r.G, r.G_ema, config['ema_decay'], config['ema_start'])
  r.GD = model.G_D(r.G, r.D)
  if r.ctx.is_main:
    print(r.G)
    if r.D is not None:
      print(r.D)
    print('Number of params in G: {} D: {}'.format(
        *[sum(p.numel() for p in net.parameters()) if net is not None else 0
          for net in [r.G, r.D]]))
  train_fns.make_scalers(r.G, r.D, config, r.device)


def restore(r):
  """The state at iteration 0, or the checkpoint of --resume / --finetune_from; then G_D under
  DataParallel or DDP."""
  config = r.config
  r.state_dict = checkpoints.initial_state(config)
  # a --which_best beyond IS and FID; Glow's lowest held-out bits/dim
  r.state_dict.update(glow_fns.initial_state() if config['model'] == 'Glow'
                      else image_metrics.initial_best(config))
  r.saved = {}
  if r.source:
    # Rank 0 alone finishes or discards a save that was interrupted; the others wait, then read.
    if r.ctx.is_main:
      checkpoints.recover(os.path.join(config['weights_root'], r.source))
    distributed.barrier(r.ctx)
  if config['resume']:
    resume(r)
  elif config['finetune_from']:
    finetune(r)
  if config['parallel']:
    r.GD = torch.nn.DataParallel(r.GD)
  else:
    r.GD = distributed.wrap(r.GD, r.ctx)


def resume(r):
  """--resume: the newest complete set (or --load_weights SUFFIX), with its random states."""
  config = r.config
  suffix = config['load_weights'] or None
  if suffix is None:
    suffix, found = checkpoints.newest_save(config['weights_root'], r.experiment_name,
                                            recover=False)
    if r.ctx.is_main:
      print('Resuming from the newest complete checkpoint: %s (itr %d)'
            % (suffix or 'the plain files', found[suffix]))
  r.saved = checkpoints.load_weights(r.G, r.D, r.state_dict, config['weights_root'],
                                     r.experiment_name, suffix, r.G_ema, recover=False)
  r.state_dict['config'] = config
  for name, net in (('G', r.G), ('D', r.D)):
    if net is not None and net.scaler.is_enabled() and name + '_scaler' in r.saved:
      net.scaler.load_state_dict(r.saved[name + '_scaler'])


def finetune(r):
  """--finetune_from: its weights and optimizer states, at this run's learning rates and Adam
  constants; G_ema starts as G where that run had none."""
  config, source = r.config, r.config['finetune_from']
  suffix = config['load_weights'] or checkpoints.newest_save(
      config['weights_root'], source, '--finetune_from', recover=False)[0]
  print('Fine-tuning from %s (%s) into %s' % (source, suffix or 'the plain files',
                                              r.experiment_name))
  has_ema = os.path.exists(checkpoints.file_path(
      '%s/%s' % (config['weights_root'], source), 'G_ema', suffix))
  # D's auxiliary classifier may differ: a run without --AC_weight can be fine-tuned with it.
  checkpoints.load_weights(r.G, r.D, {}, config['weights_root'], source, suffix,
                           r.G_ema if has_ema else None, recover=False, optional=('classifier',))
  for name, net in (('G', r.G), ('D', r.D)):
    if net is None:
      continue
    settings = (Glow.optimizer_settings(config) if config['model'] == 'Glow' else
                {'lr': config[name + '_lr'], 'eps': config['adam_eps'],
                 'betas': (config[name + '_B1'], config[name + '_B2'])})
    for group in net.optim.param_groups:
      group.update(**settings)
  if config['ema'] and not has_ema:
    r.G_ema.load_state_dict(r.G.state_dict())


def prepare_loop(r):
  """Data, noise, the step, the metrics, logs, and the random streams where the checkpoint left
  them."""
  config = r.config
  glow = config['model'] == 'Glow'
  # Data: each D step consumes batch_size * num_D_accumulations images per process (Glow's step:
  # glow_fns.loader_options).
  D_batch_size = config['batch_size'] * config['num_D_steps'] * config['num_D_accumulations']
  data = glow_fns.loader_options(config) if glow else {'batch_size': D_batch_size}
  r.loader = datasets.get_data_loaders(**{**config, **data, 'start_itr': r.state_dict['itr']})[0]
  r.z_ = r.y_ = r.fixed_z = r.fixed_y = r.sample = None  # a flow samples by glow_fns
  if not glow:
    r.z_, r.y_ = sampling.prepare_noise(config, r.G.dim_z, r.device)
    r.fixed_z, r.fixed_y = sampling.fixed_noise(sampling.G_batch_size(config), r.G.dim_z,
                                                config['n_classes'], config['seed'], r.device,
                                                config['z_var'])
    r.sample = functools.partial(sampling.sample, G=train_fns.which_G(r.G, r.G_ema, config),
                                 z_=r.z_, y_=r.y_, config=config)
  step = config['which_train_fn']
  if glow and step == 'GAN':  # the default: the flow's own
    step = 'glow_fns.Glow_training_function'
  r.train = train_fns.training_function(step)(r.G, r.D, r.GD, r.z_, r.y_, r.ema, r.state_dict,
                                              config)
  r.sampler = r.loader.sampler
  run_length = (r.sampler.num_batches if config['use_multiepoch_sampler']
                else config['num_epochs'] * r.sampler.batches_per_epoch)
  r.total = min(config['num_iters'], run_length) if config['num_iters'] else run_length
  r.get_inception_metrics = r.test_loader = None
  r.evaluates = r.total // config['test_every'] > r.state_dict['itr'] // config['test_every']
  if r.evaluates and glow:  # held-out bits/dim
    r.test_loader = glow_fns.test_loader(config, r.ctx)
  elif r.evaluates:
    # Building the network draws its default init: off the training stream, so that a run's
    # numbers do not depend on whether it evaluates (a first leg shorter than --test_every).
    with torch.random.fork_rng(devices=[]):
      r.get_inception_metrics = image_metrics.prepare_metrics(config, r.device)
  open_logs(r)
  # Random streams: per rank for z/y; on resume, exactly where the checkpoint left them.
  if 'rng' in r.saved:
    checkpoints.set_rng_state(r.saved['rng'][min(r.ctx.rank, len(r.saved['rng']) - 1)])
  elif r.ctx.distributed:
    torch.manual_seed(config['seed'] + 1000003 * r.ctx.rank)
  # --DiffAugment / ADA / --LeCam (augment.SmallData): ADA's p, the augmentation streams, anchors.
  r.small_data = getattr(r.D, 'small_data', None)
  if r.small_data is not None:
    r.small_data.load_state_dict(r.saved, r.ctx.rank)


def open_logs(r):
  """Logs: fresh unless resuming, then cut back to the checkpoint's iteration; only now that the
  data and the metrics' files are known good, so a bad input leaves the old logs."""
  config, name = r.config, r.experiment_name
  test_log = train_log = None
  if r.ctx.is_main:
    if not config['resume']:  # an earlier run of this name is moved aside, never overwritten
      checkpoints.set_aside(name, config['weights_root'], config['logs_root'],
                            config['samples_root'])
    test_log = logger.MetricsLogger('%s/%s_log.jsonl' % (config['logs_root'], name),
                                    reinitialize=not config['resume'])
    train_log = logger.MyLogger('%s/%s' % (config['logs_root'], name),
                                reinitialize=not config['resume'], logstyle=config['logstyle'])
    if config['resume']:
      test_log.truncate(r.state_dict['itr'])
      train_log.truncate(r.state_dict['itr'])
    logger.write_metadata(config['logs_root'], name, config, r.state_dict)
  r.test_log = test_log
  r.tensorboard = (logger.TensorBoard('%s/%s/tb' % (config['logs_root'], name))
                   if config['tensorboard'] and r.ctx.is_main else None)
  # On every rank, so that all check for divergence at the same iterations; rank 0 alone writes.
  r.progress = logger.TrainLog(train_log if r.ctx.is_main else Discard(),
                               interval=config['sv_log_interval'] or 10, total=r.total,
                               start_itr=r.state_dict['itr'], pbar=config['pbar'],
                               tensorboard=r.tensorboard, quiet=not r.ctx.is_main)


def loop(r):
  """Training iterations until the end of the run or a preemption signal."""
  r.rng_devices = [torch.device(r.device).index or 0] if r.device.startswith('cuda') else []
  r.preemption = Preemption()
  r.deadline = (time.monotonic() + 60 * r.config['max_minutes'] if r.config['max_minutes']
                else None)
  print('Beginning training at iteration %d (epoch %d) of %d...'
        % (r.state_dict['itr'], r.state_dict['epoch'], r.total))
  try:
    for x, y in batches(r.loader, r.config['use_multiepoch_sampler']):
      if r.state_dict['itr'] >= r.total or iteration(r, x, y):
        break
  finally:
    r.preemption.close()


def iteration(r, x, y):
  """One training step, its logs, and at the iteration's end any evaluation, sampling and
  checkpoint it is due for; returns whether the run stops here."""
  config, state_dict = r.config, r.state_dict
  state_dict['itr'] += 1
  itr = state_dict['itr']
  for net in filter(None, (r.G, r.D, r.G_ema)):
    net.train()
  x, y = x.to(r.device, non_blocking=True), y.to(r.device, non_blocking=True)
  if config['channels_last']:
    x = x.contiguous(memory_format=torch.channels_last)
  metrics = r.train(x, y)
  if config['sv_log_interval'] > 0 and not itr % config['sv_log_interval']:
    metrics = {**metrics, **sv_values(r.G, r.D)}
  saving = not itr % config['save_every']
  testing = r.evaluates and not itr % config['test_every']
  out_of_time = r.deadline is not None and time.monotonic() >= r.deadline
  stopping = distributed.any_rank(r.preemption.requested or out_of_time, r.ctx) or itr >= r.total
  rows = r.progress.add(itr, metrics) or []
  if saving or testing or stopping:  # logs are complete up to any checkpoint
    rows += r.progress.flush()
  if rows or saving or stopping:
    check_finite(rows, tuple(filter(None, (r.G, r.D))), itr, state_dict, config,
                 r.experiment_name, r.ctx)
  if saving or testing or stopping:
    end_of_iteration(r, saving, testing, stopping)
  return stopping


def end_of_iteration(r, saving, testing, stopping):
  """Evaluation, sampling, then the checkpoint sets: written once the iteration is over, after
  its evaluation and sampling (which move G_ema's buffers), see checkpoints.py."""
  config, itr, sets = r.config, r.state_dict['itr'], []
  eval_mode(r)
  if testing:
    with torch.random.fork_rng(devices=r.rng_devices):  # keep evaluation off the training stream
      if r.test_loader is not None:  # Glow
        scores = glow_fns.test(r.G, r.G_ema, r.state_dict, config, r.test_loader, r.test_log,
                               sets=sets)
      else:
        scores = train_fns.test(
            r.G, r.D, r.G_ema, r.z_, r.y_, r.state_dict, config, r.sample,
            r.get_inception_metrics, r.experiment_name, r.test_log, is_main=r.ctx.is_main,
            sets=sets)
    if r.tensorboard is not None:
      r.tensorboard.scalars(itr, scores)
  if saving:
    with torch.random.fork_rng(devices=r.rng_devices):
      gen = torch.Generator(r.device).manual_seed(config['seed'] * 7919 + itr)
      if config['model'] == 'Glow':
        fixed = glow_fns.save_and_sample(r.G, r.G_ema, r.state_dict, config, r.experiment_name,
                                         is_main=r.ctx.is_main, generator=gen, sets=sets)
      else:
        fixed = train_fns.save_and_sample(
            r.G, r.D, r.G_ema, r.z_, r.y_, r.fixed_z, r.fixed_y, r.state_dict, config,
            r.experiment_name, is_main=r.ctx.is_main, generator=gen, sets=sets)
    if r.tensorboard is not None:
      r.tensorboard.image('fixed_samples', fixed, itr)
  elif stopping:
    sets.append((None, {}))  # the end of the run, or preemption: the plain files only
  save_state(r)
  if r.ctx.is_main:
    checkpoints.save_iteration(r.G, r.D, r.state_dict, config['weights_root'], r.experiment_name,
                               sets, r.G_ema)


def eval_mode(r):
  """--G_eval_mode for evaluation and sampling, and the same G buffers on every rank."""
  if r.config['G_eval_mode']:
    print('Switching G to eval mode...')
    r.G.eval()
    if r.G_ema is not None:
      r.G_ema.eval()
  # Without cross-replica BN the ranks' BN statistics differ, and G_ema averages them: evaluate
  # (and save) rank 0's on every rank.
  distributed.sync_buffers(r.G, r.ctx)
  distributed.sync_buffers(r.G_ema, r.ctx)


def save_state(r):
  """Everything beyond the original's fields that an exact resume needs."""
  state_dict, ctx = r.state_dict, r.ctx
  state_dict['rng'] = distributed.gather_objects(checkpoints.rng_state(), ctx)
  state_dict['G_scaler'] = r.G.scaler.state_dict()
  if r.D is not None:
    state_dict['D_scaler'] = r.D.scaler.state_dict()
  state_dict['epoch'] = r.sampler.epoch_of(state_dict['itr'])
  if r.small_data is not None:
    state_dict.update(r.small_data.state_dict(lambda obj: distributed.gather_objects(obj, ctx)))


def finish(r):
  """Close the logs, say where everything is, leave the process group."""
  r.progress.close()
  if r.tensorboard is not None:
    r.tensorboard.close()
  config, name = r.config, r.experiment_name
  if r.preemption.requested:
    print('Received %s: saved the checkpoint at iteration %d; continue with --resume.'
          % (r.preemption.requested, r.state_dict['itr']))
  elif config['max_minutes'] and r.state_dict['itr'] < r.total:
    print('Stopped after --max_minutes %g at iteration %d of %d: saved the checkpoint; continue '
          'with --resume. Weights: %s/%s' % (config['max_minutes'], r.state_dict['itr'], r.total,
                                             config['weights_root'], name))
  else:
    print('Finished at iteration %d. Weights: %s/%s, logs: %s/%s, samples: %s/%s'
          % (r.state_dict['itr'], config['weights_root'], name, config['logs_root'], name,
             config['samples_root'], name))
  distributed.cleanup(r.ctx)
  return r.state_dict


def main(argv=None):
  parser = configuration.prepare_parser()
  config = vars(parser.parse_args(argv))
  print(config)
  run(config)


if __name__ == '__main__':
  run_main(main)
  sys.exit(0)
