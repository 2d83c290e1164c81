"""Training logs in the original's formats, a progress line, and an optional TensorBoard mirror.

- logs_root/<exp>_log.jsonl   one JSON record per evaluation (MetricsLogger)
- logs_root/<exp>/<m>.log     "itr: value" lines per metric (MyLogger), e.g. G_loss.log
- logs_root/<exp>/metalog.txt (utils.write_metadata)

Training metrics arrive as tensors; `TrainLog` buffers them and writes (and prints) them at log
intervals, so the loop never waits for the device in between. On resume the logs are cut back to
the checkpoint's iteration, so a replayed stretch is not logged twice.

A failed log write (full disk, permissions) is a UserError naming the file, and never leaves half
a line: appends are cut back on failure, and a line cut short by a crash is dropped on resume.
"""
import datetime
import json
import os
import sys
import time

import torch

import errors
from errors import UserError


class MetricsLogger(object):
  """Appends JSON records with a `_stamp` to a .jsonl file."""

  def __init__(self, fname, reinitialize=False):
    self.fname = fname
    self.reinitialize = reinitialize
    if os.path.exists(self.fname) and self.reinitialize:
      print('{} exists, deleting...'.format(self.fname))
      _remove(self.fname)

  def log(self, record=None, **kwargs):
    if record is None:
      record = {}
    record.update(kwargs)
    record['_stamp'] = time.time()
    _append(self.fname, json.dumps(record, ensure_ascii=True) + '\n')

  def truncate(self, itr):
    """Drop the records after iteration itr."""
    _filter_lines(self.fname, lambda line: json.loads(line).get('itr', 0) <= itr)


class MyLogger(object):
  """One "itr: value" file per metric under the folder `fname`."""

  def __init__(self, fname, reinitialize=False, logstyle='%3.3f'):
    self.root = fname
    try:
      os.makedirs(self.root, exist_ok=True)
    except OSError as e:
      raise _log_error('create the log folder', self.root, e)
    self.reinitialize = reinitialize
    self.metrics = []
    self.logstyle = logstyle
    try:
      self.logstyle % 1.0
    except (TypeError, ValueError):
      raise UserError('--logstyle %r is not a number format; use e.g. %%3.3e or %%3.3f' % logstyle)

  def reinit(self, item):
    path = '%s/%s.log' % (self.root, item)
    if os.path.exists(path) and self.reinitialize:
      if 'sv' not in item:
        print('{} exists, deleting...'.format(path))
      _remove(path)

  def log(self, itr, **kwargs):
    self.log_rows([(itr, kwargs)])

  def log_rows(self, rows):
    """rows: [(itr, {metric: value})]; each file is opened once."""
    lines = {}
    for itr, values in rows:
      for name, value in values.items():
        lines.setdefault(name, []).append('%d: %s\n' % (itr, self.logstyle % float(value)))
    for name, text in lines.items():
      if name not in self.metrics:
        self.reinit(name)
        self.metrics.append(name)
      _append('%s/%s.log' % (self.root, name), ''.join(text))

  def truncate(self, itr):
    try:
      names = os.listdir(self.root)
    except OSError as e:
      raise _log_error('read the log folder', self.root, e)
    for name in names:
      if name.endswith('.log'):
        _filter_lines(os.path.join(self.root, name), lambda line: int(line.split(':')[0]) <= itr)


def _log_error(action, path, e):
  reason = errors.os_reason(e)
  return UserError('could not %s %s (%s); free space or fix permissions (or choose another '
                   '--logs_root), then run again: --resume continues from the last checkpoint'
                   % (action, path, reason))


def _remove(path):
  try:
    os.remove(path)
  except OSError as e:
    raise _log_error('delete the old log', path, e)


def _append(path, text):
  """Append whole lines in one write; if it fails, cut the file back to where it was, so a full
  disk never leaves half a line that the next append would run into."""
  data = memoryview(text.encode('utf-8'))
  try:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
  except OSError as e:
    raise _log_error('open the log', path, e)
  try:
    start = os.fstat(fd).st_size
    try:
      while data:
        data = data[os.write(fd, data):]
    except OSError:
      try:
        os.ftruncate(fd, start)
      except OSError:
        pass
      raise
  except OSError as e:
    raise _log_error('write the log', path, e)
  finally:
    os.close(fd)


def _filter_lines(path, keep):
  """Rewrite `path` with only the lines `keep` accepts (via a temporary file, so a failure leaves
  it as it was). A last line without its newline was cut short by a crash and goes too."""
  try:
    with open(path) as f:
      lines = f.readlines()
  except FileNotFoundError:
    return
  except OSError as e:
    raise _log_error('read the log', path, e)
  kept = [line for line in lines if line.endswith('\n') and line.strip() and _keeps(keep, line)]
  if kept == lines:
    return
  tmp = path + '.tmp'
  try:
    with open(tmp, 'w') as f:
      f.writelines(kept)
    os.replace(tmp, path)
  except OSError as e:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise _log_error('rewrite the log', path, e)


def _keeps(keep, line):
  try:
    return keep(line)
  except (ValueError, TypeError, AttributeError):  # not a line this logger writes: a damaged one
    print('warning: dropping an unreadable line from a log on resume: %r' % line.strip()[:80],
          file=sys.stderr, flush=True)
    return False


