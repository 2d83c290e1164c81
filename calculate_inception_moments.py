"""Calculate a dataset's Inception moments (mean and covariance of the pool features, for FID)
and report the dataset's own Inception Score.

Usage:
  python calculate_inception_moments.py --dataset I128_hdf5 --data_root data
  python calculate_inception_moments.py --dataset Shapes --resolution 32 --inception_net tf \\
      --inception_weights pt_inception-2015-12-05-6726825d.pth

Takes the shared flags of config.prepare_parser() (--dataset, --data_root, --resolution,
--batch_size, --num_workers, --augment, --shuffle, --parallel, --seed, --device, ...) and
--inception_net / --inception_weights. Writes data_root/{stats_name}_inception_moments.npz for
the torchvision network (the original's name and keys mu, sigma) or
data_root/{stats_name}_inception_moments_tf.npz for tf, where train.py and sample.py find them
(they also look in the working directory, where the original wrote them).

Features stream into float64 sums, so memory does not grow with the dataset. The IS splits are
taken over a random order seeded by --seed: label-ordered data would otherwise score low.

--metrics with KID, PR, DC or IFID (metrics.py) also fills the dataset's feature cache, which
train.py and sample.py read for those metrics, in the same pass:
data_root/{stats_name}_inception_cache_{network}_{resize}_{N}.npz (float32 features, labels, and
the nearest-neighbour distances for PR/DC) and ..._classes.h5 (per-class moments for IFID). Its
features take N x 8 KB (memory and disk); --inception_resize other than auto adds the policy to
the moments file's name.
"""
import os

import config as configuration
import datasets
import errors
import inception_utils
import metrics


def prepare_parser():
  parser = configuration.prepare_parser()
  parser.description = ('Calculate and store the Inception moments (FID statistics) and the '
                        'Inception Score of a dataset.')
  return parser


def run(config):
  """Computes and saves the moments of config's dataset; returns the file's path."""
  config = configuration.update_config_roots(dict(config))
  config.update(drop_last=False, use_multiepoch_sampler=False, start_itr=0)  # every image once
  for key, least in (('batch_size', 1), ('num_workers', 0)):
    if config[key] < least:
      raise errors.UserError('--%s must be at least %d (got %d)' % (key, least, config[key]))
  path = inception_utils.moments_path(config)  # checks the dataset before the slow parts
  configuration.check_writable_folder(os.path.dirname(path), '--data_root %s' % config['data_root'],
                              '--data_root or --base_root')
  cached = [n for n in metrics.parse_metrics(config['metrics']) if n not in ('IS', 'FID')]
  policy = inception_utils.resize_policy(config['inception_net'], config['inception_resize'])
  net = inception_utils.load_inception_net(config['parallel'], config['inception_net'],
                                           config['inception_weights'], config['device'],
                                           resize=policy)
  loader = datasets.get_data_loaders(**config)[0]
  batches = iter(loader)
  if cached:  # the same pass also keeps every image's features and label
    cache, data = metrics.dataset_cache(config)
    collection = metrics.collect(lambda: next(batches), net, len(loader.sampler),
                                 {'logits', 'moments', 'features', 'labels'},
                                 shuffle_seed=config['seed'], progress=True)
    stats = collection.stats
  else:
    stats = inception_utils.accumulate_inception_stats(
        lambda: next(batches), net, len(loader.sampler), shuffle_seed=config['seed'],
        progress=True)
  IS_mean, IS_std = stats.inception_score()
  print('Training data from dataset %s has IS of %5.5f +/- %5.5f (Inception network: %s%s)'
        % (config['dataset'], IS_mean, IS_std, config['inception_net'],
           '' if policy == inception_utils.NATIVE_RESIZE[config['inception_net']]
           else ', %s resize' % policy))
  mu, sigma = stats.moments()
  inception_utils.save_moments(path, mu, sigma, config['inception_net'], stats.count, policy)
  print('Saved the means and covariances of %d images to %s' % (stats.count, path))
  if cached:
    metrics.Reference.from_collection(config['dataset'], collection, cache,
                                      data.class_names).prepare(cached)
    print('Saved the features of %d images for %s to %s' % (stats.count, ','.join(cached),
                                                            cache.path))
  return path


def main(argv=None):
  config = vars(prepare_parser().parse_args(argv))
  print(config)
  run(config)


if __name__ == '__main__':
  errors.run_main(main)
