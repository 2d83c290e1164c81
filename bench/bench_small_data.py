"""Small datasets: training recipes compared at equal wall time (or equal iterations).

    python bench/bench_small_data.py                        # the README table (3 h, 2 cores)
    python bench/bench_small_data.py --datasets shapes500_32 --recipes original,launcher \\
        --minutes 1,3
    python bench/bench_small_data.py --iters 100,200,400 --datasets shapes2000_32   # by iteration

Datasets, written once under --root (image folders with one subfolder per class, as a user's):
  shapesN_R     the first N images of the built-in Shapes at R px (colour and shape: 10 classes)
  patternsN_R   N images of bench/patterns.py at R px (8 texture classes, random colours)
Recipes (train.py flags after --dataset FOLDER --resolution R):
  original      the quickstart before the small-data work (ch 16, batch 32, 2 D steps, lr 2e-4,
                EMA 0.9999 from itr 100)
  diffaugment   original + --DiffAugment translation,color,cutout
  ada           original + --ada_target 0.6 --ada_kimg 20
  lecam         original + --LeCam 0.3
  ac            original + --AC_weight 1 (an auxiliary classifier in D)
  launcher      the flags of scripts/launch_small_data.sh (read from the script)
Each recipe trains from the same seed; at each checkpoint of training wall time (--minutes,
counted from the start of train.run, evaluations excluded) or of iterations (--iters), G_ema is
scored as the run samples it (eval mode with --G_eval_mode), on a copy:
  acc   class accuracy: the share of 100 samples per class that a small classifier labels with
        their class (shapes_classifier.SmallClassifier, trained on 3000 images of the same
        generator that no run trains on: for Shapes the cached Shapes classifier)
  FIDc  Frechet distance in that classifier's 64-d pooled features, against 2000 other real
        images of the generator (no Inception weights can be downloaded here: these are not
        comparable with Inception FIDs, only between the rows)
  KIDc  KID (metrics.kid: cubic-kernel unbiased MMD^2, 100 subsets of 500) in the same features
Rows go to stdout and to --out (CSV). The wall-clock numbers need a quiet machine: other
processes slow training down and shift every checkpoint; iteration checkpoints do not depend
on load.
"""
import argparse
import copy
import csv
import os
import re
import shlex
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'bench'))

import config as configuration  # noqa: E402
import datasets  # noqa: E402
import devices  # noqa: E402
import errors  # noqa: E402
import inception_utils  # noqa: E402
import metrics  # noqa: E402
import patterns  # noqa: E402
import shapes_classifier  # noqa: E402
import train  # noqa: E402
import train_fns  # noqa: E402

ORIGINAL = ('--shuffle --batch_size 32 --num_D_steps 2 --num_workers 1 --G_ch 16 --D_ch 16 '
            '--G_attn 0 --D_attn 0 --G_shared --shared_dim 32 --dim_z 64 --G_lr 2e-4 --D_lr 2e-4 '
            '--G_init N02 --D_init N02 --ema --use_ema --ema_start 100 --G_eval_mode')
RECIPES = {
    'original': ORIGINAL,
    'diffaugment': ORIGINAL + ' --DiffAugment translation,color,cutout',
    'ada': ORIGINAL + ' --ada_target 0.6 --ada_kimg 20',
    'lecam': ORIGINAL + ' --LeCam 0.3',
    'ac': ORIGINAL + ' --AC_weight 1',
    'launcher': None,  # read from scripts/launch_small_data.sh
}
GENERATORS = {'shapes': datasets.Shapes, 'patterns': patterns.Patterns}
DEFAULT_DATASETS = 'shapes500_32,shapes2000_32,patterns1000_32'
PER_CLASS, REAL_IMAGES, CLASSIFIER_IMAGES = 100, 2000, 3000
FIELDS = ('dataset', 'recipe', 'at', 'itr', 'train_s', 'acc', 'acc_G', 'FIDc', 'KIDc')


def script_flags(path):
  """The train.py flags a launcher script passes before "$@" (its continuation lines joined)."""
  text = open(path).read().replace('\\\n', ' ')
  match = re.search(r'python3? [^\n]*?train\.py"?(.*?)"\$@"', text)
  if not match:
    raise SystemExit('%s has no `python train.py ... "$@"` line' % path)
  return match.group(1).strip()


def recipe_flags(name):
  flags = RECIPES[name]
  return script_flags(os.path.join(ROOT, 'scripts', 'launch_small_data.sh')) if flags is None \
      else flags


def parse_dataset(name):
  match = re.fullmatch(r'(shapes|patterns)(\d+)_(\d+)', name)
  if not match:
    raise SystemExit('unknown dataset %s: use shapesN_R or patternsN_R, e.g. shapes500_32' % name)
  return match.group(1), int(match.group(2)), int(match.group(3))


