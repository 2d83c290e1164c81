"""Checkpoints in the original's layout, written atomically and loaded safely; one training run per
experiment folder.

A save is the set weights_root/<exp>/{G, G_optim, D, D_optim, G_ema, state_dict}{_suffix}.pth,
exactly the files the original writes and reads (suffixes: '', copy{n}, best{n}); a family
without D (Glow) has no D, D_optim.

Atomic: the model files of a set are first written in full to <file>.new (flushed and fsynced);
the state file is written to state_dict<_suffix>.pth.part, fsynced, and only then renamed to
state_dict<_suffix>.pth.new. That rename is the commit: a .new state file only ever exists
complete, after every other file of its set. Then the files are renamed over the old ones, state
last. A crash before the commit leaves the old set (`recover` drops the .new and .part files); a
crash after it leaves a complete new set, which `recover` finishes renaming. Either way a loader
never sees a mixture of two saves.

Exact resume: a set holds the state as it stands at the end of its iteration. The original saved
and then sampled its fixed samples, sheets and interpolations; sampling G_ema (or G) in training
mode, or accumulating standing statistics, moves power-iteration vectors and BN statistics, so its
run went on from a state that no checkpoint held, and a resumed run drifted from the uninterrupted
one. Undoing the sampling's effect would change the original's trajectory, of which it is part; so
train.py samples and evaluates first and writes afterwards (`save_iteration`), with the random
states, the copy rotation and every other counter as they stand when the iteration ends (save_num
already advanced: the original's files held the value before its increment, so its resume wrote
the next copy over the newest one). Within an iteration the plain set comes first, then copy{n},
then best{n}: a crash between them leaves the plain set, the newest, which resumes exactly (a
best{n} due at that moment is then not written). best{n} keep the original's bookkeeping (best_IS,
best_FID and save_best_num from before their evaluation), so a best{n} due at an iteration without
a regular save brings a plain set of that iteration with it, and the newest set is never a best.

Safe: every file is read with torch.load(weights_only=True). The original pickled nn.ReLU modules
(and sometimes numpy scalars) inside state_dict.pth, so exactly those classes are allow-listed; any
other object in a checkpoint is refused before it can run.

One run per folder: `lock_run` takes an advisory lock (fcntl.flock) on weights_root/<exp>/train.lock
before a run writes anything; the OS frees it when the process ends, even by SIGKILL, so a killed
run never blocks its --resume. A second train.py on the folder stops with the holder's PID and host.
`set_aside` moves an earlier run of the same name out of the way when a run starts over without
--resume (the original deleted its logs and overwrote its checkpoints).
"""
import errno
import functools
import os
import random
import socket
import sys
import time

import numpy as np
import torch
import torch.nn as nn

import errors
from errors import UserError

MODEL_FILES = ('G', 'G_optim', 'D', 'D_optim', 'G_ema')
STATE_FILE = 'state_dict'
NEW = '.new'    # a file of a set, written in full; a .new state file commits its set
PART = '.part'  # the state file while it is written (never trusted, always discarded)


def join_strings(base_string, strings):
  return base_string.join([item for item in strings if item])


def file_path(root, name, suffix=None):
  return '%s/%s.pth' % (root, join_strings('_', [name, suffix]))


# ---------------------------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------------------------


def _allowed_globals():
  """What the original's files may contain besides tensors and plain Python values."""
  allowed = [nn.ReLU, np.dtype]
  for name in ('Float64DType', 'Float32DType', 'Int64DType'):
    if hasattr(np, 'dtypes') and hasattr(np.dtypes, name):
      allowed.append(getattr(np.dtypes, name))
  try:
    from numpy._core.multiarray import scalar
  except ImportError:  # numpy < 2
    from numpy.core.multiarray import scalar
  # Files written under numpy 1.x name the scalar constructor numpy.core.multiarray.scalar.
  allowed += [scalar, (scalar, 'numpy.core.multiarray.scalar'),
              (scalar, 'numpy._core.multiarray.scalar')]
  return allowed


