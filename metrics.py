"""Image metrics from one Inception pass: a registry of IS, FID, KID, PR, DC and IFID.

Every metric is one registered function with a name, a direction and what it consumes of the
pass, so that one pass over the images feeds all metrics asked for (--metrics):

  name  returns                  better  consumes
  IS    IS_mean, IS_std          higher  logits: InceptionStats' float64 split sums
  FID   FID                      lower   moments: InceptionStats' float64 feature sums
  KID   KID_mean, KID_std        lower   features: float32 pool features, N x 2048
  PR    precision, recall        higher  features
  DC    density, coverage        higher  features
  IFID  IFID, IFID_classes       lower   features and labels (IFID_classes: each class's FID)

Definitions (names after the papers; the code is this project's):
  KID   Binkowski et al. 2018 as torch-fidelity computes it: the unbiased MMD^2 with the kernel
        k(x, y) = (x.y / d + 1)^3 on --kid_subsets pairs of subsets of --kid_subset_size images
        (each subset drawn without replacement, SOURCE's then REF's, from numpy's
        RandomState(KID_SEED) over the images in stream order); mean and std (ddof 0).
  PR    improved precision and recall, Kynkaanniemi et al. 2019, k = 3: the radius of an image
        is the distance to its k-th nearest other image of its own set; precision is the share
        of SOURCE images within the radius of some REF image, recall the share of REF images
        within the radius of some SOURCE image (boundary included, as the authors' code).
  DC    density and coverage, Naeem et al. 2020, k = 5 on REF's radii: density is the number of
        REF balls around each SOURCE image over k, averaged; coverage the share of REF images
        whose ball holds a SOURCE image (strictly inside, as the authors' code).
  IFID  the mean over REF's classes of the FID between SOURCE's and REF's images of the class.

Memory: full-feature metrics keep N x 2048 float32 features per set on the device (410 MB for
50k images) and compute distances in blocks of at most BLOCK x BLOCK (64 MB), never N x N.
KID holds two subsets' kernels at a time; IFID one class's d x d moments at a time. Time is in
the distances: PR and DC compare every pair (bench/bench_metrics.py measures it).

REF's statistics (its moments, features, labels, nearest-neighbour distances and per-class
moments) are cached next to it (ReferenceCache), keyed by REF's content, the network, the resize
policy and the number of images. For train.py and sample.py the reference is --dataset: FID
keeps using its moments file, the other metrics read the cache that
`calculate_inception_moments.py --metrics ...` makes.

Under torch.distributed each rank runs the pass over its share of the images; the float64 sums
are all-reduced, the feature matrices all-gathered in stream order, rank 0 computes the metrics
and broadcasts them, so the numbers do not depend on the number of ranks or the batch size.
"""
import collections
import hashlib
import json
import os
import warnings

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import errors
import inception_utils as iu

DEFAULT_METRICS = 'IS,FID'
KID_SEED = 2020  # torch-fidelity's default seed: the same features give its subsets
PR_K, DC_K = 3, 5
KNN_MAX = max(PR_K, DC_K)
BLOCK = 4096
CACHE_VERSION = 1

# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

Metric = collections.namedtuple('Metric', 'name higher consumes keys best fn')
METRICS = collections.OrderedDict()


def register(name, higher, consumes, keys, best=None):
  """Register fn(source, ref, config, shared) -> {key: value} as metric `name`. `consumes`:
  of 'logits', 'moments', 'features', 'labels'; `best`: the key --which_best NAME compares
  (default the first)."""
  def add(fn):
    METRICS[name] = Metric(name, higher, tuple(consumes), tuple(keys), best or keys[0], fn)
    return fn
  return add


def parse_metrics(spec):
  """'IS,FID,...' -> the registered names asked for, in registry order."""
  names = [n.strip() for n in str(spec).split(',') if n.strip()]
  unknown = [n for n in names if n not in METRICS]
  if unknown or not names:
    raise errors.UserError('unknown metric %s in --metrics %s; use a comma-separated list of %s'
                           % (', '.join(unknown) or '(none)', spec, ','.join(METRICS)))
  return [n for n in METRICS if n in names]


