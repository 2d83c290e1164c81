"""Plot a run's losses and singular values from its per-metric logs (the original's
process_training.m).

  python logs/plot_training.py logs/<experiment name> [--out FILE.png | --out FOLDER] [--window N]

Reads every <metric>.log in the folder (lines 'itr: value', any --logstyle such as %3.3e or
%3.3f), from this project or the original. Panels: losses (G_loss, D_loss_real, D_loss_fake and any
other non-SV metric), raw and smoothed; ADA's augmentation probability (ada_p.log, written with
--ada_target or --ada_p) when there is one; then the singular values of G's and of D's SN layers
(files G_..._sv0.log / D_..._sv0.log, written with --log_G_spectra / --log_D_spectra) when there
are any. The image goes to logs/<experiment name>_training.png unless --out says otherwise.
"""
import argparse
import glob
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import errors  # noqa: E402
from logs import logtools  # noqa: E402

# The original's colours: red for G, blue for D on reals, green for D on fakes.
LOSS_COLORS = {'G_loss': 'tab:red', 'D_loss_real': 'tab:blue', 'D_loss_fake': 'tab:green'}
SV_LOG = re.compile(r'^([GD])_(.*sv\d+)$')
AUGMENTATION_LOGS = ('ada_p',)
MAX_LEGEND = 12  # above this many SV series, only the largest ones are named
METRIC_FORMAT = "lines 'itr: value' (a per-metric log of logs_root/<experiment name>)"


def read_metric_log(path):
  """(itr int64, value float64) of one <metric>.log, in file order."""
  lines = logtools.read_text(path, METRIC_FORMAT).splitlines()
  # np.loadtxt parses a million lines in ~0.15 s; the line-by-line loop below (3x slower) runs
  # only when it fails, to name the bad line.
  try:
    table = np.loadtxt(lines, delimiter=':', ndmin=2, comments=None, dtype=np.float64)
    parsed = table.shape[1] == 2 and bool(np.all(table[:, 0] == np.round(table[:, 0])))
  except ValueError:
    parsed = False
  if not parsed:
    table = np.array([_metric_line(path, number, line)
                      for number, line in enumerate(lines, 1) if line.strip()], dtype=np.float64)
  return table[:, 0].astype(np.int64), table[:, 1]


def _metric_line(path, number, line):
  itr, _, value = line.partition(':')
  try:
    return int(itr), float(value)
  except ValueError:
    raise errors.UserError('%s:%d: expected %s, got %r' % (path, number, METRIC_FORMAT,
                                                           line.strip()[:80]))


def smooth(values, window):
  """Centred running mean over about `window` records, shorter at the ends, skipping NaN/inf.

  Centred like the original's wavelet denoising, so the smoothed curve does not lag (an
  exponential moving average would).
  """
  values = np.asarray(values, dtype=np.float64)
  half = max(int(window), 1) // 2
  finite = np.isfinite(values)
  sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
  counts = np.concatenate([[0], np.cumsum(finite)])
  index = np.arange(len(values))
  lo, hi = np.maximum(index - half, 0), np.minimum(index + half + 1, len(values))
  with np.errstate(invalid='ignore', divide='ignore'):
    return (sums[hi] - sums[lo]) / (counts[hi] - counts[lo])