def safe_load(path, map_location='cpu'):
  """torch.load with weights_only=True and the original's classes allow-listed."""
  try:
    with torch.serialization.safe_globals(_allowed_globals()):
      return torch.load(path, map_location=map_location, weights_only=True)
  except FileNotFoundError:
    raise UserError('checkpoint file %s does not exist; check --weights_root, --experiment_name '
                    'and --load_weights' % path)
  except Exception as e:  # noqa: BLE001 (pickle errors of every kind)
    blocked = _first_line_with(str(e), 'GLOBAL')  # torch names the global it refused
    if blocked:
      raise UserError('refusing to load %s: it contains Python objects that could run code '
                      '(%s); only tensors and the original BigGAN-PyTorch config are allowed: '
                      'use a checkpoint from a source you trust' % (path, blocked))
    raise UserError('cannot read checkpoint %s (%s: %s); the file is truncated or not a PyTorch '
                    'checkpoint: load another save (--load_weights copy0, copy1, ...) or train '
                    'again' % (path, type(e).__name__, errors.reason(e)))


def _first_line_with(text, word):
  for line in text.splitlines():
    if word in line:
      return line.strip()
  return ''


# ---------------------------------------------------------------------------------------------
# Atomic saving
# ---------------------------------------------------------------------------------------------


def _write(obj, path):
  """torch.save, flushed and fsynced; any failure to write is an OSError. (torch's zip writer
  reports a failed write of the file as a RuntimeError 'unexpected pos'; the file's own error,
  such as ENOSPC, comes out of the flush that follows.)"""
  f = open(path, 'wb')
  try:
    try:
      torch.save(obj, f)
    except RuntimeError as e:
      if 'inline_container' not in str(e) and 'PytorchStreamWriter' not in str(e):
        raise  # not a write failure: a bug, keep its traceback
      f.flush()
      raise OSError(errno.EIO, 'the write failed', path)
    f.flush()
    os.fsync(f.fileno())
  except BaseException:
    try:
      f.close()
    except OSError:
      pass  # the unwritten buffer fails again; the first error is the one to report
    raise
  f.close()