def consumes(names, ref=False):
  """What the metrics `names` consume (of REF with ref=True: IS needs nothing of it)."""
  return set(c for n in names for c in METRICS[n].consumes
             if not (ref and n == 'IS'))


def value_keys(names):
  return [k for n in names for k in METRICS[n].keys]


def best_metric(which_best):
  """(result key, higher is better, state_dict key) of --which_best: a metric name (IS, FID,
  KID, PR = recall, DC = coverage, IFID) or one of their value keys (precision, density, ...)."""
  for metric in METRICS.values():
    if which_best == metric.name or which_best in metric.keys:
      key = metric.best if which_best == metric.name else which_best
      state_key = {'IS_mean': 'best_IS', 'FID': 'best_FID'}.get(key, 'best_' + key)
      return key, metric.higher, state_key
  raise errors.UserError('--which_best %s is not a metric; use %s or one of their values (%s)'
                         % (which_best, ', '.join(METRICS), ', '.join(value_keys(METRICS))))


def monitored(config):
  """The metrics of train.py and sample.py: IS always (its keys open every log record), then
  --metrics, without FID under --no_fid."""
  names = set(parse_metrics(config.get('metrics') or DEFAULT_METRICS)) | {'IS'}
  if config.get('no_fid'):
    names.discard('FID')
  return [n for n in METRICS if n in names]


def initial_best(config):
  """The state_dict entry that keeps the best value of a --which_best other than IS and FID
  (which have theirs since the original), so that a resumed run keeps its best."""
  key, higher, state_key = best_metric(config['which_best'])
  if state_key in ('best_IS', 'best_FID'):
    return {}
  return {state_key: -float('inf') if higher else float('inf')}


def check_counts(names, n_source, n_ref, config, source='SOURCE', ref='REF'):
  """Refuse image counts a metric cannot use, before any slow work."""
  def need(ok, message):
    if not ok:
      raise errors.UserError(message)
  need(n_source >= 2, 'the metrics need at least 2 images of %s, got %d' % (source, n_source))
  if n_ref is not None and consumes(names, ref=True):
    need(n_ref >= 2, 'the metrics need at least 2 images of %s, got %d' % (ref, n_ref))
  if 'KID' in names:
    size, least = config['kid_subset_size'], min(n_source, n_ref or n_source)
    need(size <= least, '--kid_subset_size %d is larger than the %d images of %s; lower '
         '--kid_subset_size to at most %d or use more images'
         % (size, least, source if n_source == least else ref, least))
  for name, k, side, n in (('PR', PR_K, source, n_source), ('PR', PR_K, ref, n_ref),
                           ('DC', DC_K, ref, n_ref)):
    if name in names and n is not None:
      need(n > k, '%s needs more than %d images of %s (its k = %d nearest neighbours), got %d'
           % (name, k, side, k, n))


def check_class_counts(source_labels, ref_labels, source='SOURCE', ref='REF', names=None):
  """IFID: at least 2 images of every REF class in both sets (labels known up front)."""
  ref_counts = np.bincount(np.asarray(ref_labels, np.int64))
  classes = np.flatnonzero(ref_counts)
  counts = np.bincount(np.asarray(source_labels, np.int64), minlength=len(ref_counts))
  extra = np.flatnonzero(counts[len(ref_counts):])
  if len(extra):
    raise errors.UserError('%s has images of class %d, which %s does not have; IFID compares '
                           'classes of the same index' % (source, len(ref_counts) + extra[0], ref))

  def name(c):
    return '%d (%s)' % (c, names[c]) if names is not None and c < len(names) else str(c)
  for side, count in ((source, counts), (ref, ref_counts)):
    few = [c for c in classes if count[c] < 2]
    if few:
      raise errors.UserError('IFID needs at least 2 images of every class in %s and %s; %s has '
                             '%d of class %s%s; use more images or drop IFID'
                             % (source, ref, side, count[few[0]], name(few[0]),
                                ' (and %d more classes)' % (len(few) - 1) if len(few) > 1
                                else ''))