def auto_window(n):
  """Default smoothing: about 2% of the records, so short and long runs look alike."""
  return max(1, n // 50)


def _natural_key(name):
  """blocks_2 before blocks_10."""
  return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', name)]


def find_metric_logs(logdir):
  """{'losses': {...}, 'augmentation': {...}, 'G': {...}, 'D': {...}}, each {series name: path},
  of a run's .log files."""
  if not os.path.isdir(logdir):
    if logdir.endswith('.jsonl'):
      raise errors.UserError('%s is an Inception-metrics log; plot it with logs/plot_inception.py, '
                             'and pass logs_root/<experiment name> here' % logdir)
    if os.path.exists(logdir):
      raise errors.UserError('%s is a file; pass the run\'s log folder logs_root/<experiment '
                             'name>' % logdir)
    raise errors.UserError('%s: no such folder; pass the run\'s log folder logs_root/<experiment '
                           'name>' % logdir)
  paths = glob.glob(os.path.join(glob.escape(logdir), '*.log'))
  if not paths:
    raise errors.UserError('%s has no <metric>.log files; pass the run\'s log folder logs_root/'
                           '<experiment name> (runs with --logstyle pickle, npz or mat are not '
                           'read)' % logdir)
  groups = {'losses': {}, 'augmentation': {}, 'G': {}, 'D': {}}
  for path in paths:
    name = os.path.basename(path)[:-len('.log')]
    match = SV_LOG.match(name)
    if match:
      groups[match.group(1)][match.group(2)] = path
    elif name in AUGMENTATION_LOGS:
      groups['augmentation'][name] = path
    else:
      groups['losses'][name] = path
  return {group: dict(sorted(logs.items(), key=lambda item: _natural_key(item[0])))
          for group, logs in groups.items()}


def plot_training(logdir, out_path='', window=0):
  """Plot the run in `logdir` (logs_root/<exp>); returns the image path written.

  window: records per running mean of the losses; 0 picks ~2% of the run, 1 turns smoothing off.
  """
  if window < 0:
    raise errors.UserError('--window %d: must be 0 (automatic) or a number of records' % window)
  run = os.path.abspath(logdir)  # also right for '.' or a trailing slash
  out_path = logtools.output_path(out_path, run + '_training.png')
  groups = find_metric_logs(logdir)
  series = {group: {name: logtools.drop_superseded(*read_metric_log(path))
                    for name, path in logs.items()}
            for group, logs in groups.items()}
  panels = [group for group in ('losses', 'augmentation', 'G', 'D') if series[group]]
  fig, axes = logtools.new_figure(len(panels), os.path.basename(run))
  for group, ax in zip(panels, axes):
    if group == 'losses':
      _plot_losses(ax, series[group], window)
    elif group == 'augmentation':
      _plot_augmentation(ax, series[group])
    else:
      _plot_singular_values(ax, series[group], 'Singular values in %s' % group)
  axes[-1].set_xlabel('iteration')
  return logtools.save_figure(fig, out_path)


def _plot_losses(ax, losses, window):
  """Raw curves pale and thin, smoothed ones on top; y limits ignore the rare huge spikes."""
  extra = iter(logtools.line_colors(len(losses) + 4)[4:])  # clear of tab10's blue, green, red
  shown = []
  for name, (itr, value) in losses.items():
    color = LOSS_COLORS.get(name) or next(extra)
    w = window or auto_window(len(value))
    ax.plot(itr, value, color=color, alpha=0.25, linewidth=0.6)
    ax.plot(itr, smooth(value, w), color=color, linewidth=1.5,
            label='%s (running mean of %d)' % (name, w) if w > 1 else name)
    shown.append(value[np.isfinite(value)])
  shown = np.concatenate(shown)
  if len(shown):
    lo, hi = np.percentile(shown, [0.5, 99.5])
    pad = 0.05 * (hi - lo) or 0.5
    ax.set_ylim(lo - pad, hi + pad)
  ax.set_title('Losses', fontsize=10)
  ax.set_ylabel('loss')
  ax.legend(fontsize=7, loc='upper right')


def _plot_augmentation(ax, series):
  """ADA's p as logged (a step function: it changes every --ada_interval iterations)."""
  for name, (itr, value) in series.items():
    ax.step(itr, value, where='post', color='tab:purple', linewidth=1.2, label=name)
  ax.set_ylim(-0.02, 1.02)
  ax.set_title('Augmentation probability p (ADA)', fontsize=10)
  ax.set_ylabel('p')
  ax.legend(fontsize=7, loc='upper left')


def _plot_singular_values(ax, svs, title):
  """All layers as thin lines; with many layers only the largest at the end get a legend entry,
  since an exploding top singular value is what precedes collapse."""
  names = list(svs)
  finals = [value[np.isfinite(value)][-1] if np.isfinite(value).any() else -np.inf
            for _, value in svs.values()]
  named = set(names) if len(names) <= MAX_LEGEND else set(
      names[i] for i in np.argsort(finals)[::-1][:3])
  for name, color in zip(names, logtools.line_colors(len(names))):
    itr, value = svs[name]
    ax.plot(itr, value, color=color, linewidth=0.8,
            label=name if name in named else '_nolegend_')
  if all(np.nanmin(value) > 0 for _, value in svs.values() if np.isfinite(value).any()):
    ax.set_yscale('log')
  if len(names) > MAX_LEGEND:
    title += ' (%d series; the 3 largest at the end named)' % len(names)
  ax.set_title(title, fontsize=10)
  ax.set_ylabel('singular value')
  ax.legend(fontsize=6, loc='upper left', ncols=2 if len(named) > 6 else 1)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=errors.DocHelpFormatter)
  parser.add_argument('logdir', help='The run\'s log folder, logs_root/<experiment name>')
  parser.add_argument('--out', default='',
                      help='Image file (.png, .pdf, .svg), or a folder to put '
                           '<experiment name>_training.png in (default: next to the folder)')
  parser.add_argument('--window', type=int, default=0,
                      help='Records per running mean of the losses; 0 = about 2%% of the run, '
                           '1 = no smoothing')
  args = parser.parse_args(argv)
  print('wrote %s' % plot_training(args.logdir, args.out, args.window))


if __name__ == '__main__':
  errors.run_main(main)
