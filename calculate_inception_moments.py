"""Calculate a dataset's Inception moments (mean and covariance of the pool features, for FID)
and report the dataset's own Inception Score.

Usage:
  python calculate_inception_moments.py --dataset I128_hdf5 --data_root data
  python calculate_inception_moments.py --dataset Shapes --resolution 32 --inception_net tf \\
      --inception_weights pt_inception-2015-12-05-6726825d.pth

Takes the shared flags of utils.prepare_parser() (--dataset, --data_root, --resolution,
--batch_size, --num_workers, --augment, --shuffle, --parallel, --seed, --device, ...) and
--inception_net / --inception_weights. Writes data_root/{stats_name}_inception_moments.npz for
the torchvision network (the original's name and keys mu, sigma) or
data_root/{stats_name}_inception_moments_tf.npz for tf, where train.py and sample.py find them
(they also look in the working directory, where the original wrote them).

Features stream into float64 sums, so memory does not grow with the dataset. The IS splits are
taken over a random order seeded by --seed: label-ordered data would otherwise score low.
"""
import os

import datasets
import errors
import inception_utils
import utils


def prepare_parser():
  parser = utils.prepare_parser()
  parser.description = ('Calculate and store the Inception moments (FID statistics) and the '
                        'Inception Score of a dataset.')
  return parser


def run(config):
  """Computes and saves the moments of config's dataset; returns the file's path."""
  config = utils.update_config_roots(dict(config))
  config.update(drop_last=False, use_multiepoch_sampler=False, start_itr=0)  # every image once
  for key, least in (('batch_size', 1), ('num_workers', 0)):
    if config[key] < least:
      raise errors.UserError('--%s must be at least %d (got %d)' % (key, least, config[key]))
  path = inception_utils.moments_path(config)  # checks the dataset before the slow parts
  utils.check_writable_folder(os.path.dirname(path), '--data_root %s' % config['data_root'],
                              '--data_root or --base_root')
  net = inception_utils.load_inception_net(config['parallel'], config['inception_net'],
                                           config['inception_weights'], config['device'])
  loader = datasets.get_data_loaders(**config)[0]
  batches = iter(loader)
  stats = inception_utils.accumulate_inception_stats(
      lambda: next(batches), net, len(loader.sampler), shuffle_seed=config['seed'],
      progress=True)
  IS_mean, IS_std = stats.inception_score()
  print('Training data from dataset %s has IS of %5.5f +/- %5.5f (Inception network: %s)'
        % (config['dataset'], IS_mean, IS_std, config['inception_net']))
  mu, sigma = stats.moments()
  inception_utils.save_moments(path, mu, sigma, config['inception_net'], stats.count)
  print('Saved the means and covariances of %d images to %s' % (stats.count, path))
  return path


def main(argv=None):
  config = vars(prepare_parser().parse_args(argv))
  print(config)
  run(config)


if __name__ == '__main__':
  errors.run_main(main)