# ---------------------------------------------------------------------------------------------
# One pass: statistics, features and labels of every rank, in stream order
# ---------------------------------------------------------------------------------------------


class Collection(object):
  """What one Inception pass keeps: InceptionStats (IS sums, and FID sums when asked) and, when a
  metric consumes them, float32 features (N x d) and int64 labels (-1: unlabelled) on the
  network's device."""

  def __init__(self, stats, features=None, labels=None):
    self.stats, self.features, self.labels = stats, features, labels

  @property
  def count(self):
    return self.stats.count


def _gather_rows(rows, num_images):
  """Every rank's share (rank_share) of a tensor's rows, concatenated in rank order."""
  world, _ = iu.world_and_rank()
  if world == 1:
    return rows
  base, extra = divmod(num_images, world)
  padded = torch.zeros((base + (extra > 0),) + rows.shape[1:], dtype=rows.dtype,
                       device=rows.device)
  padded[:len(rows)] = rows
  parts = [torch.empty_like(padded) for _ in range(world)]
  dist.all_gather(parts, padded)
  return torch.cat([part[:base + (r < extra)] for r, part in enumerate(parts)])


def collect(sample, net, num_images, needs, num_splits=10, shuffle_seed=None, progress=False,
            description='Inception'):
  """One pass over num_images images from sample() (each rank draws its own share) keeping what
  `needs` names (consumes() of the metrics): a Collection of all ranks' images."""
  keep = bool(needs & {'features', 'labels'})
  start, stop = iu.rank_share(num_images)
  share = stop - start
  stats = iu.InceptionStats(share, num_splits, shuffle_seed, start=start, total=num_images)
  device = next(net.parameters()).device
  features = None  # allocated at the network's feature width
  labels = torch.full((share,), -1, dtype=torch.int64, device=device) if keep else None
  done = 0
  bar = tqdm(total=share, unit='img', desc=description, disable=not progress)
  for pool, logits, y in iu.iterate_activations(sample, net, share):
    stats.update(pool if 'moments' in needs else None, logits)
    if keep:
      if features is None:
        features = torch.empty(share, pool.shape[1], device=device)
      features[done:done + len(pool)] = pool.float()
      if y is not None:
        labels[done:done + len(pool)] = torch.as_tensor(y).to(device, torch.int64).view(-1)
    done += len(pool)
    bar.update(len(pool))
  bar.close()
  stats.all_reduce()
  if keep:
    if features is None:  # a rank without images
      features = torch.empty(0, iu.FEATURE_DIM, device=device)
    features, labels = _gather_rows(features, num_images), _gather_rows(labels, num_images)
  return Collection(stats, features, labels)


def broadcast(results):
  """Rank 0's results on every rank."""
  if iu.world_and_rank()[0] == 1:
    return results
  box = [results]
  dist.broadcast_object_list(box, src=0)
  return box[0]


def compute(names, source, ref, config):
  """{key: value} of the metrics `names` for a Collection `source` against a Reference `ref`."""
  shared = {'names': names}
  results = {}
  for name in names:
    results.update(METRICS[name].fn(source, ref, config, shared))
  return results


def measure(names, sample, net, num_images, ref, config, **collect_options):
  """collect() then compute() on rank 0; the results on every rank."""
  source = collect(sample, net, num_images, consumes(names), **collect_options)
  main = iu.world_and_rank()[1] == 0
  return broadcast(compute(names, source, ref, config) if main else None)


# ---------------------------------------------------------------------------------------------
# Distances in blocks
# ---------------------------------------------------------------------------------------------


def _sq_norms(x):
  return torch.einsum('ij,ij->i', x, x)


def _sq_distances(a, a_sq, b, b_sq):
  """Squared Euclidean distances between the rows of a and b (float32, clamped at 0)."""
  d = torch.addmm(b_sq.unsqueeze(0), a, b.T, alpha=-2.)
  return d.add_(a_sq.unsqueeze(1)).clamp_(min=0.)


