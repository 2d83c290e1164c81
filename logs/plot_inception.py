"""Plot Inception Score and FID (and the other --metrics: KID, precision/recall,
density/coverage, intra-class FID) against iteration for one or more runs (the original's
compare_IS.m), with the original's released 128 px ImageNet run as a reference curve.

  python logs/plot_inception.py logs/<exp>_log.jsonl [logs/<exp2>_log.jsonl ...] [--out FILE.png]
      [--reference auto|on|off] [--reference_log FILE.jsonl]

Reads the <experiment name>_log.jsonl files written at every --test_every by this project or the
original (one JSON record per line: itr, IS_mean, IS_std, FID, _stamp; FID null or absent with
--no_fid; the other metrics' keys KID_mean, KID_std, precision, recall, density, coverage, IFID
add a panel each when a log has them; other keys ignored). The reference,
logs/BigGAN_ch96_bs256x8.jsonl, is overlaid
automatically when a log's file name has the dataset part I128 (or I128_hdf5). It was measured
with the original's PyTorch Inception network, so compare it with runs that use
--inception_net torchvision. Prints each run's best scores. The image goes to
<first log>_inception.png unless --out says otherwise.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import errors  # noqa: E402
from logs import logtools  # noqa: E402

REFERENCE_LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             'BigGAN_ch96_bs256x8.jsonl')
REFERENCE_LABEL = ('reference: the original\'s released run, ch96 bs256x8 on I128 '
                   '(BigGAN_ch96_bs256x8.jsonl)')
FIELDS = ('IS_mean', 'IS_std', 'FID')
# train.py --metrics: (panel title, solid line key, dashed line key or None, band key or None)
METRIC_PANELS = (
    ('KID (lower is better; band: +-1 std over subsets)', 'KID_mean', None, 'KID_std'),
    ('precision (solid) and recall (dashed), higher is better', 'precision', 'recall', None),
    ('density (solid) and coverage (dashed), higher is better', 'density', 'coverage', None),
    ('intra-class FID (lower is better)', 'IFID', None, None))
METRIC_FIELDS = tuple(k for panel in METRIC_PANELS for k in panel[1:] if k)
JSONL_FORMAT = ('one JSON record per line, like {"itr": 2000, "IS_mean": 2.81, "IS_std": 0.02, '
                '"FID": 173.8}')


def _is_number(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_inception_log(path):
  """{'itr': int64 array, 'IS_mean', 'IS_std', 'FID' and METRIC_FIELDS: float64 arrays (NaN
  where a value is null or absent), 'inception_nets': set of the networks named by the
  records}, in file order."""
  text = logtools.read_text(path, JSONL_FORMAT)
  itrs, rows, nets = [], [], set()
  for number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    where = '%s:%d' % (path, number)
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise errors.UserError('%s: not valid JSON (%s at column %d); expected %s'
                             % (where, e.msg, e.colno, JSONL_FORMAT))
    if not isinstance(record, dict) or 'itr' not in record or 'IS_mean' not in record:
      raise errors.UserError('%s: no "itr" and "IS_mean" in this record; expected %s'
                             % (where, JSONL_FORMAT))
    itr = record['itr']
    if not (_is_number(itr) and math.isfinite(itr) and itr == int(itr)):
      raise errors.UserError('%s: "itr" is %r, not an iteration number' % (where, itr))
    row = []
    for key in FIELDS + METRIC_FIELDS:
      value = record.get(key)
      if value is None and key != 'IS_mean':
        value = math.nan
      elif not _is_number(value):
        raise errors.UserError('%s: "%s" is %r, not a number' % (where, key, value))
      row.append(value)
    itrs.append(int(itr))
    rows.append(row)
    # Logs without the key come from the original or from this project's default network.
    nets.add(record.get('inception_net', 'torchvision'))
  values = np.array(rows, dtype=np.float64)
  log = {key: values[:, i] for i, key in enumerate(FIELDS + METRIC_FIELDS)}
  return dict(log, itr=np.array(itrs, dtype=np.int64), inception_nets=nets)


def load_run(path):
  """read_inception_log without the records that a resumed run redid."""
  log = read_inception_log(path)
  keys = FIELDS + METRIC_FIELDS
  itr, *values = logtools.drop_superseded(log['itr'], *(log[key] for key in keys))
  return dict(log, itr=itr, **dict(zip(keys, values)))


def run_name(path):
  """logs/<exp>_log.jsonl -> <exp>."""
  name = os.path.basename(path)
  for suffix in ('_log.jsonl', '.jsonl'):
    if name.endswith(suffix):
      return name[:-len(suffix)]
  return name


def is_imagenet128(path):
  """Whether the experiment name in a log's file name has the dataset part I128 (or I128_hdf5)."""
  return 'I128' in run_name(path).split('_')


def wants_reference(log_paths, mode, reference_log=REFERENCE_LOG):
  """auto: overlay for 128 px ImageNet runs; on/off force it. Never overlay the reference on
  itself."""
  if mode not in ('auto', 'on', 'off'):
    raise errors.UserError('--reference %s: use auto, on or off' % mode)
  if mode == 'off' or any(os.path.realpath(path) == os.path.realpath(reference_log)
                          for path in log_paths):
    return False
  return mode == 'on' or any(is_imagenet128(path) for path in log_paths)