def make_dataset(name, root):
  """The image folder of `name` under root (written once, seed 0)."""
  kind, count, resolution = parse_dataset(name)
  folder = os.path.join(root, name)
  done = os.path.join(folder, '.complete')
  if not os.path.exists(done):
    print('Writing %s...' % folder, flush=True)
    datasets.write_image_folder(GENERATORS[kind](resolution, num_images=count, seed=0), folder)
    open(done, 'w').close()
  return folder


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


class Reference(object):
  """A dataset kind's classifier and the features of real images (other seeds than the data)."""

  def __init__(self, kind, resolution, root):
    generator = GENERATORS[kind]
    self.names = generator.read_class_names(None)
    if kind == 'shapes':
      self.classifier = shapes_classifier.load_or_train(resolution, root)
    else:
      path = os.path.join(root, '%s%d_classifier.pth' % (kind, resolution))
      self.classifier = shapes_classifier.SmallClassifier(len(self.names),
                                                           resolution=resolution)
      if os.path.exists(path):
        self.classifier.load_state_dict(torch.load(path, weights_only=True))
      else:
        images, labels = shapes_classifier.dataset_images(
            generator(resolution, num_images=CLASSIFIER_IMAGES, seed=1))
        self.classifier = shapes_classifier.fit(images, labels, len(self.names))
        torch.save(self.classifier.state_dict(), path)
      self.classifier.eval()
    images, labels = shapes_classifier.dataset_images(
        generator(resolution, num_images=REAL_IMAGES, seed=2))
    accuracy = float((shapes_classifier.predict(self.classifier, images) == labels).float().mean())
    print('%s %d px classifier: accuracy %.3f on %d real images' % (kind, resolution, accuracy,
                                                                    REAL_IMAGES), flush=True)
    self.features = features(self.classifier, images)
    self.mu, self.sigma = moments(self.features)

  def score(self, G, class_names):
    """acc, FIDc, KIDc of G's samples; class_names are the run's (folder) class names."""
    labels = torch.tensor([self.names.index(name) for name in class_names])
    images, y = shapes_classifier.sample_classes(G, len(labels), PER_CLASS, seed=1)
    acc = float((shapes_classifier.predict(self.classifier, images) == labels[y]).float().mean())
    fake = features(self.classifier, images)
    fid = inception_utils.numpy_calculate_frechet_distance(*moments(fake), self.mu, self.sigma)
    kid, _ = metrics.kid(fake, self.features, 100, min(500, len(fake)))
    return {'acc': acc, 'FIDc': fid, 'KIDc': kid}


@torch.no_grad()
def features(classifier, images, batch_size=500):
  return torch.cat([classifier.features(images[i:i + batch_size])
                    for i in range(0, len(images), batch_size)])


def moments(feats):
  f = feats.double().numpy()
  return f.mean(0), np.cov(f, rowvar=False)


# ---------------------------------------------------------------------------------------------
# Training with checkpoints
# ---------------------------------------------------------------------------------------------


class Finished(Exception):
  pass