def _smallest(current, d, k, dim):
  """current (n x k) merged with the k smallest of d along dim (d's other dim has n)."""
  part = d.topk(min(k, d.shape[dim]), dim=dim, largest=False).values
  part = part if dim == 1 else part.T
  return torch.cat([current, part], 1).topk(k, dim=1, largest=False).values


def knn_sq_distances(x, k=KNN_MAX, block=BLOCK):
  """(N, k): the squared distances of each row of x to its k nearest other rows, ascending.
  Blocks on and above the diagonal serve the rows of both of their sides: each pair once."""
  n = len(x)
  sq = _sq_norms(x)
  best = torch.full((n, k), float('inf'), device=x.device)
  for i in range(0, n, block):
    rows = slice(i, min(i + block, n))
    for j in range(i, n, block):
      cols = slice(j, min(j + block, n))
      d = _sq_distances(x[rows], sq[rows], x[cols], sq[cols])
      if i == j:
        d.fill_diagonal_(float('inf'))  # not its own neighbour
      best[rows] = _smallest(best[rows], d, k, 1)
      if i != j:
        best[cols] = _smallest(best[cols], d, k, 0)
  return best


def manifold_scores(fake, real, real_knn, fake_knn=None, pr=True, dc=True, block=BLOCK):
  """Precision/recall (PR_K) and density/coverage (DC_K) in one blocked pass over all
  (fake, real) pairs. real_knn / fake_knn: knn_sq_distances of each set (fake's for recall)."""
  n, m = len(fake), len(real)
  device = fake.device
  fake_sq, real_sq = _sq_norms(fake), _sq_norms(real)
  r_pr = real_knn[:, PR_K - 1] if pr else None
  f_pr = fake_knn[:, PR_K - 1] if pr else None
  r_dc = real_knn[:, DC_K - 1] if dc else None
  in_real = torch.zeros(n, dtype=torch.bool, device=device)
  in_fake = torch.zeros(m, dtype=torch.bool, device=device)
  balls = torch.zeros(n, dtype=torch.int64, device=device)
  nearest = torch.full((m,), float('inf'), device=device)
  for i in range(0, n, block):
    rows = slice(i, min(i + block, n))
    for j in range(0, m, block):
      cols = slice(j, min(j + block, m))
      d = _sq_distances(fake[rows], fake_sq[rows], real[cols], real_sq[cols])
      if pr:
        in_real[rows] |= (d <= r_pr[cols].unsqueeze(0)).any(1)
        in_fake[cols] |= (d <= f_pr[rows].unsqueeze(1)).any(0)
      if dc:
        balls[rows] += (d < r_dc[cols].unsqueeze(0)).sum(1)
        nearest[cols] = torch.minimum(nearest[cols], d.min(0).values)
  out = {}
  if pr:
    out.update(precision=float(in_real.double().mean()), recall=float(in_fake.double().mean()))
  if dc:
    out.update(density=float(balls.sum().double() / (DC_K * n)),
               coverage=float((nearest < r_dc).double().mean()))
  return out


# ---------------------------------------------------------------------------------------------
# The metrics
# ---------------------------------------------------------------------------------------------


@register('IS', True, ['logits'], ['IS_mean', 'IS_std'])
def inception_score(source, ref, config, shared):
  mean, std = source.stats.inception_score()
  return {'IS_mean': mean, 'IS_std': std}


@register('FID', False, ['moments'], ['FID'])
def frechet_distance(source, ref, config, shared):
  mu, sigma = source.stats.moments()
  return {'FID': iu.numpy_calculate_frechet_distance(mu, sigma, *ref.moments())}


def _poly_kernel_sum(a, b, exclude_diagonal=False):
  """sum of (a_i.b_j / d + 1)^3 (float32 products, float64 kernel and sum)."""
  k = (a @ b.T).double().div_(a.shape[1]).add_(1.).pow_(3)
  total = k.sum()
  if exclude_diagonal:
    total = total - k.diagonal().sum()
  return float(total)


