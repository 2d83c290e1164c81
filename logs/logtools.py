"""What the logs/plot_*.py scripts share: reading text logs, resumed runs, and one plot style.

Each script owns the reader of its own format (plot_training: logs_root/<exp>/<metric>.log,
plot_inception: logs_root/<exp>_log.jsonl, plot_truncation: sample.py's truncation CSV). Readers
return the records in file order; `drop_superseded` then removes what a resumed run redid.

Figures are built on matplotlib's Agg canvas directly, not through pyplot, so plotting from a
training script or a notebook never switches the caller's backend or leaks open figures.
"""
import os

import numpy as np

import errors

IMAGE_TYPES = ('.png', '.pdf', '.svg')


def read_text(path, expected):
  """The whole text of a log; a UserError naming the file when it is missing, binary or empty.

  `expected` describes the format for the message, e.g. "lines 'itr: value'".
  """
  try:
    with open(path, encoding='utf-8') as f:
      text = f.read()
  except FileNotFoundError:
    raise errors.UserError('%s: no such file; check the path (expected %s)' % (path, expected))
  except IsADirectoryError:
    raise errors.UserError('%s is a folder; pass a file with %s' % (path, expected))
  except UnicodeDecodeError:
    raise errors.UserError('%s is not a text file; pass a file with %s' % (path, expected))
  except OSError as e:
    raise errors.UserError('%s: cannot read it (%s)' % (path, e.strerror))
  if not text.strip():
    raise errors.UserError('%s is empty; expected %s (was the run stopped before it logged '
                           'anything?)' % (path, expected))
  return text


def drop_superseded(itr, *columns):
  """Keep what a run resumed from an older checkpoint wrote last.

  Resuming appends to the existing logs from the checkpoint's iteration on, so a record is
  superseded when a later line has the same or a smaller itr. Returns (itr, *columns) filtered.
  """
  itr = np.asarray(itr)
  keep = np.ones(len(itr), dtype=bool)
  if len(itr) > 1:
    smallest_after = np.minimum.accumulate(itr[::-1])[::-1][1:]
    keep[:-1] = itr[:-1] < smallest_after
  return (itr[keep],) + tuple(np.asarray(c)[keep] for c in columns)


def output_path(out, default):
  """The file a plot goes to: --out itself, the default name inside --out when it is a folder
  (existing, or ending in a slash), or `default` when --out is empty."""
  if not out:
    path = default
  elif os.path.isdir(out) or out.endswith(('/', os.sep)):
    path = os.path.join(out, os.path.basename(default))
  else:
    path = out
  if os.path.splitext(path)[1].lower() not in IMAGE_TYPES:
    raise errors.UserError('--out %s: not an image file name; give a name ending in %s, or a '
                           'folder' % (out, ', '.join(IMAGE_TYPES)))
  return path


def have_matplotlib():
  """Whether plots can be drawn, so that a long job can say so before it starts."""
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401
  except ImportError:
    return False
  return True


def new_figure(panels, title=''):
  """A figure with `panels` stacked axes in the shared style; returns (figure, [axes])."""
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
  except ImportError:
    raise errors.UserError('plotting needs matplotlib, which is not installed; '
                           'pip install matplotlib')
  fig = Figure(figsize=(9.0, 1.0 + 3.2 * panels), dpi=100, layout='constrained')
  FigureCanvasAgg(fig)
  axes = list(fig.subplots(panels, 1, squeeze=False)[:, 0])
  for ax in axes:
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)
  if title:
    fig.suptitle(wrap(title), fontsize=9)
  return fig, axes


def line_colors(n):
  """n distinguishable colours: tab10 for few lines, a rainbow sweep (like the original's MATLAB
  hsv, but not cyclic, so the first and last lines differ) for many."""
  import matplotlib
  if n <= 10:
    return [matplotlib.colormaps['tab10'](i) for i in range(n)]
  return [matplotlib.colormaps['turbo'](i / (n - 1)) for i in range(n)]


def wrap(name, width=110):
  """Experiment names are long and have no spaces: break them at underscores for titles and
  legends."""
  lines, line = [], None
  for part in name.split('_'):
    if line is None:
      line = part
    elif len(line) + 1 + len(part) > width:
      lines.append(line + '_')
      line = part
    else:
      line += '_' + part
  return '\n'.join(lines + [line])


def save_figure(fig, path):
  """Write the figure through a temporary file, so a failed write never leaves a broken image
  where an older one was."""
  folder, name = os.path.split(path)
  tmp = os.path.join(folder, '.%s.%d.tmp' % (name, os.getpid()))
  try:
    os.makedirs(folder or '.', exist_ok=True)
    with open(tmp, 'wb') as f:
      fig.savefig(f, format=os.path.splitext(name)[1][1:].lower())
    os.replace(tmp, path)
  except OSError as e:
    raise errors.UserError('cannot write %s (%s); choose another --out' % (path, e.strerror))
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path
