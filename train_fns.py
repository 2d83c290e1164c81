"""The training step, sampling at save time, and evaluation, as in the original train_fns.py.

GAN_training_function(G, D, GD, z_, y_, ema, state_dict, config) returns train(x, y), which does
one BigGAN iteration: num_D_steps D steps of num_D_accumulations micro-batches each (the loader
batch is batch_size * num_D_steps * num_D_accumulations), then one G step of num_G_accumulations
micro-batches of G_batch_size, then the EMA update. Returns the last micro-batch's losses as
tensors (no host synchronisation; train.py reads them at log intervals).

Additions to the original: --amp autocast with GradScalers (G.scaler, D.scaler), DDP gradient
synchronisation only on the last micro-batch, --loss, --no_toggle_grads, and for small data
--DiffAugment / --ada_target / --LeCam (augment.SmallData: D's inputs augmented by a pre-hook, the
LeCam term in D's loss, ADA's p returned as ada_p), and --reuse_fakes (the G step scores the last D
step's fakes instead of generating its own: one G forward pass less).
"""
import contextlib
import importlib
import sys

import torch
import torch.nn.functional as F

import augment
import checkpoints
import distributed
import inception_utils
import layers
import losses
import metrics as image_metrics
import sampling
from errors import UserError


# --which_train_fn: name -> function of this module, looked up when called (a test or a hook may
# replace the function); module.function names one of your own.
TRAIN_FNS = {'GAN': 'GAN_training_function', 'dummy': 'dummy_training_function'}


def training_function(name):
  """--which_train_fn: one of TRAIN_FNS, or module.function of your own with the same
  signature as GAN_training_function (a hook for new losses or regularisers without editing
  this file)."""
  if name in TRAIN_FNS:
    return globals()[TRAIN_FNS[name]]
  module, _, function = name.rpartition('.')
  if module:
    try:
      return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError):
      pass
  raise UserError('--which_train_fn %s is unknown; use %s, or module.function of your own'
                  % (name, ', '.join(TRAIN_FNS)))


def dummy_training_function(*unused):
  """--which_train_fn dummy: moves the data and does nothing else (for timing the loader)."""
  def train(x, y):
    return {}
  return train


# ---------------------------------------------------------------------------------------------
# The original's helpers of the step (utils.toggle_grad, utils.ortho, utils.ema, ...)
# ---------------------------------------------------------------------------------------------


def toggle_grad(model, on_or_off):
  for param in model.parameters():
    param.requires_grad = on_or_off


def _ortho_grads(model, strength, blacklist, off_diagonal):
  with torch.no_grad():
    for param in model.parameters():
      if len(param.shape) < 2 or param.grad is None or any(param is b for b in blacklist):
        continue
      w = param.reshape(param.shape[0], -1)
      eye = torch.eye(w.shape[0], device=w.device, dtype=w.dtype)
      gram = torch.mm(w, w.t())
      gram = gram * (1. - eye) if off_diagonal else gram - eye
      param.grad.add_(strength * 2 * torch.mm(gram, w).reshape(param.shape))


def ortho(model, strength=1e-4, blacklist=()):
  """BigGAN's ortho reg: add the gradient of (strength/2) ||W W^T * (1 - I)||_F^2 to every weight
  of 2+ dimensions (each flattened to (out, -1)) not in blacklist."""
  _ortho_grads(model, strength, blacklist, off_diagonal=True)


def default_ortho(model, strength=1e-4, blacklist=()):
  """The classic ortho reg: the gradient of (strength/2) ||W W^T - I||_F^2."""
  _ortho_grads(model, strength, blacklist, off_diagonal=False)