def run_recipe(folder, resolution, flags, points, by_minutes, reference, workdir, seed=0,
               device='auto'):
  """Train with `flags` and score G_ema at each point (minutes of training or iterations);
  returns one dict per point."""
  # The bench's own flags last: they override a recipe's length, saving and evaluation.
  control = ['--dataset', folder, '--resolution', str(resolution), '--base_root', workdir,
             '--experiment_name', 'run', '--seed', str(seed), '--num_iters', '10000000',
             '--num_epochs', '1000000', '--save_every', '100000000', '--test_every', '100000000',
             '--device', device]
  config = vars(configuration.prepare_parser().parse_args(shlex.split(flags) + control))
  rows, pending = [], list(points)
  clock = {'start': time.time(), 'paused': 0.0}
  make = train_fns.GAN_training_function

  def hooked(G, D, GD, z_, y_, ema, state_dict, cfg):
    step = make(G, D, GD, z_, y_, ema, state_dict, cfg)
    sampled = ema.target if cfg['ema'] and cfg['use_ema'] else G

    def train_step(x, y):
      out = step(x, y)
      devices.sync(x.device)  # the step's queued work is part of the training time
      elapsed = time.time() - clock['start'] - clock['paused']
      due = (elapsed >= pending[0] * 60) if by_minutes else (state_dict['itr'] >= pending[0])
      if due:
        began = time.time()
        net = copy.deepcopy(sampled)
        if cfg['G_eval_mode']:
          net.eval()
        row = {'at': pending.pop(0), 'itr': state_dict['itr'], 'train_s': round(elapsed, 1)}
        row.update(reference.score(net, cfg['class_names']))
        if sampled is not G:  # and G itself, to tell the EMA's part
          plain = copy.deepcopy(G).eval() if cfg['G_eval_mode'] else copy.deepcopy(G)
          row['acc_G'] = reference.score(plain, cfg['class_names'])['acc']
        rows.append(row)
        print('\n  %s %s: itr %d, %.0f s of training: acc %.3f (G alone %.3f), FIDc %.2f, '
              'KIDc %.4f' % ('minute' if by_minutes else 'itr', row['at'], row['itr'], elapsed,
                             row['acc'], row.get('acc_G', row['acc']), row['FIDc'], row['KIDc']),
              flush=True)
        clock['paused'] += time.time() - began
        if not pending:
          raise Finished()
      return out
    return train_step
  train_fns.GAN_training_function = hooked
  try:
    train.run(config)
  except Finished:
    pass
  finally:
    train_fns.GAN_training_function = make
  if pending:  # train.py stopped early: SIGTERM (it saved first) or the end of the data
    raise SystemExit('training stopped before the checkpoints %s; rows so far: %s'
                     % (', '.join('%g' % p for p in pending), rows))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=errors.HelpFormatter)
  parser.add_argument('--datasets', default=DEFAULT_DATASETS,
                      help='Comma list of shapesN_R / patternsN_R')
  parser.add_argument('--recipes', default=','.join(RECIPES),
                      help='Comma list from %s (default: all)' % ', '.join(RECIPES))
  parser.add_argument('--minutes', default='1,3,10',
                      help='Checkpoints in minutes of training wall time')
  parser.add_argument('--iters', default='',
                      help='Checkpoints in iterations instead of minutes, e.g. 100,200,400')
  parser.add_argument('--try', dest='tries', action='append', default=[],
                      help='An extra recipe NAME=FLAGS (train.py flags), e.g. '
                           '"wide=--G_ch 32 --D_ch 32 ..."; repeat for more')
  parser.add_argument('--extra', default='',
                      help='train.py flags added to every recipe, e.g. "--num_D_steps 1"')
  parser.add_argument('--root', default=os.path.join(ROOT, 'runs', 'bench_small_data'),
                      help='Where the data, classifiers and runs go')
  parser.add_argument('--out', default='',
                      help='CSV file to append the rows to (default: <root>/results.csv)')
  parser.add_argument('--threads', type=int, default=2, help='torch threads')
  devices.add_device_flag(parser)
  args = parser.parse_args()
  for item in args.tries:
    name, _, flags = item.partition('=')
    RECIPES[name] = flags
  recipes = list(dict.fromkeys(  # each once, in order
      [r for r in args.recipes.split(',') if r] + [t.partition('=')[0] for t in args.tries]))
  unknown = [r for r in recipes if r not in RECIPES]
  if unknown:
    parser.error('unknown recipe(s) %s; choose from %s' % (', '.join(unknown), ', '.join(RECIPES)))
  names = [d for d in args.datasets.split(',') if d]
  for name in names:
    parse_dataset(name)
  by_minutes = not args.iters
  points = [float(v) for v in (args.minutes if by_minutes else args.iters).split(',')]
  torch.set_num_threads(args.threads)
  data_root = os.path.join(args.root, 'data')
  os.makedirs(data_root, exist_ok=True)
  out = args.out or os.path.join(args.root, 'results.csv')
  references = {}
  table = []
  for name in names:
    kind, _, resolution = parse_dataset(name)
    folder = make_dataset(name, data_root)
    if (kind, resolution) not in references:
      references[kind, resolution] = Reference(kind, resolution, data_root)
    for recipe in recipes:
      flags = recipe_flags(recipe) + ' ' + args.extra
      print('\n=== %s, %s: %s' % (name, recipe, flags.strip()), flush=True)
      workdir = os.path.join(args.root, 'runs', '%s_%s_%d' % (name, recipe, int(time.time())))
      rows = run_recipe(folder, resolution, flags, points, by_minutes, references[kind, resolution],
                        workdir, device=args.device)
      new = not os.path.exists(out)
      with open(out, 'a', newline='') as f:
        writer = csv.DictWriter(f, FIELDS + ('flags',))
        if new:
          writer.writeheader()
        for row in rows:
          full = dict(row, dataset=name, recipe=recipe, flags=flags.strip())
          writer.writerow(full)
          table.append(full)
  print('\n%-16s %-12s %6s %6s %8s %6s %7s %8s' % (
      'dataset', 'recipe', 'min' if by_minutes else 'itr', 'itr', 'train s', 'acc', 'FIDc', 'KIDc'))
  for row in table:
    print('%-16s %-12s %6g %6d %8.0f %6.3f %7.2f %8.4f' % (
        row['dataset'], row['recipe'], row['at'], row['itr'], row['train_s'], row['acc'],
        row['FIDc'], row['KIDc']))
  print('Rows appended to %s' % out)


if __name__ == '__main__':
  main()