def _fsync_dir(root):
  try:
    fd = os.open(root, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def plain_config(config):
  """The config without objects (the original stored nn.ReLU modules, which breaks safe loading
  and the original's own re-derivation does not need)."""
  return {k: v for k, v in config.items()
          if v is None or isinstance(v, (bool, int, float, str, list, tuple, dict))}


def plain_state(state_dict):
  """state_dict.pth contents the original can read and weights_only can load."""
  out = {}
  for key, value in state_dict.items():
    if key == 'config':
      value = plain_config(value)
    elif key in ('best_IS', 'best_FID'):
      value = float(value)
    out[key] = value
  return out


def _remove_quietly(path):
  """Best-effort cleanup after a failure (a leftover temporary is dropped by `recover` later)."""
  try:
    os.remove(path)
  except OSError:
    pass


def save_weights(G, D, state_dict, weights_root, experiment_name, name_suffix=None, G_ema=None):
  """Write one checkpoint set atomically (the original's signature and files; a family without
  D, such as Glow, passes D None and writes no D, D_optim)."""
  items = [('G', G.state_dict()), ('G_optim', G.optim.state_dict())]
  if D is not None:
    items += [('D', D.state_dict()), ('D_optim', D.optim.state_dict())]
  if G_ema is not None:
    items.append(('G_ema', G_ema.state_dict()))
  save_set('/'.join([weights_root, experiment_name]), items, state_dict, name_suffix)


def save_iteration(G, D, state_dict, weights_root, experiment_name, sets, G_ema=None):
  """Write the sets due at the end of an iteration, [(suffix, state overrides)]: the plain set
  first (also when only a best{n} is due), then copy{n}, then best{n} (see the module doc)."""
  if not sets:
    return
  due = dict(sets)
  due.setdefault(None, {})
  for suffix in sorted(due, key=lambda s: (s is not None, not str(s).startswith('copy'), str(s))):
    save_weights(G, D, {**state_dict, **due[suffix]}, weights_root, experiment_name, suffix, G_ema)


def save_set(root, items, state_dict, name_suffix=None):
  """Write the files [(name, state)] and then the state file of one set in `root`, atomically:
  every file goes to a temporary name in full, the state file's rename commits the set."""
  try:
    os.makedirs(root, exist_ok=True)
  except OSError as e:
    raise UserError('could not create the checkpoint folder %s (%s); fix --weights_root or its '
                    'permissions' % (root, errors.os_reason(e)))
  recover(root)  # a .new state file left by an interrupted save must not commit this save's files
  print('Saving weights to %s%s...' % (root, '/' + name_suffix if name_suffix else ''))
  paths = [file_path(root, name, name_suffix) for name, _ in items]
  state_path = file_path(root, STATE_FILE, name_suffix)
  try:
    for (_, obj), path in zip(items, paths):
      _write(obj, path + NEW)
    _write(plain_state(state_dict), state_path + PART)
    _fsync_dir(root)  # the model files are durable under their names before the commit
    os.replace(state_path + PART, state_path + NEW)  # the commit
  except OSError as e:
    for path in paths + [state_path]:
      _remove_quietly(path + NEW)
    _remove_quietly(state_path + PART)
    raise UserError('could not write checkpoint %s (%s); the previous checkpoint there is intact. '
                    'Free space or fix permissions, then --resume'
                    % (state_path, errors.os_reason(e)))
  _fsync_dir(root)
  try:
    for path in paths + [state_path]:  # state_dict last: its rename completes the set
      os.replace(path + NEW, path)
  except OSError as e:
    raise UserError('could not rename the new checkpoint files in %s into place (%s); the new '
                    'checkpoint is complete under .new names and --resume (or any load) finishes '
                    'it once the folder is writable again' % (root, errors.os_reason(e)))
  _fsync_dir(root)


def _warn(message):
  print('warning: %s' % message, file=sys.stderr, flush=True)


def recover(root):
  """Finish or undo any save that was interrupted in `root`. Returns the suffixes touched."""
  return _recover(root)


def _recover(root):
  """The body of `recover`, callable where a `recover=` keyword shadows that name."""
  if not os.path.isdir(root) or in_use(root):  # a running train.py finishes its own saves
    return []
  try:
    return _recover_files(root)
  except OSError as e:
    raise UserError('could not finish an interrupted save in %s (%s: %s); make the folder '
                    'writable (or free space), then run again'
                    % (root, e.filename or root, errors.os_reason(e)))


def _recover_files(root):
  touched = []
  files = os.listdir(root)
  for f in sorted(f for f in files if f.endswith('.pth' + PART)):  # killed before the commit
    os.remove(os.path.join(root, f))
    print('Discarded a half-written %s in %s' % (f, root))
  pending = sorted(f for f in files if f.endswith('.pth' + NEW))
  suffixes = sorted({_suffix_of(f[:-len(NEW)]) for f in pending}, key=str)
  for suffix in suffixes:
    members = [f for f in pending if _suffix_of(f[:-len(NEW)]) == suffix]
    state_new = os.path.basename(file_path(root, STATE_FILE, suffix)) + NEW
    complete = state_new in members and _readable(os.path.join(root, state_new))
    for f in sorted(members, key=lambda f: f == state_new):  # state_dict last
      if complete:
        os.replace(os.path.join(root, f), os.path.join(root, f[:-len(NEW)]))
      else:
        os.remove(os.path.join(root, f))
    print('%s an interrupted save%s in %s' % ('Completed' if complete else 'Discarded',
                                              ' (%s)' % suffix if suffix else '', root))
    touched.append(suffix)
  return touched


def _readable(path):
  """A committed state file always is; one renamed to .new by older code (or by a writer without
  the .part step) may have been cut short, and then its set is not complete."""
  try:
    safe_load(path)
    return True
  except UserError as e:
    _warn('not completing an interrupted save: %s' % e)
    return False


def _suffix_of(filename):
  """'G_ema_copy1.pth' -> 'copy1'; 'G_optim.pth' -> None."""
  stem = filename[:-len('.pth')]
  for name in sorted(MODEL_FILES + (STATE_FILE,), key=len, reverse=True):
    if stem == name:
      return None
    if stem.startswith(name + '_'):
      return stem[len(name) + 1:]
  return stem


def complete_saves(root, unreadable=None):
  """{suffix: itr} of the sets in root that have every file a resume needs (G, G_optim, and D,
  D_optim unless the set has neither: a family without D). A set whose state file cannot be read
  is skipped with a warning (and the reason appended to `unreadable`), so one bad copy does not
  hide the good ones."""
  found = {}
  if not os.path.isdir(root):
    return found
  for f in sorted(os.listdir(root)):
    if not f.endswith('.pth') or not f.startswith(STATE_FILE):
      continue
    suffix = _suffix_of(f)
    needed = [file_path(root, name, suffix) for name in ('G', 'G_optim', 'D', 'D_optim')]
    if not any(os.path.exists(p) for p in needed[2:]):
      needed = needed[:2]
    if not all(os.path.exists(p) for p in needed):
      continue
    path = os.path.join(root, f)
    try:
      state = safe_load(path)
      found[suffix] = int(state['itr'])
    except (UserError, KeyError, TypeError, ValueError) as e:
      message = str(e) if isinstance(e, UserError) else (
          '%s has no iteration count (itr)' % path)
      _warn('skipping the %s checkpoint set: %s' % (suffix or 'plain', message))
      if unreadable is not None:
        unreadable.append(message)
  return found


def newest_save(weights_root, experiment_name, flag='--resume', recover=True):
  """The suffix of the newest complete set (None = the plain files), after recovering any
  interrupted save (recover=False skips that, for all but one process of a distributed run);
  UserError (about `flag`) if there is none."""
  root = '/'.join([weights_root, experiment_name])
  if recover:
    _recover(root)
  unreadable = []
  saves = complete_saves(root, unreadable)
  if not saves:
    raise UserError('%s: no complete checkpoint in %s%s; %s' % (
        flag, root, ' (skipped: %s)' % '; '.join(unreadable) if unreadable else '', (
            'train without --resume first, or point --weights_root / --experiment_name at an '
            'existing run' if flag == '--resume' else
            'point %s / --weights_root at an existing run' % flag)))
  # Newest iteration; on a tie the plain files, then copies, then bests.
  order = lambda s: (saves[s], s is None, str(s).startswith('copy'))  # noqa: E731
  return max(saves, key=order), saves


def own_implementation(optimizer, state):
  """An optimizer's file also holds the implementation it ran with (foreach, fused), and PyTorch's
  load_state_dict takes it from there (with where it puts Adam's step counters: on the
  parameters' device only when fused); the one this run built (--fused_optim) is kept instead."""
  groups = state.get('param_groups') if isinstance(state, dict) else None
  if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
    return state  # load_state_dict says what does not fit
  keys = ('foreach', 'fused')
  return {**state, 'param_groups': [
      {**saved, **{key: group[key] for key in keys if key in group}}
      for saved, group in zip(groups, optimizer.param_groups)]}


def load_weights(G, D, state_dict, weights_root, experiment_name, name_suffix=None, G_ema=None,
                 strict=True, load_optim=True, recover=True, optional=()):
  """Load a set into the given models and state_dict (the original's signature and semantics:
  every key of `state_dict` is taken from the file). Tensors go to each model's device.
  recover=False skips finishing interrupted saves (when another process already did).
  optional: names of D's last-registered submodules (the auxiliary 'classifier') that D and the
  file may differ in, for fine-tuning (see fit_optional)."""
  root = '/'.join([weights_root, experiment_name])
  if recover:
    _recover(root)
  print('Loading %sweights from %s...' % (name_suffix + ' ' if name_suffix else '', root))

  def read(name, target):
    if isinstance(target, nn.Module):
      device = next(iter(target.state_dict().values())).device
    else:  # an optimizer: the device of its parameters
      device = target.param_groups[0]['params'][0].device
    return safe_load(file_path(root, name, name_suffix), device)

  def load_into(target, name, strict=True, state=None):
    state = read(name, target) if state is None else state
    if isinstance(target, nn.Module):
      load = functools.partial(target.load_state_dict, strict=strict)
    else:
      load, state = target.load_state_dict, own_implementation(target, state)
    try:
      load(state)
    except (RuntimeError, ValueError, KeyError) as e:
      raise UserError('%s does not fit the model built from these flags (%s); use the flags of '
                      'the run that wrote it' % (file_path(root, name, name_suffix),
                                                 errors.reason(e)))

  if G is not None:
    load_into(G, 'G', strict)
    if load_optim:
      load_into(G.optim, 'G_optim')
  if D is not None:
    D_state = read('D', D)
    D_optim = read('D_optim', D.optim) if load_optim else None
    if optional:
      D_state, D_optim = fit_optional(D, D_state, D_optim, optional)
    load_into(D, 'D', strict, D_state)
    if load_optim:
      load_into(D.optim, 'D_optim', state=D_optim)
  saved = safe_load(file_path(root, STATE_FILE, name_suffix))
  for item in state_dict:
    if item in saved:
      state_dict[item] = saved[item]
  if G_ema is not None:
    load_into(G_ema, 'G_ema', strict)
  return saved


def fit_optional(net, state, optim_state, optional):
  """A state of `net` (and of its one-group optimizer, or None) saved with or without the
  submodules named in `optional`, which `net` registers last (so their parameters are the
  optimizer's last): where the file lacks them they keep net's fresh init and start without
  Adam moments; where net lacks them they are dropped. Lets a run fine-tune a checkpoint of a
  run with another --AC_weight setting."""
  prefixes = tuple(name + '.' for name in optional)
  ours = net.state_dict()
  own = [k for k in ours if k.startswith(prefixes)]
  theirs = [k for k in state if k.startswith(prefixes)]
  if bool(own) == bool(theirs):
    return state, optim_state
  names = [name for name, _ in net.named_parameters()]
  trailing = sum(name.startswith(prefixes) for name in names)
  if names[len(names) - trailing:] != [n for n in names if n.startswith(prefixes)]:
    raise ValueError('%s must be registered last' % ', '.join(optional))
  if own:  # the file has none: net's fresh ones
    print('%s: not in the checkpoint, freshly initialised' % ', '.join(optional))
    state = {**state, **{k: ours[k] for k in own}}
  else:
    print('%s: in the checkpoint but not in this model, left out' % ', '.join(optional))
    state = {k: v for k, v in state.items() if k not in theirs}
  if optim_state is not None and len(optim_state['param_groups']) == 1:
    group = dict(optim_state['param_groups'][0])
    ids = list(group['params'])[:len(names) - trailing if own else len(names)]
    start = max(ids, default=-1) + 1  # a fresh head's ids follow, without state
    group['params'] = ids + list(range(start, start + len(names) - len(ids)))
    kept = set(ids)
    optim_state = {'state': {i: s for i, s in optim_state['state'].items() if i in kept},
                   'param_groups': [group]}
  return state, optim_state


# ---------------------------------------------------------------------------------------------
# Random state
# ---------------------------------------------------------------------------------------------


def initial_state(config):
  """The original's state_dict.pth fields of a run at iteration 0."""
  return {'itr': 0, 'epoch': 0, 'save_num': 0, 'save_best_num': 0, 'best_IS': 0,
          'best_FID': 999999, 'config': config}


def seed_rng(seed):
  """Seed Python, numpy and torch (every device)."""
  random.seed(seed)
  np.random.seed(seed)
  torch.manual_seed(seed)


def rng_state():
  """Every random stream training draws from, as tensors and plain values (weights_only-safe)."""
  np_state = np.random.get_state()
  state = {'python': random.getstate(),
           'numpy': (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                     int(np_state[3]), float(np_state[4])),
           'torch': torch.get_rng_state()}
  if torch.cuda.is_available():
    state['cuda'] = torch.cuda.get_rng_state_all()
  return state


def set_rng_state(state):
  random.setstate(_tuples(state['python']))
  name, keys, pos, has_gauss, cached = state['numpy']
  np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
  torch.set_rng_state(state['torch'].cpu())
  if 'cuda' in state and torch.cuda.is_available():
    states = state['cuda'][:torch.cuda.device_count()]
    torch.cuda.set_rng_state_all([s.cpu() for s in states])


def _tuples(value):
  """Pickling keeps tuples, but be tolerant of lists (random.setstate needs tuples)."""
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, tuple):
    return tuple(_tuples(v) for v in value)
  return value