def summary_writer_class():
  """torch's SummaryWriter; a UserError when the optional tensorboard package is missing."""
  try:
    from torch.utils.tensorboard import SummaryWriter
  except ImportError:
    raise UserError('--tensorboard needs the tensorboard package: pip install tensorboard '
                    '(or drop --tensorboard)')
  return SummaryWriter


class TensorBoard(object):
  """Mirrors scalars and images to logs_root/<exp>/tb when --tensorboard is set."""

  def __init__(self, log_dir):
    self.writer = summary_writer_class()(log_dir)

  def scalars(self, itr, values):
    for name, value in values.items():
      self.writer.add_scalar(name, float(value), itr)

  def image(self, tag, images, itr, nrow=8):
    import torchvision
    grid = torchvision.utils.make_grid(images.float().cpu(), nrow=nrow, normalize=True)
    self.writer.add_image(tag, grid, itr)

  def close(self):
    self.writer.close()


def format_seconds(seconds):
  seconds = int(max(seconds, 0))
  return '%d:%02d:%02d' % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def progress(items, desc='', total=None, min_delay=0.1, displaytype='s1k'):
  """The original's progress display for loops outside training (sampling, moments): yields the
  items and rewrites one line with the count, the elapsed time and either the time per 1000 items
  (displaytype 's1k') or the time left ('eta')."""
  total = total if total is not None else len(items)
  start = last = time.time()
  done = 0
  for done, item in enumerate(items, 1):
    now = time.time()
    if now - last >= min_delay or done == 1:
      last = now
      elapsed = now - start
      per_item = elapsed / (done - 1) if done > 1 else 0.0
      shown = per_item * 1000 if displaytype == 's1k' else per_item * (total - done + 1)
      sys.stdout.write('\r%s%d/%d (%6.2f%%) (TE/%s: %s / %s)' % (
          desc, done, total, 100.0 * done / max(total, 1), 'ET1k' if displaytype == 's1k'
          else 'ETA', format_seconds(elapsed), format_seconds(shown)))
      sys.stdout.flush()
    yield item
  print('\r%s%d/%d (%6.2f%%) (TE: %s)' % (desc, done, total, 100.0 * done / max(total, 1),
                                          format_seconds(time.time() - start)))


def write_metadata(logs_root, experiment_name, config, state_dict):
  """logs_root/<exp>/metalog.txt: when, with which config, from which state."""
  os.makedirs('%s/%s' % (logs_root, experiment_name), exist_ok=True)
  with open('%s/%s/metalog.txt' % (logs_root, experiment_name), 'w') as writefile:
    writefile.write('datetime: %s\n' % str(datetime.datetime.now()))
    writefile.write('config: %s\n' % str(config))
    writefile.write('state: %s\n' % str({k: v for k, v in state_dict.items() if k != 'config'}))


class TrainLog(object):
  """Buffers each iteration's metrics (tensors or floats) and flushes them to MyLogger, the
  progress line and TensorBoard every `interval` iterations."""

  def __init__(self, logger, interval, total, start_itr, pbar='mine', tensorboard=None,
               quiet=False):
    self.logger = logger
    self.interval = max(1, interval)
    self.total = total
    self.start_itr = start_itr
    self.start_time = time.time()
    self.rows = []
    self.pbar = pbar
    self.tensorboard = tensorboard
    self.quiet = quiet
    self.tqdm = None
    if pbar == 'tqdm' and not quiet:
      from tqdm import tqdm
      self.tqdm = tqdm(total=total, initial=start_itr, dynamic_ncols=True)

  def add(self, itr, metrics):
    self.rows.append((itr, {k: (v.detach() if torch.is_tensor(v) else v)
                            for k, v in metrics.items()}))
    if len(self.rows) >= self.interval:
      return self.flush()
    return None

  def flush(self):
    """Write the buffered rows; returns them as floats (for checks such as NaN detection)."""
    if not self.rows:
      return []
    rows = []
    for itr, values in self.rows:
      tensors = [v for v in values.values() if torch.is_tensor(v)]
      numbers = torch.stack([t.float().reshape(()) for t in tensors]).tolist() if tensors else []
      it = iter(numbers)
      rows.append((itr, {k: (next(it) if torch.is_tensor(v) else float(v))
                         for k, v in values.items()}))
    self.rows = []
    self.logger.log_rows(rows)
    if self.tensorboard is not None:
      for itr, values in rows:
        self.tensorboard.scalars(itr, values)
    if not self.quiet:
      self.show(rows[-1])
    return rows

  def show(self, row):
    itr, values = row
    done = itr - self.start_itr
    elapsed = time.time() - self.start_time
    rate = done / elapsed if elapsed > 0 else 0.0
    text = ', '.join('%s : %+4.3f' % (k, v) for k, v in values.items() if '_sv' not in k)
    if self.tqdm is not None:
      self.tqdm.update(itr - self.tqdm.n)
      self.tqdm.set_postfix_str(text)
      return
    eta = (self.total - itr) / rate if rate > 0 else 0
    sys.stdout.write('\ritr %d/%d (%d%%) %.2f it/s, ETA %s | %s' % (
        itr, self.total, 100 * itr // max(self.total, 1), rate, format_seconds(eta), text))
    sys.stdout.flush()

  def close(self):
    self.flush()
    if self.tqdm is not None:
      self.tqdm.close()
    elif not self.quiet:
      print()