class ema(object):
  """target = decay * target + (1 - decay) * source over every state_dict entry (weights and
  buffers), in one fused update per dtype; before start_itr the decay is 0 (a plain copy)."""

  def __init__(self, source, target, decay=0.9999, start_itr=0):
    self.source, self.target = source, target
    self.decay, self.start_itr = decay, start_itr
    self.source_dict = self.source.state_dict()
    self.target_dict = self.target.state_dict()
    print('Initializing EMA parameters to be source parameters...')
    with torch.no_grad():
      for key in self.source_dict:
        self.target_dict[key].copy_(self.source_dict[key])
    # Groups of (target, source) tensors that one foreach call can update.
    self.groups = {}
    for key in self.source_dict:
      t, s = self.target_dict[key], self.source_dict[key]
      group = self.groups.setdefault((t.dtype, t.device, t.is_floating_point()), ([], []))
      group[0].append(t)
      group[1].append(s)

  def update(self, itr=None):
    decay = 0.0 if (itr and itr < self.start_itr) else self.decay
    with torch.no_grad():
      for (_, _, floating), (targets, sources) in self.groups.items():
        if not floating or decay == 0.0:  # counters are copied, not averaged
          torch._foreach_copy_(targets, sources)
        else:
          torch._foreach_mul_(targets, decay)
          torch._foreach_add_(targets, sources, alpha=1 - decay)


# ---------------------------------------------------------------------------------------------
# Precision and speed options
# ---------------------------------------------------------------------------------------------


def autocast(config, device):
  """Autocast context for forward passes (a no-op without --amp)."""
  amp = config.get('amp', 'off')
  if amp == 'off':
    return contextlib.nullcontext()
  return torch.autocast(torch.device(device).type,
                        dtype=torch.bfloat16 if amp == 'bf16' else torch.float16)


def cpu_has_native_bf16():
  """AVX-512 BF16 or AMX: without them oneDNN emulates bf16 (measured here on an AVX2 CPU: about
  17x slower than fp32 per training iteration)."""
  try:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
  except (AttributeError, RuntimeError):
    return True  # cannot tell: say nothing


def make_scalers(G, D, config, device):
  """G.scaler / D.scaler: loss scaling for --amp fp16, pass-through otherwise."""
  if (config.get('amp') == 'bf16' and torch.device(device).type == 'cpu'
      and not cpu_has_native_bf16()):
    print('warning: this CPU has no native bfloat16 (AVX-512 BF16 or AMX), so --amp bf16 is '
          'emulated and many times slower than fp32 here; leave out --amp on this machine',
          file=sys.stderr, flush=True)
  enabled = config.get('amp', 'off') == 'fp16'
  for net in filter(None, (G, D)):  # a family without D (Glow): D is None
    net.scaler = torch.amp.GradScaler(torch.device(device).type, enabled=enabled)


def apply_speed_options(config, G, D, G_ema=None):
  """--channels_last (all three nets) and --compile (G.forward and D.forward). Call it before
  ema(G, G_ema): changing the memory format replaces the tensors an EMA holds on to."""
  if config.get('channels_last'):
    for net in filter(None, (G, D, G_ema)):
      net.to(memory_format=torch.channels_last)
  if config.get('compile'):
    for net in (G, D):
      net.forward = _plain_tensor_inputs(torch.compile(net.forward))


def _plain_tensor_inputs(fn):
  """torch.compile cannot trace tensor subclasses such as the z_ / y_ Distributions that the
  training step and sampling pass to G: hand it plain views of the same memory."""
  def call(*args, **kwargs):
    return fn(*[a.as_subclass(torch.Tensor) if isinstance(a, torch.Tensor) else a for a in args],
              **kwargs)
  return call


def _sync_unless(ddp, last):
  """DDP all-reduces gradients on the last micro-batch only."""
  if ddp is None or last:
    return contextlib.nullcontext()
  return ddp.no_sync()


def GAN_training_function(G, D, GD, z_, y_, ema, state_dict, config):
  """The original's training step: returns train(x, y) (see the module docstring)."""
  return GANStep(G, D, GD, z_, y_, ema, state_dict, config)