# ---------------------------------------------------------------------------------------------
# One run per experiment folder
# ---------------------------------------------------------------------------------------------

LOCK_FILE = 'train.lock'
_held = {}  # real lock path -> (file descriptor, whether this process created the folder)


def _close_held_in_child():
  """A forked child (a data-loader worker) must not keep the parent's lock alive after the
  parent dies: closing its copy of the descriptor leaves the parent's lock in place."""
  for fd, _ in _held.values():
    try:
      os.close(fd)
    except OSError:
      pass
  _held.clear()


if hasattr(os, 'register_at_fork'):
  os.register_at_fork(after_in_child=_close_held_in_child)


def lock_run(folder):
  """Take the run lock of an experiment folder (created if missing) before anything is written to
  it; a UserError naming the holder when another process has it. Returns the lock's path, or None
  where the system has no flock (then nothing stops a second run)."""
  try:
    import fcntl
  except ImportError:
    return None
  created = not os.path.isdir(folder)
  path = os.path.join(folder, LOCK_FILE)
  for _ in range(100):  # until the file locked is the one at `path` (a finishing run removes it)
    try:
      os.makedirs(folder, exist_ok=True)
      fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0), 0o644)
    except FileNotFoundError:
      continue  # the folder was removed in between by a run that ended before starting
    except OSError as e:
      raise UserError('could not create the lock file %s (%s); fix --weights_root or its '
                      'permissions' % (path, errors.os_reason(e)))
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = os.read(fd, 200).decode('utf-8', 'replace').strip()
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        _warn('cannot lock %s (%s); nothing stops a second train.py on this experiment'
              % (path, errors.os_reason(e)))
        return None
      raise UserError('experiment %s is in use by another train.py (%s); wait for it to end or '
                      'stop it, or train into another --experiment_name'
                      % (folder, holder or 'a process that has not written its PID yet'))
    try:
      same = os.path.samestat(os.stat(path), os.fstat(fd))
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)
  else:
    raise UserError('could not lock %s: it keeps being replaced; check that only one train.py runs '
                    'on this experiment' % path)
  os.ftruncate(fd, 0)
  os.write(fd, ('PID %d on host %s, since %s\n' % (os.getpid(), socket.gethostname(),
                                                    time.strftime('%Y-%m-%d %H:%M:%S'))).encode())
  path = os.path.realpath(path)  # one key however --weights_root is spelled
  _held[path] = (fd, created)
  return path