def mmd2_unbiased(x, y):
  """The unbiased MMD^2 of two equal-sized sets with the cubic polynomial kernel."""
  m = len(x)
  within = _poly_kernel_sum(x, x, True) + _poly_kernel_sum(y, y, True)
  return within / (m * (m - 1)) - 2. * _poly_kernel_sum(x, y) / (m * m)


def kid(fake, real, subsets, subset_size, seed=KID_SEED):
  """(mean, std) of mmd2_unbiased over `subsets` pairs of random subsets (see the module doc)."""
  rng = np.random.RandomState(seed)
  values = np.empty(subsets)
  for i in range(subsets):
    a = fake[torch.from_numpy(rng.choice(len(fake), subset_size, replace=False)).to(fake.device)]
    b = real[torch.from_numpy(rng.choice(len(real), subset_size, replace=False)).to(real.device)]
    values[i] = mmd2_unbiased(a, b)
  return float(values.mean()), float(values.std())


@register('KID', False, ['features'], ['KID_mean', 'KID_std'])
def kernel_inception_distance(source, ref, config, shared):
  mean, std = kid(source.features, ref.features(source.features.device),
                  config['kid_subsets'], config['kid_subset_size'])
  return {'KID_mean': mean, 'KID_std': std}


def _manifold(source, ref, shared):
  """The PR and DC values asked for, from one pass (memoized for the other of the two)."""
  if 'manifold' not in shared:
    pr, dc = 'PR' in shared['names'], 'DC' in shared['names']
    fake = source.features
    shared['manifold'] = manifold_scores(
        fake, ref.features(fake.device), ref.knn(fake.device),
        knn_sq_distances(fake, PR_K) if pr else None, pr=pr, dc=dc)
  return shared['manifold']


@register('PR', True, ['features'], ['precision', 'recall'], best='recall')
def precision_recall(source, ref, config, shared):
  values = _manifold(source, ref, shared)
  return {k: values[k] for k in ('precision', 'recall')}


@register('DC', True, ['features'], ['density', 'coverage'], best='coverage')
def density_coverage(source, ref, config, shared):
  values = _manifold(source, ref, shared)
  return {k: values[k] for k in ('density', 'coverage')}


def feature_moments(features):
  """(mu, sigma) of float32 features by InceptionStats' float64 sums (no small-N warning)."""
  stats = iu.InceptionStats(len(features))
  stats.update(pool=features)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    return stats.moments()


@register('IFID', False, ['features', 'labels'], ['IFID'])
def intra_class_fid(source, ref, config, shared):
  """Over REF's classes with 2 or more images in SOURCE (evaluate.py refuses fewer up front;
  train.py's random labels may leave a class short, which is then left out with a warning)."""
  labels = source.labels.cpu().numpy()
  if (labels < 0).any():
    raise errors.UserError('IFID needs the class of every image; these images have none')
  per_class, small, skipped = {}, 0, 0
  for c, ref_mu, ref_sigma in ref.class_moments():
    mine = np.flatnonzero(labels == c)
    if len(mine) < 2:
      skipped += 1
      continue
    mu, sigma = feature_moments(source.features[torch.from_numpy(mine).to(
        source.features.device)])
    small += len(mine) <= source.features.shape[1]
    name = ref.class_names[c] if ref.class_names is not None else str(c)
    per_class[name] = iu.numpy_calculate_frechet_distance(mu, sigma, ref_mu, ref_sigma)
  if skipped:
    warnings.warn('IFID over %d classes: %d classes of the reference have fewer than 2 of the %d '
                  'images; use more images' % (len(per_class), skipped, len(labels)),
                  RuntimeWarning, stacklevel=2)
  if small:
    warnings.warn('IFID: %d classes have no more images than the %d feature dimensions, so their '
                  'FIDs are biased upwards; compare IFIDs of equal images per class'
                  % (small, source.features.shape[1]), RuntimeWarning, stacklevel=2)
  value = float(np.mean(list(per_class.values()))) if per_class else float('nan')
  return {'IFID': value, 'IFID_classes': per_class}