class GANStep(object):
  """train(x, y) of GAN_training_function: the D steps, then the G step, then the EMA."""

  def __init__(self, G, D, GD, z_, y_, ema, state_dict, config):
    self.G, self.D, self.GD, self.z_, self.y_ = G, D, GD, z_, y_
    self.ema, self.state_dict, self.config = ema, state_dict, config
    self.discriminator_loss, self.generator_loss = losses.get_losses(config.get('loss', 'hinge'))
    self.device = z_.device
    if not hasattr(G, 'scaler'):
      make_scalers(G, D, config, self.device)
    self.replicas = getattr(GD, 'replicas', {})
    self.announced = set()
    # --DiffAugment, ADA, --LeCam (augment.py): None when all are off; kept as D.small_data.
    self.small_data = augment.SmallData.from_config(config, self.device)
    if self.small_data is not None:
      self.small_data.attach(D)
    self.AC_weight = config.get('AC_weight', 0.0)
    self.ADC = config.get('AC_type', 'ac') == 'adc'
    self.AC_losses = {}
    self.reuse_fakes, self.fakes = config.get('reuse_fakes', False), None

  def auxiliary(self, D_out, labels=None, key=None, role='real'):
    """D's adversarial column, and with --AC_weight the weighted loss of its class logits
    (0 without labels; kept in AC_losses[key] for the log). role: 'real' (D's step on reals),
    'fake' (D's step on fakes) or 'G' (G's step). AC-GAN: D learns the classes of reals only
    (fakes' classes would teach it G's mistakes), G the cross-entropy of its fakes' classes.
    ADC-GAN: D learns real class c as 2c and fake class c as 2c + 1; G lowers the cross-entropy
    of 2c and raises that of 2c + 1."""
    if not self.AC_weight:
      return D_out, 0.0
    if labels is None or (role == 'fake' and not self.ADC):
      return D_out[:, :1], 0.0
    logits, labels = D_out[:, 1:].float(), labels.as_subclass(torch.Tensor).long()
    if not self.ADC:
      loss = F.cross_entropy(logits, labels)
    elif role == 'G':
      loss = F.cross_entropy(logits, 2 * labels) - F.cross_entropy(logits, 2 * labels + 1)
    else:
      loss = F.cross_entropy(logits, 2 * labels + (role == 'fake'))
    self.AC_losses[key] = loss.detach()
    return D_out[:, :1], self.AC_weight * loss

  def announce(self, text):
    if text not in self.announced:
      print(text)
      self.announced.add(text)

  def __call__(self, x, y):
    G, D, config = self.G, self.D, self.config
    G.optim.zero_grad(set_to_none=True)
    D.optim.zero_grad(set_to_none=True)
    bs = config['batch_size']
    # A short batch would leave a micro-batch short, yet weighted as a full one.
    needed = bs * config['num_D_steps'] * config['num_D_accumulations']
    if len(x) < needed:
      raise UserError('the loader batch has %d samples, but --batch_size %d x --num_D_steps %d x '
                      '--num_D_accumulations %d needs %d per iteration; give the loader batches '
                      'of %d' % (len(x), bs, config['num_D_steps'],
                                 config['num_D_accumulations'], needed, needed))
    if config['toggle_grads']:
      toggle_grad(D, True)
      toggle_grad(G, False)
    D_loss_real, D_loss_fake = self.D_steps(torch.split(x, bs), torch.split(y, bs))
    # Under DDP, D is always frozen during the G step: its gradients there are never used, and
    # DDP must not see them.
    if config['toggle_grads'] or self.replicas:
      toggle_grad(D, False)
      toggle_grad(G, True)
    G_loss = self.G_step()
    if self.replicas and not config['toggle_grads']:
      toggle_grad(D, True)
    if config['ema']:
      self.ema.update(self.state_dict['itr'])
    out = {'G_loss': G_loss.detach(), 'D_loss_real': D_loss_real.detach(),
           'D_loss_fake': D_loss_fake.detach()}
    if self.small_data is not None:
      out.update(self.small_data.update(self.state_dict['itr']))
    out.update(self.AC_losses)
    return out

  def D_steps(self, x, y):
    """num_D_steps steps of num_D_accumulations micro-batches; returns the last one's losses."""
    D, z_, y_, config = self.D, self.z_, self.y_, self.config
    bs, accumulations, counter = config['batch_size'], config['num_D_accumulations'], 0
    for step in range(config['num_D_steps']):
      D.optim.zero_grad(set_to_none=True)
      for accumulation_index in range(accumulations):
        z_.sample_()
        y_.sample_()
        last = accumulation_index == accumulations - 1
        fakes = (self.keep_fakes() if self.reuse_fakes and step == config['num_D_steps'] - 1
                 else None)
        with _sync_unless(self.replicas.get('D'), last):
          with autocast(config, self.device):
            D_fake, D_real = self.GD(z_[:bs], y_[:bs], x[counter], y[counter], train_G=False,
                                     split_D=config['split_D'], G_z=fakes)
          D_fake, AC_loss_fake = self.auxiliary(D_fake, y_[:bs], 'AC_loss_D_fake', 'fake')
          D_real, AC_loss = self.auxiliary(D_real, y[counter], 'AC_loss_real')
          D_loss_real, D_loss_fake = self.discriminator_loss(D_fake, D_real)
          D_loss = (D_loss_real + D_loss_fake + AC_loss + AC_loss_fake) / float(accumulations)
          if self.small_data is not None:
            D_loss = D_loss + self.small_data.D_terms(D_real, D_fake) / float(accumulations)
          D.scaler.scale(D_loss).backward()
        counter += 1
      if config['D_ortho'] > 0.0:
        self.announce('using modified ortho reg in D')
        D.scaler.unscale_(D.optim)
        ortho(D, config['D_ortho'])
      D.scaler.step(D.optim)
      D.scaler.update()
    return D_loss_real, D_loss_fake

  def keep_fakes(self):
    """--reuse_fakes: the last D step's fakes, generated with G's graph (under DDP through G's
    replica) and kept for the G step; D's step sees them detached."""
    if self.config['toggle_grads']:
      toggle_grad(self.G, True)
    with autocast(self.config, self.device):
      self.fakes = self.GD.generate(self.z_, self.y_, True)
    return self.fakes.detach()

  def G_step(self):
    """One G step of num_G_accumulations micro-batches; returns the last one's loss. With
    --reuse_fakes it scores the kept fakes (z_ and y_ still hold their noise and classes)."""
    G, z_, y_, config = self.G, self.z_, self.y_, self.config
    G.optim.zero_grad(set_to_none=True)
    accumulations = config['num_G_accumulations']
    for accumulation_index in range(accumulations):
      fakes, self.fakes = self.fakes, None
      if fakes is None:
        z_.sample_()
        y_.sample_()
      last = accumulation_index == accumulations - 1
      with _sync_unless(self.replicas.get('G'), last):
        with autocast(config, self.device):
          D_fake = self.GD(z_, y_, train_G=True, split_D=config['split_D'], G_z=fakes)
        D_fake, AC_loss = self.auxiliary(D_fake, y_, 'AC_loss_fake', 'G')
        G_loss = (self.generator_loss(D_fake) + AC_loss) / float(accumulations)
        G.scaler.scale(G_loss).backward()
    if config['G_ortho'] > 0.0:
      self.announce('using modified ortho reg in G')
      G.scaler.unscale_(G.optim)
      # The shared embedding is not a weight matrix in the ortho-reg sense.
      ortho(G, config['G_ortho'], blacklist=[param for param in G.shared.parameters()])
    G.scaler.step(G.optim)
    G.scaler.update()
    return G_loss


