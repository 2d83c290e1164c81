"""Plot a truncation sweep: the IS/FID trade-off of the truncation trick (BigGAN paper, sec. 4.1)
and each score against the truncation threshold.

  python logs/plot_truncation.py CURVE.csv [--out FILE.png]

CURVE.csv is written by sample.py --sample_trunc_curves start_step_end, with the header
truncation,IS_mean,IS_std,FID (FID empty when it was not computed; columns may come in any order
and extra columns are ignored). Without FID only IS against truncation is drawn. Columns
precision and recall (sample.py --metrics PR) add the precision/recall trade-off. The image goes
to CURVE.png unless --out says otherwise. Code calls plot_truncation_curve(csv_path, out_path).
"""
import argparse
import csv
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import errors  # noqa: E402
from logs import logtools  # noqa: E402

FIELDS = ('truncation', 'IS_mean', 'IS_std', 'FID')
OPTIONAL = ('IS_std', 'FID')  # may be empty
PR_FIELDS = ('precision', 'recall')  # read when the header has them
CSV_FORMAT = 'a CSV with the header %s, as written by sample.py' % ','.join(FIELDS)


def read_truncation_csv(path):
  """{field: float64 array} for FIELDS, in file order; NaN where IS_std or FID is empty."""
  rows = list(csv.reader(logtools.read_text(path, CSV_FORMAT).splitlines()))
  header = [name.strip() for name in rows[0]]
  missing = [name for name in FIELDS if name not in header]
  if missing:
    raise errors.UserError('%s:1: the header has no column %s; expected %s'
                           % (path, ', '.join(missing), CSV_FORMAT))
  fields = FIELDS + tuple(name for name in PR_FIELDS if name in header)
  columns = {name: [] for name in fields}
  for number, row in enumerate(rows[1:], 2):
    if not any(cell.strip() for cell in row):
      continue
    if len(row) != len(header):
      raise errors.UserError('%s:%d: %d values for the %d columns of the header'
                             % (path, number, len(row), len(header)))
    for name in fields:
      cell = row[header.index(name)].strip()
      try:
        columns[name].append(math.nan if not cell and name in OPTIONAL + PR_FIELDS
                             else float(cell))
      except ValueError:
        raise errors.UserError('%s:%d: %s is %r, not a number' % (path, number, name, cell))
  if not columns['truncation']:
    raise errors.UserError('%s has a header but no rows; did the truncation sweep finish?' % path)
  return {name: np.array(values, dtype=np.float64) for name, values in columns.items()}


def plot_truncation_curve(csv_path, out_path=''):
  """Plot the sweep in `csv_path`; returns the image path written (default: CURVE.png)."""
  out_path = logtools.output_path(out_path, os.path.splitext(csv_path)[0] + '.png')
  curve = read_truncation_csv(csv_path)
  order = np.argsort(curve['truncation'], kind='stable')
  t, IS, IS_std, FID = (curve[name][order] for name in FIELDS)
  has_fid = np.isfinite(FID).any()
  has_pr = all(np.isfinite(curve.get(name, [np.nan])).any() for name in PR_FIELDS)

  title = os.path.basename(csv_path) + ('' if has_fid else ' (no FID in the sweep)')
  fig, axes = logtools.new_figure((3 if has_fid else 1) + has_pr, title)
  if has_pr:  # the last panel: fidelity against diversity
    precision, recall = (curve[name][order] for name in PR_FIELDS)
    ax = axes.pop()
    ax.plot(recall, precision, color='gray', linewidth=1, zorder=1)
    points = ax.scatter(recall, precision, c=t, cmap='viridis', s=25, zorder=2)
    fig.colorbar(points, ax=ax, label='truncation')
    for i in {0, len(t) - 1}:
      ax.annotate('%g' % t[i], (recall[i], precision[i]), textcoords='offset points',
                  xytext=(4, 4), fontsize=7)
    ax.set_title('Truncation trade-off: precision against recall (labels: truncation)',
                 fontsize=10)
    ax.set_xlabel('recall (higher is better)')
    ax.set_ylabel('precision (higher is better)')
  if has_fid:
    ax = axes[0]
    ax.plot(IS, FID, color='gray', linewidth=1, zorder=1)
    points = ax.scatter(IS, FID, c=t, cmap='viridis', s=25, zorder=2)
    fig.colorbar(points, ax=ax, label='truncation')
    for i in {int(np.nanargmax(IS)), int(np.nanargmin(FID)), 0, len(t) - 1}:
      ax.annotate('%g' % t[i], (IS[i], FID[i]), textcoords='offset points', xytext=(4, 4),
                  fontsize=7)
    ax.set_title('Truncation trade-off: FID against IS (labels: truncation)', fontsize=10)
    ax.set_xlabel('Inception Score (higher is better)')
    ax.set_ylabel('FID (lower is better)')
  ax = axes[1] if has_fid else axes[0]
  ax.errorbar(t, IS, yerr=np.nan_to_num(IS_std), color='tab:blue', marker='.', capsize=2)
  ax.set_title('Inception Score against truncation (bars: +-1 std over splits)', fontsize=10)
  ax.set_ylabel('IS')
  if has_fid:
    axes[2].plot(t, FID, color='tab:red', marker='.')
    axes[2].set_title('FID against truncation', fontsize=10)
    axes[2].set_ylabel('FID')
  axes[-1].set_xlabel('truncation threshold')
  return logtools.save_figure(fig, out_path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('csv', help='Truncation sweep written by sample.py (%s)' % ','.join(FIELDS))
  parser.add_argument('--out', default='',
                      help='Image file (.png, .pdf, .svg), or a folder to put the default name in '
                           '(default: the CSV\'s name with .png)')
  args = parser.parse_args(argv)
  print('wrote %s' % plot_truncation_curve(args.csv, args.out))


if __name__ == '__main__':
  errors.run_main(main)
