"""Train a BigGAN: the original BigGAN-PyTorch training script, on one device or many.

    python train.py --dataset Shapes --resolution 32 ...           # CPU or one GPU
    bash scripts/launch_BigGAN_bs256x8.sh                          # the original launchers
    torchrun --nproc_per_node 8 train.py ...                       # DDP (see distributed.py)

Writes weights_root/<exp>/{G,G_optim,D,D_optim,state_dict,G_ema}.pth (+ copy{n}, best{n}),
logs_root/<exp>_log.jsonl, logs_root/<exp>/*.log, samples_root/<exp>/... with <exp> the
experiment name (utils.name_from_config, or --experiment_name). --resume continues from the newest
complete checkpoint, bit-exactly on CPU: the checkpoint holds every random state and the data
position. SIGTERM / SIGUSR1 save at the next iteration boundary and exit 0. One train.py at a time
per experiment (a lock in weights_root/<exp>); without --resume an earlier run of the same name is
moved aside to <exp>.old-<date>, not overwritten.
"""
import functools
import math
import os
import signal
import sys

import torch

import checkpoints
import distributed
import logger
import metrics as image_metrics
import sampling
import train_fns
import utils
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


def fixed_noise(G_batch_size, dim_z, n_classes, seed, device, z_var):
  """The fixed z, y of fixed_samples{itr}.jpg, from their own generator: identical in every run
  of the experiment, including resumed ones."""
  gen = torch.Generator().manual_seed(seed)
  z = torch.randn(G_batch_size, dim_z, generator=gen) * z_var
  y = torch.randint(0, n_classes, (G_batch_size,), generator=gen)
  return z.to(device), y.to(device)


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
          for prefix, net in (('G', G), ('D', D))
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