def which_G(G, G_ema, config):
  return G_ema if config['ema'] and config['use_ema'] else G


def standing_stats(net, z_, y_, config):
  """Standing statistics on every process (in step, for cross-replica BN), then rank 0's for all:
  each rank drew its own z, and every rank must sample and save the same G."""
  sampling.accumulate_standing_stats(net, z_, y_, config['n_classes'],
                                     config['num_standing_accumulations'])
  distributed.sync_buffers(net)


def save_and_sample(G, D, G_ema, z_, y_, fixed_z, fixed_y, state_dict, config, experiment_name,
                    is_main=True, generator=None, sets=None):
  """Save the plain and the rotating copy{n} checkpoint, then write fixed samples, class sheets and
  interpolation sheets for this iteration (main process only; `generator` keeps the sheets off the
  global random stream). With a list `sets`, the checkpoints are appended to it as (suffix, {}) for
  the caller to write after the sampling (checkpoints.save_iteration) instead."""
  if sets is not None:
    add_saved_sets(state_dict, config, sets)
  elif is_main:
    checkpoints.save_weights(G, D, state_dict, config['weights_root'], experiment_name, None,
                             G_ema if config['ema'] else None)
    if config['num_save_copies'] > 0:
      checkpoints.save_weights(G, D, state_dict, config['weights_root'], experiment_name,
                               'copy%d' % state_dict['save_num'], G_ema if config['ema'] else None)
  if sets is None and config['num_save_copies'] > 0:
    state_dict['save_num'] = (state_dict['save_num'] + 1) % config['num_save_copies']

  net = which_G(G, G_ema, config)
  if config['accumulate_stats']:
    standing_stats(net, z_, y_, config)
  fixed_Gz = _sample_sheets(net, z_, fixed_z, fixed_y, state_dict, config, experiment_name,
                            generator) if is_main else None
  if net.training:  # rank 0's sampling moved its SN vectors and BN statistics: all go on from them
    distributed.sync_buffers(net)
  return fixed_Gz