def in_use(folder):
  """Whether another process holds the run lock of `folder` (sample.py reading a folder that is
  being trained into must leave its unfinished save alone)."""
  path = os.path.join(folder, LOCK_FILE)
  if os.path.realpath(path) in _held or not os.path.exists(path):
    return False
  try:
    import fcntl
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
  except (ImportError, OSError):
    return False
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    return False
  except OSError as e:
    return e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
  finally:
    os.close(fd)  # also gives back the shared lock


def release_run(path):
  """Give the lock back and remove its file (and a folder this run created and left empty)."""
  if path not in _held:
    return
  fd, created = _held.pop(path)
  try:
    if os.path.samestat(os.stat(path), os.fstat(fd)):
      os.remove(path)  # while still locked: a waiting process sees the file gone and retries
  except OSError:
    pass
  os.close(fd)
  if created:
    try:
      os.rmdir(os.path.dirname(path))
    except OSError:
      pass  # not empty: a run that wrote something


def releases_locks(function):
  """Decorator: the run locks taken during function() are given back when it returns or raises
  (a later run in the same process, e.g. a test or a notebook, can lock the folder again)."""
  @functools.wraps(function)
  def wrapper(*args, **kwargs):
    before = set(_held)
    try:
      return function(*args, **kwargs)
    finally:
      for path in [p for p in _held if p not in before]:
        release_run(path)
  return wrapper