@checkpoints.releases_locks
def run(config):
  config = utils.prepare_config(config, training=True)
  ctx = distributed.setup(config['device'])
  device = ctx.device
  if ctx.distributed and config['parallel']:
    print('Notice: --parallel (nn.DataParallel) is off under torchrun; DDP is used instead.')
    config['parallel'] = False
  if ctx.distributed and config['split_D']:
    raise UserError('--split_D runs D twice per backward pass, which DDP cannot synchronise; drop '
                    '--split_D under torchrun')
  experiment_name = config['experiment_name'] or utils.name_from_config(config)
  print('Experiment name is %s' % experiment_name)
  if ctx.is_main:
    utils.prepare_root(config)
  # One run per experiment folder, locked before anything is written (rank 0 holds the lock for
  # every rank); a --resume or --finetune_from without a folder fails before it is made.
  source = experiment_name if config['resume'] else config['finetune_from']
  if source and not os.path.isdir(os.path.join(config['weights_root'], source)):
    checkpoints.newest_save(config['weights_root'], source,
                            '--resume' if config['resume'] else '--finetune_from', recover=False)
  distributed.on_main(ctx, checkpoints.lock_run,
                      os.path.join(config['weights_root'], experiment_name))
  if config['tensorboard']:
    logger.summary_writer_class()  # installed? (before any work)
  torch.backends.cudnn.benchmark = True

  # Models: the same seed on every rank.
  utils.seed_rng(config['seed'])
  model = utils.load_model_module(config['model'])
  G = model.Generator(**config).to(device)
  D = model.Discriminator(**config).to(device)
  G_ema, ema = None, None
  if config['ema']:
    G_ema = model.Generator(**{**config, 'skip_init': True, 'no_optim': True}).to(device)
  # --channels_last, --compile; before the EMA, which holds on to the tensors.
  train_fns.apply_speed_options(config, G, D, G_ema)
  if config['ema']:
    print('Preparing EMA for G with decay of {}'.format(config['ema_decay']))
    ema = utils.ema(G, G_ema, config['ema_decay'], config['ema_start'])
  GD = model.G_D(G, D)
  if ctx.is_main:
    print(G)
    print(D)
    print('Number of params in G: {} D: {}'.format(
        *[sum(p.numel() for p in net.parameters()) for net in [G, D]]))
  train_fns.make_scalers(G, D, config, device)

  state_dict = {'itr': 0, 'epoch': 0, 'save_num': 0, 'save_best_num': 0, 'best_IS': 0,
                'best_FID': 999999, 'config': config}
  state_dict.update(image_metrics.initial_best(config))  # a --which_best beyond IS and FID
  saved = {}
  if source:
    # Rank 0 alone finishes or discards a save that was interrupted; the others wait, then read.
    if ctx.is_main:
      checkpoints.recover(os.path.join(config['weights_root'], source))
    distributed.barrier(ctx)
  if config['resume']:
    suffix = config['load_weights'] or None
    if suffix is None:
      suffix, found = checkpoints.newest_save(config['weights_root'], experiment_name,
                                              recover=False)
      if ctx.is_main:
        print('Resuming from the newest complete checkpoint: %s (itr %d)'
              % (suffix or 'the plain files', found[suffix]))
    saved = checkpoints.load_weights(G, D, state_dict, config['weights_root'], experiment_name,
                                     suffix, G_ema if config['ema'] else None, recover=False)
    state_dict['config'] = config
    for name, net in (('G', G), ('D', D)):
      if net.scaler.is_enabled() and name + '_scaler' in saved:
        net.scaler.load_state_dict(saved[name + '_scaler'])
  elif config['finetune_from']:
    suffix = config['load_weights'] or checkpoints.newest_save(
        config['weights_root'], config['finetune_from'], '--finetune_from', recover=False)[0]
    print('Fine-tuning from %s (%s) into %s' % (config['finetune_from'],
                                                suffix or 'the plain files', experiment_name))
    has_ema = os.path.exists(checkpoints.file_path(
        '%s/%s' % (config['weights_root'], config['finetune_from']), 'G_ema', suffix))
    checkpoints.load_weights(G, D, {}, config['weights_root'], config['finetune_from'], suffix,
                             G_ema if config['ema'] and has_ema else None, recover=False)
    # The optimizer states carry on, at this run's learning rates and Adam constants.
    for name, net in (('G', G), ('D', D)):
      for group in net.optim.param_groups:
        group.update(lr=config[name + '_lr'], eps=config['adam_eps'],
                     betas=(config[name + '_B1'], config[name + '_B2']))
    if config['ema'] and not has_ema:
      G_ema.load_state_dict(G.state_dict())
  if config['parallel']:
    GD = torch.nn.DataParallel(GD)
  else:
    GD = distributed.wrap(GD, ctx)

  # Data: each D step consumes batch_size * num_D_accumulations images per process.
  D_batch_size = config['batch_size'] * config['num_D_steps'] * config['num_D_accumulations']
  loader = utils.get_data_loaders(**{**config, 'batch_size': D_batch_size,
                                     'start_itr': state_dict['itr']})[0]
  G_batch_size = max(config['G_batch_size'], config['batch_size'])
  z_, y_ = sampling.prepare_z_y(G_batch_size, G.dim_z, config['n_classes'], device=device,
                                z_var=config['z_var'])
  fixed_z, fixed_y = fixed_noise(G_batch_size, G.dim_z, config['n_classes'], config['seed'],
                                 device, config['z_var'])
  if config['which_train_fn'] == 'dummy':
    train = train_fns.dummy_training_function()
  else:
    train = train_fns.training_function(config['which_train_fn'])(G, D, GD, z_, y_, ema,
                                                                  state_dict, config)
  sample_G = G_ema if config['ema'] and config['use_ema'] else G
  sample = functools.partial(sampling.sample, G=sample_G, z_=z_, y_=y_, config=config)
  sampler = loader.sampler
  run_length = (sampler.num_batches if config['use_multiepoch_sampler']
                else config['num_epochs'] * sampler.batches_per_epoch)
  total = min(config['num_iters'], run_length) if config['num_iters'] else run_length
  get_inception_metrics = None
  if total // config['test_every'] > state_dict['itr'] // config['test_every']:  # one is due
    # Building the network draws its default init: off the training stream, so that a run's
    # numbers do not depend on whether it evaluates (a first leg shorter than --test_every).
    with torch.random.fork_rng(devices=[]):
      get_inception_metrics = image_metrics.prepare_metrics(config, device)  # IS, FID, --metrics

  # Logs: fresh unless resuming, then cut back to the checkpoint's iteration; only now that
  # the data and the metrics' files are known good, so a bad input leaves the old logs.
  test_log = train_log = None
  if ctx.is_main:
    if not config['resume']:  # an earlier run of this name is moved aside, never overwritten
      checkpoints.set_aside(experiment_name, config['weights_root'], config['logs_root'],
                            config['samples_root'])
    test_log = logger.MetricsLogger('%s/%s_log.jsonl' % (config['logs_root'], experiment_name),
                                    reinitialize=not config['resume'])
    train_log = logger.MyLogger('%s/%s' % (config['logs_root'], experiment_name),
                                reinitialize=not config['resume'], logstyle=config['logstyle'])
    if config['resume']:
      test_log.truncate(state_dict['itr'])
      train_log.truncate(state_dict['itr'])
    utils.write_metadata(config['logs_root'], experiment_name, config, state_dict)
  tensorboard = (logger.TensorBoard('%s/%s/tb' % (config['logs_root'], experiment_name))
                 if config['tensorboard'] and ctx.is_main else None)

  # Random streams: per rank for z/y; on resume, exactly where the checkpoint left them.
  if 'rng' in saved:
    checkpoints.set_rng_state(saved['rng'][min(ctx.rank, len(saved['rng']) - 1)])
  elif ctx.distributed:
    torch.manual_seed(config['seed'] + 1000003 * ctx.rank)
  # --DiffAugment / ADA / --LeCam (augment.SmallData): ADA's p, the augmentation streams, anchors.
  small_data = getattr(D, 'small_data', None)
  if small_data is not None:
    small_data.load_state_dict(saved, ctx.rank)

  def save_state():
    """Everything beyond the original's fields that an exact resume needs."""
    state_dict['rng'] = distributed.gather_objects(checkpoints.rng_state(), ctx)
    state_dict['G_scaler'] = G.scaler.state_dict()
    state_dict['D_scaler'] = D.scaler.state_dict()
    state_dict['epoch'] = sampler.epoch_of(state_dict['itr'])
    if small_data is not None:
      state_dict.update(small_data.state_dict(lambda obj: distributed.gather_objects(obj, ctx)))

  def eval_mode():
    if config['G_eval_mode']:
      print('Switching G to eval mode...')
      G.eval()
      if G_ema is not None:
        G_ema.eval()
    # Without cross-replica BN the ranks' BN statistics differ, and G_ema averages them: evaluate
    # (and save) rank 0's on every rank.
    distributed.sync_buffers(G, ctx)
    distributed.sync_buffers(G_ema, ctx)

  rng_devices = [torch.device(device).index or 0] if device.startswith('cuda') else []
  preemption = Preemption()
  # On every rank, so that all check for divergence at the same iterations; rank 0 alone writes.
  progress = logger.TrainLog(train_log if ctx.is_main else Discard(),
                             interval=config['sv_log_interval'] or 10, total=total,
                             start_itr=state_dict['itr'], pbar=config['pbar'],
                             tensorboard=tensorboard, quiet=not ctx.is_main)
  print('Beginning training at iteration %d (epoch %d) of %d...'
        % (state_dict['itr'], state_dict['epoch'], total))
  try:
    for x, y in batches(loader, config['use_multiepoch_sampler']):
      if state_dict['itr'] >= total:
        break
      state_dict['itr'] += 1
      itr = state_dict['itr']
      for net in filter(None, (G, D, G_ema)):
        net.train()
      x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
      if config['channels_last']:
        x = x.contiguous(memory_format=torch.channels_last)
      metrics = train(x, y)
      if config['sv_log_interval'] > 0 and not itr % config['sv_log_interval']:
        metrics = {**metrics, **sv_values(G, D)}
      saving = not itr % config['save_every']
      testing = get_inception_metrics is not None and not itr % config['test_every']
      stopping = distributed.any_rank(preemption.requested, ctx) or itr >= total
      rows = progress.add(itr, metrics) or []
      if saving or testing or stopping:  # logs are complete up to any checkpoint
        rows += progress.flush()
      if rows or saving or stopping:
        check_finite(rows, (G, D), itr, state_dict, config, experiment_name, ctx)
      # Checkpoint sets are written once the iteration is over, after its evaluation and
      # sampling (which move G_ema's buffers): see checkpoints.py.
      sets = []
      if saving or testing or stopping:
        eval_mode()
      if testing:
        with torch.random.fork_rng(devices=rng_devices):  # keep evaluation off the training stream
          scores = train_fns.test(
              G, D, G_ema, z_, y_, state_dict, config, sample, get_inception_metrics,
              experiment_name, test_log, is_main=ctx.is_main, sets=sets)
        if tensorboard is not None:
          tensorboard.scalars(itr, scores)
      if saving or stopping:
        with torch.random.fork_rng(devices=rng_devices):
          if saving:
            gen = torch.Generator(device).manual_seed(config['seed'] * 7919 + itr)
            fixed = train_fns.save_and_sample(G, D, G_ema, z_, y_, fixed_z, fixed_y, state_dict,
                                              config, experiment_name, is_main=ctx.is_main,
                                              generator=gen, sets=sets)
            if tensorboard is not None:
              tensorboard.image('fixed_samples', fixed, itr)
          else:  # the end of the run, or preemption: the plain files only
            sets.append((None, {}))
      if saving or testing or stopping:
        save_state()
        if ctx.is_main:
          checkpoints.save_iteration(G, D, state_dict, config['weights_root'], experiment_name,
                                     sets, G_ema if config['ema'] else None)
      if stopping:
        break
  finally:
    preemption.close()
  progress.close()
  if tensorboard is not None:
    tensorboard.close()
  if preemption.requested:
    print('Received %s: saved the checkpoint at iteration %d; continue with --resume.'
          % (preemption.requested, state_dict['itr']))
  else:
    print('Finished at iteration %d. Weights: %s/%s, logs: %s/%s, samples: %s/%s'
          % (state_dict['itr'], config['weights_root'], experiment_name, config['logs_root'],
             experiment_name, config['samples_root'], experiment_name))
  distributed.cleanup(ctx)
  return state_dict


def main(argv=None):
  parser = utils.prepare_parser()
  config = vars(parser.parse_args(argv))
  print(config)
  run(config)


if __name__ == '__main__':
  run_main(main)
  sys.exit(0)