def add_saved_sets(state_dict, config, sets):
  """A save's checkpoint sets, appended to `sets` as (suffix, {}) for checkpoints.save_iteration:
  the plain set and the rotating copy{n} (save_num advanced)."""
  sets.append((None, {}))
  if config['num_save_copies'] > 0:
    sets.append(('copy%d' % state_dict['save_num'], {}))
    state_dict['save_num'] = (state_dict['save_num'] + 1) % config['num_save_copies']


def add_best_set(state_dict, config, sets, best_key):
  """A new best value's set best{n}, appended to `sets` with the state fields it keeps from
  before its evaluation (checkpoints.py); save_best_num advanced."""
  kept = ('best_IS', 'best_FID', 'save_best_num') + ((best_key,) if best_key not in
                                                      ('best_IS', 'best_FID') else ())
  sets.append(('best%d' % state_dict['save_best_num'], {k: state_dict[k] for k in kept}))
  state_dict['save_best_num'] = (state_dict['save_best_num'] + 1) % config['num_best_copies']


def _sample_sheets(net, z_, fixed_z, fixed_y, state_dict, config, experiment_name, generator):
  """This iteration's fixed samples, class sheets and interpolation sheets from `net`."""
  with layers.local_batch_statistics():
    fixed_Gz = sampling.run_G(net, fixed_z, net.shared(fixed_y), config['parallel'])
    sampling.save_grid(fixed_Gz, '%s/%s/fixed_samples%d.jpg' % (
        config['samples_root'], experiment_name, state_dict['itr']),
        nrow=int(fixed_Gz.shape[0] ** 0.5))
    sampling.sample_sheet(net, classes_per_sheet=config['classes_per_sheet'],
                          num_classes=config['n_classes'], samples_per_class=10,
                          parallel=config['parallel'], samples_root=config['samples_root'],
                          experiment_name=experiment_name, folder_number=state_dict['itr'],
                          z_=z_, generator=generator)
    for fix_z, fix_y in zip([False, False, True], [False, True, False]):
      sampling.interp_sheet(net, num_per_sheet=16, num_midpoints=8,
                            num_classes=config['n_classes'], parallel=config['parallel'],
                            samples_root=config['samples_root'], experiment_name=experiment_name,
                            folder_number=state_dict['itr'], sheet_number=0, fix_z=fix_z,
                            fix_y=fix_y, generator=generator)
  return fixed_Gz