def set_aside(experiment_name, weights_root, logs_root, samples_root):
  """Move an earlier run of this name (its checkpoints, logs and samples) to <name>.old-<date>
  in the same roots, for a run that starts over in its place; returns the new name, or None when
  there was nothing to move. The lock file stays where it is (this run holds it)."""
  weights = os.path.join(weights_root, experiment_name)
  candidates = [weights, os.path.join(logs_root, experiment_name),
                os.path.join(logs_root, experiment_name + '_log.jsonl'),
                os.path.join(samples_root, experiment_name)]
  found, seen = [], set()
  for path in candidates:
    real = os.path.realpath(path)
    if real in seen or not os.path.exists(path):
      continue
    seen.add(real)
    if os.path.isdir(path) and not [e for e in os.listdir(path) if e != LOCK_FILE]:
      continue
    found.append(path)
  if not found:
    return None
  stamp = time.strftime('%Y%m%d-%H%M%S')
  for n in range(1, 1000):
    name = '%s.old-%s%s' % (experiment_name, stamp, '' if n == 1 else '-%d' % n)
    targets = [_renamed(path, experiment_name, name) for path in found]
    if not any(os.path.lexists(t) for t in targets):
      break
  try:
    for path, target in zip(found, targets):
      if os.path.isdir(path) and LOCK_FILE in os.listdir(path):  # the locked folder: its contents
        os.makedirs(target)
        for entry in os.listdir(path):
          if entry != LOCK_FILE:
            os.rename(os.path.join(path, entry), os.path.join(target, entry))
      else:
        os.rename(path, target)
  except OSError as e:
    raise UserError('could not move the earlier run of %s aside (%s: %s); move or delete %s '
                    'yourself, or continue that run with --resume'
                    % (experiment_name, e.filename or path, errors.os_reason(e), path))
  print('Notice: this experiment already had a run (no --resume): moved its %s aside to %s, '
        'nothing deleted; to continue a run instead, use --resume'
        % (', '.join(found), name))
  return name


def _renamed(path, old, new):
  folder, base = os.path.split(path)
  return os.path.join(folder, new + base[len(old):])