# ---------------------------------------------------------------------------------------------
# The reference and its cache
# ---------------------------------------------------------------------------------------------


def content_stamp(path):
  """What a file or folder holds, cheaply: path, size and modification time of the file, or of
  every non-hidden file below the folder (hashed)."""
  path = os.path.abspath(path)
  if os.path.isfile(path):
    st = os.stat(path)
    return {'path': path, 'size': st.st_size, 'mtime_ns': st.st_mtime_ns}
  digest, count = hashlib.sha256(), 0
  for root, dirs, files in os.walk(path):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    for name in sorted(f for f in files if not f.startswith('.')):
      full = os.path.join(root, name)
      st = os.stat(full)
      digest.update(('%s\0%d\0%d\n' % (os.path.relpath(full, path), st.st_size,
                                       st.st_mtime_ns)).encode('utf-8', 'surrogateescape'))
      count += 1
  return {'path': path, 'files': count, 'sha256': digest.hexdigest()}


class ReferenceCache(object):
  """REF's statistics in `path` (.npz: mu, sigma, features, labels, knn) and path minus .npz plus
  '_classes.h5' (per-class moments), each holding `key` (REF's content stamp, the network, the
  resize policy, the number of images). A file with another key is stale: it is rebuilt."""

  def __init__(self, path, key):
    self.path = path
    self.key = json.dumps(dict(key, version=CACHE_VERSION), sort_keys=True)
    self.class_path = path[:-len('.npz')] + '_classes.h5'

  def current(self):
    """Whether the file exists and holds this key (reads the key alone)."""
    try:
      with np.load(self.path) as f:
        return str(f['key']) == self.key
    except (OSError, KeyError, ValueError):  # missing, older, or damaged: rebuilt
      return False

  def load(self):
    with np.load(self.path) as f:
      return {k: f[k] for k in f.files if k != 'key'}

  def save(self, arrays):
    """Write atomically; a folder that cannot be written costs a warning, not the run."""
    tmp = '%s.%d.tmp' % (self.path, os.getpid())
    try:
      os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
      with open(tmp, 'wb') as f:
        np.savez(f, key=np.array(self.key), **arrays)
      os.replace(tmp, self.path)
    except OSError as e:
      if os.path.exists(tmp):
        os.remove(tmp)
      warnings.warn('cannot write the reference cache %s (%s); it is recomputed next time'
                    % (self.path, errors.os_reason(e)), RuntimeWarning, stacklevel=2)