def test(G, D, G_ema, z_, y_, state_dict, config, sample, get_inception_metrics, experiment_name,
         test_log, is_main=True, sets=None):
  """IS/FID (and --metrics) of the sampling G; a better value (--which_best, in its metric's
  direction) saves a best{n} copy (with a list `sets`: appends it as (suffix, the state fields it
  keeps from before this evaluation), for the caller to write at the end of the iteration).
  Logged to the jsonl with the Inception network used; returns the scalar scores."""
  print('Gathering inception metrics...')
  net = which_G(G, G_ema, config)
  if config['accumulate_stats']:
    standing_stats(net, z_, y_, config)
  # Under torchrun every rank samples its share of the images, and the shares can need different
  # numbers of batches: a train-mode cross-replica BN (no --G_eval_mode) must not all-reduce.
  with layers.local_batch_statistics():
    scores = get_inception_metrics(sample, config['num_inception_images'])
  if net.training:  # sampling moved the ranks' BN statistics and SN vectors apart
    distributed.sync_buffers(net)
  # Scalars only (IFID's per-class values are evaluate.py's); NaN for what was not computed.
  scores = {k: float('nan') if v is None else float(v) for k, v in scores.items()
            if not isinstance(v, dict)}
  if config['no_fid']:
    scores['FID'] = float('nan')
  IS_mean, IS_std, FID = scores['IS_mean'], scores['IS_std'], scores['FID']
  extra = {k: v for k, v in scores.items() if k not in ('IS_mean', 'IS_std', 'FID')}
  network = config.get('inception_net', 'torchvision')
  resize = getattr(get_inception_metrics, 'resize', None)
  resize = None if resize in (None, inception_utils.NATIVE_RESIZE[network]) else resize
  print('Itr %d: Inception Score is %3.3f +/- %3.3f, FID is %5.4f%s (%s network%s)'
        % (state_dict['itr'], IS_mean, IS_std, FID,
           ''.join(', %s is %.5g' % kv for kv in extra.items()), network,
           ', %s resize' % resize if resize else ''))
  key, higher, best_key = image_metrics.best_metric(config['which_best'])
  value = scores[key]
  best = float(state_dict.setdefault(best_key, -float('inf') if higher else float('inf')))
  improved = value > best if higher else value < best
  if improved:
    print('%s improved over previous best, saving checkpoint...' % config['which_best'])
    if sets is not None:
      add_best_set(state_dict, config, sets, best_key)
    else:
      if is_main:
        checkpoints.save_weights(G, D, state_dict, config['weights_root'], experiment_name,
                                 'best%d' % state_dict['save_best_num'],
                                 G_ema if config['ema'] else None)
      state_dict['save_best_num'] = (state_dict['save_best_num'] + 1) % config['num_best_copies']
  state_dict['best_IS'] = max(float(state_dict['best_IS']), float(IS_mean))
  if FID == FID:  # not NaN
    state_dict['best_FID'] = min(float(state_dict['best_FID']), FID)
  if best_key not in ('best_IS', 'best_FID') and value == value:
    state_dict[best_key] = max(best, value) if higher else min(best, value)
  if is_main and test_log is not None:
    # The original's keys, the network, then the other metrics (and a resize policy that is
    # not the network's own); null for what was not computed.
    test_log.log(itr=int(state_dict['itr']), IS_mean=float(IS_mean), IS_std=float(IS_std),
                 FID=(FID if FID == FID else None), inception_net=network,
                 **{k: (v if v == v else None) for k, v in extra.items()},
                 **({'inception_resize': resize} if resize else {}))
  return scores