def summary(path, run):
  """One line: how far the run got and its best scores."""
  itr, IS, FID = run['itr'], run['IS_mean'], run['FID']
  line = '%s: %d records up to itr %d' % (run_name(path), len(itr), itr.max())
  if np.isfinite(IS).any():
    line += '; best IS %.3f at itr %d' % (np.nanmax(IS), itr[np.nanargmax(IS)])
  if np.isfinite(FID).any():
    line += '; best FID %.3f at itr %d' % (np.nanmin(FID), itr[np.nanargmin(FID)])
  return line


def plot_inception(log_paths, out_path='', reference='auto', reference_log=REFERENCE_LOG):
  """Plot IS and FID of the runs in `log_paths` (jsonl logs); returns the image path written.

  reference: 'auto' (overlay the released run for I128 logs), 'on' or 'off'.
  """
  if not log_paths:
    raise errors.UserError('no logs given; pass one or more logs_root/<experiment name>_log.jsonl')
  base, _ = os.path.splitext(log_paths[0])
  out_path = logtools.output_path(out_path, base[:-len('_log')] + '_inception.png'
                                  if base.endswith('_log') else base + '_inception.png')
  runs = [(path, load_run(path)) for path in log_paths]
  overlay = wants_reference(log_paths, reference, reference_log)
  if overlay and not os.path.isfile(reference_log):
    raise errors.UserError('reference curve %s not found; pass --reference_log FILE.jsonl, or '
                           '--reference off' % reference_log)
  reference_run = load_run(reference_log) if overlay else None
  panels = [p for p in METRIC_PANELS if any(np.isfinite(run[p[1]]).any() for _, run in runs)]

  fig, (ax_is, ax_fid, *ax_metrics) = logtools.new_figure(2 + len(panels))
  for (path, run), color in zip(runs, logtools.line_colors(len(runs))):
    label = logtools.wrap(run_name(path))
    if run['inception_nets'] != {'torchvision'}:
      label += ' [Inception net: %s]' % ', '.join(sorted(map(str, run['inception_nets'])))
    itr, IS, IS_std = run['itr'], run['IS_mean'], run['IS_std']
    ax_is.plot(itr, IS, color=color, linewidth=1.5, marker='.', markersize=4, label=label)
    ax_is.fill_between(itr, IS - IS_std, IS + IS_std, color=color, alpha=0.2, linewidth=0)
    ax_fid.plot(itr, run['FID'], color=color, linewidth=1.5, marker='.', markersize=4)
    for ax, (_, solid, dashed, band) in zip(ax_metrics, panels):
      ax.plot(itr, run[solid], color=color, linewidth=1.5, marker='.', markersize=4)
      if dashed:
        ax.plot(itr, run[dashed], color=color, linewidth=1.5, linestyle='--', marker='.',
                markersize=4)
      if band:
        ax.fill_between(itr, run[solid] - run[band], run[solid] + run[band], color=color,
                        alpha=0.2, linewidth=0)
  if reference_run is not None:
    style = dict(color='black', linestyle='--', linewidth=1.2)
    ax_is.plot(reference_run['itr'], reference_run['IS_mean'], label=REFERENCE_LABEL, **style)
    ax_fid.plot(reference_run['itr'], reference_run['FID'], **style)
  if not any(np.isfinite(run['FID']).any() for _, run in runs):
    ax_fid.text(0.5, 0.5, 'no FID in these logs (runs with --no_fid)', transform=ax_fid.transAxes,
                ha='center', va='center', fontsize=9, color='gray')
  ax_is.set_title('Inception Score (higher is better; band: +-1 std over splits)', fontsize=10)
  ax_is.set_ylabel('IS')
  ax_fid.set_title('FID (lower is better)', fontsize=10)
  ax_fid.set_ylabel('FID')
  for ax, (title, solid, dashed, _) in zip(ax_metrics, panels):
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(solid if not dashed else '%s, %s' % (solid, dashed))
  (ax_metrics or [ax_fid])[-1].set_xlabel('iteration')
  handles, labels = ax_is.get_legend_handles_labels()
  fig.legend(handles, labels, loc='outside lower center', fontsize=7)
  return logtools.save_figure(fig, out_path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=errors.DocHelpFormatter)
  parser.add_argument('logs', nargs='+',
                      help='Inception-metrics logs, logs_root/<experiment name>_log.jsonl')
  parser.add_argument('--out', default='',
                      help='Image file (.png, .pdf, .svg), or a folder to put the default name in '
                           '(default: <first log without _log.jsonl>_inception.png)')
  parser.add_argument('--reference', default='auto', choices=['auto', 'on', 'off'],
                      help='Overlay the released run\'s curve: auto = when a log name has the '
                           'dataset I128 or I128_hdf5')
  parser.add_argument('--reference_log', default=REFERENCE_LOG,
                      help='The reference curve (default: the shipped '
                           'logs/BigGAN_ch96_bs256x8.jsonl)')
  args = parser.parse_args(argv)
  out = plot_inception(args.logs, args.out, args.reference, args.reference_log)
  for path in args.logs:
    print(summary(path, load_run(path)))
  print('wrote %s' % out)


if __name__ == '__main__':
  errors.run_main(main)