class Reference(object):
  """REF as the metrics see it: moments (FID), float32 features and labels (KID, PR, DC, IFID),
  squared distances to each image's KNN_MAX nearest neighbours (PR, DC) and per-class moments
  (IFID). A cached REF is read on first use (rank 0 alone computes metrics); what derives from
  the features is computed on first use and added to the cache."""

  def __init__(self, name, count=0, moments=None, features=None, labels=None, cache=None,
               class_names=None):
    self.name, self.count, self.cache, self.class_names = name, count, cache, class_names
    self._moments, self._features, self._labels, self._knn = moments, features, labels, None
    self._pending = features is None and cache is not None

  @classmethod
  def from_collection(cls, name, collection, cache=None, class_names=None):
    """REF from a pass over its images (see prepare)."""
    moments = collection.stats.moments() if 'feature_sum' in collection.stats.sums else None
    return cls(name, collection.count, moments, collection.features, collection.labels, cache,
               class_names)

  def prepare(self, names):
    """Compute what the metrics `names` derive from the features now, and cache it all."""
    if {'PR', 'DC'} & set(names) and self._knn is None:
      self._knn = knn_sq_distances(self._features, KNN_MAX)
    self.save()
    if 'IFID' in names:
      for _ in self.class_moments():
        pass

  def _arrays(self):
    if self._pending:
      arrays = self.cache.load()
      self._pending = False
      self._features = torch.from_numpy(arrays['features'])
      self._labels = torch.from_numpy(arrays['labels'])
      if 'knn' in arrays:
        self._knn = torch.from_numpy(arrays['knn'])
      if self._moments is None and 'mu' in arrays:
        self._moments = arrays['mu'], arrays['sigma']

  def save(self):
    self._arrays()
    if self.cache is None or self._features is None:
      return
    arrays = {'features': self._features.cpu().numpy(), 'labels': self._labels.cpu().numpy()}
    if self._moments is not None:
      arrays.update(mu=self._moments[0], sigma=self._moments[1])
    if self._knn is not None:
      arrays['knn'] = self._knn.cpu().numpy()
    self.cache.save(arrays)

  def moments(self):
    self._arrays()
    if self._moments is None:
      self._moments = feature_moments(self._features)
    return self._moments

  def features(self, device='cpu'):
    self._arrays()
    self._features = self._features.to(device)
    return self._features

  def labels(self):
    self._arrays()
    labels = self._labels.cpu().numpy()
    if (labels < 0).any():
      raise errors.UserError('IFID needs the classes of %s, which has none (a flat folder, or '
                             'an .npz without y); give a REF with classes' % self.name)
    return labels

  def knn(self, device='cpu'):
    self._arrays()
    if self._knn is None:
      self._knn = knn_sq_distances(self.features(device), KNN_MAX)
      self.save()
    self._knn = self._knn.to(device)
    return self._knn

  def class_moments(self):
    """Yields (class, mu, sigma) for every class of REF, from the cache or computed (and then
    cached one class at a time)."""
    import h5py
    labels = self.labels()
    classes = np.unique(labels)
    path = self.cache.class_path if self.cache is not None else None
    try:
      with h5py.File(path, 'r') as f:
        if f.attrs['key'] == self.cache.key and list(f['classes'][:]) == list(classes):
          for i, c in enumerate(classes):
            yield int(c), f['mu'][i], f['sigma'][i]
          return
    except (OSError, KeyError, TypeError, ValueError):
      pass  # missing or stale: computed below
    out = tmp = None
    if path is not None:
      tmp = '%s.%d.tmp' % (path, os.getpid())
      try:
        out = h5py.File(tmp, 'w')
        d = self._features.shape[1]
        out.attrs['key'] = self.cache.key
        out.create_dataset('classes', data=classes)
        out.create_dataset('mu', (len(classes), d), np.float64)
        out.create_dataset('sigma', (len(classes), d, d), np.float64, chunks=(1, d, d))
      except OSError as e:
        warnings.warn('cannot write %s (%s); the per-class moments are recomputed next time'
                      % (path, errors.os_reason(e)), RuntimeWarning, stacklevel=2)
        out = None
    try:
      for i, c in enumerate(classes):
        mine = torch.from_numpy(np.flatnonzero(labels == c)).to(self._features.device)
        mu, sigma = feature_moments(self._features[mine])
        if out is not None:
          out['mu'][i], out['sigma'][i] = mu, sigma
        yield int(c), mu, sigma
      if out is not None:
        out.close()
        out = None
        os.replace(tmp, path)
    finally:
      if out is not None:
        out.close()
      if tmp is not None and os.path.exists(tmp):
        os.remove(tmp)


def cache_path(stamp_path, network, policy, num_images, dataset_name=None, data_root='data'):
  """Where REF's cache lives: inside a folder, beside a file (hidden names), or for a dataset
  name under data_root."""
  tag = 'inception_cache_%s_%s_%d.npz' % (network, policy, num_images)
  if dataset_name is not None:
    return os.path.join(data_root, '%s_%s' % (dataset_name, tag))
  if os.path.isdir(stamp_path):
    return os.path.join(stamp_path, '.' + tag)
  folder, name = os.path.split(os.path.abspath(stamp_path))
  return os.path.join(folder, '.%s.%s' % (name, tag))


def dataset_stamp(info, num_images):
  """The content stamp of a --dataset (datasets.dataset_info): Shapes by its parameters."""
  if info['kind'] == 'shapes':
    return {'dataset': 'Shapes', 'resolution': info['resolution'], 'num_images': num_images}
  return dict(content_stamp(info['path']), resolution=info['resolution'])


def cache_key(stamp, config, num_images, **extra):
  """What REF's statistics depend on: its content, the network and its weights, the resize
  policy, the number of images (and how they were chosen)."""
  network = config.get('inception_net', 'torchvision')
  weights = config.get('inception_weights') or iu.WEIGHTS_URLS[network]
  return dict(extra, source=stamp, network=network, num_images=num_images,
              weights=content_stamp(weights) if os.path.exists(weights) else weights,
              resize=iu.resize_policy(network, config.get('inception_resize', 'auto')))


def dataset_cache(config):
  """(ReferenceCache, dataset) of config's --dataset: every image, cached under data_root."""
  import datasets  # deferred: train.py's default metrics never open the data here
  data = datasets.open_dataset(config['dataset'], config['data_root'], config.get('resolution', 0))
  key = cache_key(dataset_stamp(data.info, len(data)), config, len(data))
  path = cache_path(data.info['path'], key['network'], key['resize'], len(data),
                    data.info['stats_name'], config['data_root'])
  return ReferenceCache(path, key), data


def cache_command(config, names):
  """The command that fills the cache of config's dataset for the metrics `names`."""
  return '%s --metrics %s' % (iu.moments_command(config), ','.join(names))


def dataset_reference(config, names):
  """REF of train.py and sample.py, config's --dataset: the moments file for FID (as without
  --metrics) and the cache for the other metrics; a UserError naming the command that makes a
  missing one, before any slow work."""
  needs = consumes(names, ref=True)
  moments = iu.load_moments(config)[:2] if 'moments' in needs else None
  if not needs - {'moments', 'logits'}:
    return Reference(config['dataset'], moments=moments)
  cache, data = dataset_cache(config)
  if not cache.current():
    raise errors.UserError('no current Inception feature cache of --dataset %s for %s (looked for '
                           '%s; the data may have changed since); make it with: %s'
                           % (config['dataset'], ','.join(names), cache.path,
                              cache_command(config, [n for n in names
                                                     if n not in ('IS', 'FID')])))
  return Reference(config['dataset'], len(data), moments, cache=cache,
                   class_names=data.class_names)


# ---------------------------------------------------------------------------------------------
# The metric function of train.py and sample.py
# ---------------------------------------------------------------------------------------------


def prepare_metrics(config, device=None):
  """evaluate(sample, num_images, prints=True) -> {key: value} for monitored(config), FID None
  when it is not computed; attributes network, resize, names. IS and FID alone (the default)
  go through inception_utils.prepare_inception_metrics, exactly as without --metrics."""
  names = monitored(config)
  network = config.get('inception_net', 'torchvision')
  policy = iu.resize_policy(network, config.get('inception_resize', 'auto'))
  if set(names) <= {'IS', 'FID'} and policy == iu.NATIVE_RESIZE[network]:
    get_inception_metrics = iu.prepare_inception_metrics(
        config['dataset'], config['parallel'], config['no_fid'], network=network,
        weights=config['inception_weights'], data_root=config['data_root'],
        resolution=config['resolution'], device=device)

    def evaluate(sample, num_images, prints=True):
      IS_mean, IS_std, FID = get_inception_metrics(sample, num_images, num_splits=10,
                                                   prints=prints)
      return {'IS_mean': IS_mean, 'IS_std': IS_std, 'FID': FID if 'FID' in names else None}
  else:
    ref = dataset_reference(config, names)
    check_counts(names, config['num_inception_images'], ref.count or None, config,
                 'the --num_inception_images', '--dataset %s' % config['dataset'])
    net = iu.load_inception_net(config['parallel'], network, config['inception_weights'],
                                device, resize=policy)

    def evaluate(sample, num_images, prints=True):
      if prints:
        print('Gathering activations of %d images for %s (Inception network: %s, %s resize)...'
              % (num_images, ','.join(names), network, policy))
      return dict({'FID': None}, **measure(names, sample, net, num_images, ref, config))
  evaluate.network, evaluate.resize, evaluate.names = network, policy, names
  return evaluate

