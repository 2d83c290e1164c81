"""Inception Score and FID: the two Inception networks, exact FID, streaming feature statistics.

Two networks, chosen by --inception_net and named next to every number they produce:
  torchvision  torchvision's Inception v3, the original BigGAN-PyTorch monitor (WrapInception);
               its numbers are comparable to the original's, not to papers (IS 5-10% lower).
  tf           the TF 2015-12-05 Inception graph of the IS/FID papers, ported to PyTorch; loads
               pytorch-fid's pt_inception-2015-12-05-6726825d.pth as-is. IS uses its 1008-way
               logits without the bias, as the papers' code does.
Weights come from the torch hub cache (downloaded there when online) or --inception_weights PATH.

Resize policies (--inception_resize), named next to every number with the network:
  tf      TF 1.x bilinear resize without align_corners: the tf network's own (its default)
  torch   PyTorch bilinear with align_corners=True: the original monitor's (torchvision default)
  clean   clean-fid's: PIL bicubic on each channel of the uint8 image, in float, clipped to 0..255
Another policy than the network's own resizes to 299 x 299 before the network (ResizedInception),
whose own resize then has nothing left to do.

Generated images are quantized to uint8 levels before the network (as saved images would be);
features are summed in float64 as they stream by (memory O(d^2), not O(N)), also across
torch.distributed ranks; FID is exact in float64 (see trace_sqrt_product).

How train.py / sample.py call it (config from utils.prepare_parser()):

  get_inception_metrics = inception_utils.prepare_inception_metrics(
      config['dataset'], config['parallel'], config['no_fid'], network=config['inception_net'],
      weights=config['inception_weights'], data_root=config['data_root'],
      resolution=config['resolution'], device=device)
  IS_mean, IS_std, FID = get_inception_metrics(sample, config['num_inception_images'],
                                               num_splits=10)
  # log get_inception_metrics.network next to the numbers

where sample() returns (images in [-1, 1] NCHW, labels). The moments file comes from
calculate_inception_moments.py (see moments_path / load_moments).
"""
import contextlib
import os
import shlex
import warnings

import numpy as np
import scipy.linalg
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.inception import InceptionA, InceptionC, InceptionE
from tqdm import tqdm

import distributed
import errors

NETWORKS = ('torchvision', 'tf')
WEIGHTS_URLS = {
    'torchvision': torchvision.models.Inception_V3_Weights.IMAGENET1K_V1.url,
    'tf': 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
          'pt_inception-2015-12-05-6726825d.pth',
}
FEATURE_DIM = 2048

# The trunk shared by both networks: 299x299 input -> 2048 x 8 x 8.
_TRUNK = ('Conv2d_1a_3x3', 'Conv2d_2a_3x3', 'Conv2d_2b_3x3', 'maxpool1', 'Conv2d_3b_1x1',
          'Conv2d_4a_3x3', 'maxpool2', 'Mixed_5b', 'Mixed_5c', 'Mixed_5d', 'Mixed_6a', 'Mixed_6b',
          'Mixed_6c', 'Mixed_6d', 'Mixed_6e', 'Mixed_7a', 'Mixed_7b', 'Mixed_7c')


def _pool_features(net, x):
  """Global average of the last Inception block on a preprocessed 299x299 batch: (N, 2048)."""
  for name in _TRUNK:
    x = getattr(net, name)(x)
  return x.mean((2, 3))


# ---------------------------------------------------------------------------------------------
# torchvision network (the original's monitor)
# ---------------------------------------------------------------------------------------------


class WrapInception(nn.Module):
  """torchvision Inception v3 on images in [-1, 1]: ImageNet normalisation, bilinear resize to
  299 (align_corners=True, as the original), returns (pool features, logits)."""

  def __init__(self, net):
    super().__init__()
    self.net = net
    self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1))
    self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1))

  def forward(self, x):
    x = ((x + 1.) / 2. - self.mean) / self.std
    if x.shape[2] != 299 or x.shape[3] != 299:
      x = F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=True)
    pool = _pool_features(self.net, x)
    return pool, self.net.fc(pool)


# ---------------------------------------------------------------------------------------------
# TF 2015-12-05 network (the papers' IS/FID)
# ---------------------------------------------------------------------------------------------


def _tf_avg_pool(x):
  # TF's 3x3 'SAME' average pool divides by the number of real (unpadded) pixels.
  return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _tf_max_pool(x):
  # The graph's last block pools with max instead of average (a quirk of that graph).
  return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _TFInceptionA(InceptionA):
  def _forward(self, x):
    return [self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_tf_avg_pool(x))]


class _TFInceptionC(InceptionC):
  def _forward(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    b7dbl = x
    for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                  self.branch7x7dbl_4, self.branch7x7dbl_5):
      b7dbl = layer(b7dbl)
    return [self.branch1x1(x), b7, b7dbl, self.branch_pool(_tf_avg_pool(x))]


class _TFInceptionE(InceptionE):
  def __init__(self, in_channels, pool):
    super().__init__(in_channels)
    self.pool = pool

  def _forward(self, x):
    b3 = self.branch3x3_1(x)
    b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    return [self.branch1x1(x),
            torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1),
            torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], 1),
            self.branch_pool(self.pool(x))]


def tf1_resize_bilinear(x, size):
  """TF 1.x ResizeBilinear with align_corners=False (the graph's first op): output pixel i
  samples input position i * in/out, without PyTorch's half-pixel offset."""
  def weights(n_in, n_out):
    scale = torch.tensor(n_in, dtype=torch.float32) / n_out  # float32 arithmetic, as TF
    src = torch.arange(n_out, dtype=torch.float32) * scale
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = (src - lo).double()
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w.index_put_((rows, lo), 1 - frac, accumulate=True)
    w.index_put_((rows, hi), frac, accumulate=True)
    return w.to(x.device, x.dtype)
  return weights(x.shape[2], size[0]) @ x @ weights(x.shape[3], size[1]).T


class TFInception(torchvision.models.inception.Inception3):
  """The TF 2015-12-05 Inception graph. Module and state_dict names are those of pytorch-fid's
  FID Inception (torchvision's Inception3 with 1008 classes, no aux head), so its weight file
  loads unchanged. forward(x in [-1, 1]) -> (pool features (N, 2048), unbiased logits (N, 1008))."""

  def __init__(self):
    super().__init__(num_classes=1008, aux_logits=False, transform_input=False,
                     init_weights=False)
    self.Mixed_5b = _TFInceptionA(192, pool_features=32)
    self.Mixed_5c = _TFInceptionA(256, pool_features=64)
    self.Mixed_5d = _TFInceptionA(288, pool_features=64)
    self.Mixed_6b = _TFInceptionC(768, channels_7x7=128)
    self.Mixed_6c = _TFInceptionC(768, channels_7x7=160)
    self.Mixed_6d = _TFInceptionC(768, channels_7x7=160)
    self.Mixed_6e = _TFInceptionC(768, channels_7x7=192)
    self.Mixed_7b = _TFInceptionE(1280, _tf_avg_pool)
    self.Mixed_7c = _TFInceptionE(2048, _tf_max_pool)

  def forward(self, x):
    pixels = (x.float() + 1.) * 127.5  # the graph takes 0..255 pixel values
    x = tf1_resize_bilinear(pixels, (299, 299))
    x = (x - 128.) / 128.
    pool = _pool_features(self, x)
    return pool, pool @ self.fc.weight.T  # the papers' IS code drops the bias


# ---------------------------------------------------------------------------------------------
# Resize policies
# ---------------------------------------------------------------------------------------------

RESIZE_POLICIES = ('tf', 'torch', 'clean')
NATIVE_RESIZE = {'tf': 'tf', 'torchvision': 'torch'}
INPUT_SIZE = 299


def resize_policy(network, resize='auto'):
  """The policy that --inception_resize names for `network` ('auto': the network's own)."""
  if resize in ('auto', '', None):
    return NATIVE_RESIZE[network]
  if resize not in RESIZE_POLICIES:
    raise errors.UserError('unknown --inception_resize %r; use auto, %s'
                           % (resize, ', '.join(RESIZE_POLICIES)))
  return resize


def _pil_bicubic(images):
  """clean-fid's resize: each channel of the 0..255 levels as a float PIL image, bicubic,
  clipped to 0..255."""
  from PIL import Image
  levels = ((images.float() + 1.) * 127.5).cpu().numpy()
  out = np.empty(levels.shape[:2] + (INPUT_SIZE, INPUT_SIZE), np.float32)
  for i, image in enumerate(levels):
    for c, channel in enumerate(image):
      resized = Image.fromarray(np.ascontiguousarray(channel, np.float32)).resize(
          (INPUT_SIZE, INPUT_SIZE), Image.BICUBIC)
      out[i, c] = np.asarray(resized, np.float32)
  return torch.from_numpy(out.clip(0., 255.) / 127.5 - 1.).to(images.device)


def resize_images(images, policy):
  """Images in [-1, 1] (N x 3 x H x W) brought to 299 x 299 by `policy`."""
  if images.shape[-2:] == (INPUT_SIZE, INPUT_SIZE):
    return images
  if policy == 'tf':
    return tf1_resize_bilinear(images, (INPUT_SIZE, INPUT_SIZE))
  if policy == 'torch':
    return F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode='bilinear',
                         align_corners=True)
  if policy == 'clean':
    return _pil_bicubic(images)
  raise ValueError('unknown resize policy %r' % policy)


class ResizedInception(nn.Module):
  """An Inception network fed by another resize policy than its own: net(resize(x))."""

  def __init__(self, net, policy):
    super().__init__()
    self.net, self.policy = net, policy

  def forward(self, x):
    return self.net(resize_images(x, self.policy))


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _build(network):
  if network == 'tf':
    return TFInception()
  return torchvision.models.inception_v3(weights=None, aux_logits=False, transform_input=False,
                                         init_weights=False)


def save_random_weights(network, path, seed=0):
  """A weights file of `network` with random weights that keep activations O(1) through it (the
  defaults vanish): what tests and benches pass as --inception_weights on a machine without the
  real ones. Returns the network holding them, in eval mode."""
  torch.manual_seed(seed)
  net = _build(network)
  for m in net.modules():
    if isinstance(m, torch.nn.Conv2d):
      torch.nn.init.kaiming_normal_(m.weight)
  torch.save(net.state_dict(), path)
  return net.eval()


def _read_weights(network, path):
  """The state_dict for `network`: from `path`, else the hub cache, downloading when needed."""
  if path:
    if not os.path.isfile(path):
      raise errors.UserError('Inception weights file %s %s; pass an existing file to '
                             '--inception_weights' % (path, 'is a folder' if os.path.isdir(path)
                                                      else 'does not exist'))
    try:
      return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # corrupt, truncated or not a state_dict
      raise errors.UserError('cannot read Inception weights file %s (%s); pass a state_dict '
                             'saved with torch.save to --inception_weights'
                             % (path, errors.reason(e)))
  url = WEIGHTS_URLS[network]
  try:
    return torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True,
                                              map_location='cpu', weights_only=True)
  except Exception as e:  # offline, blocked, hash mismatch
    cache = os.path.join(torch.hub.get_dir(), 'checkpoints')
    raise errors.UserError(
        'cannot get the %s Inception weights from %s (%s); without internet, download that '
        'file elsewhere and pass --inception_weights PATH, or put it in %s'
        % (network, url, e, cache))


def _load_weights(net, state_dict, network, source):
  # Files may carry torchvision's aux head or lack BN counters: neither affects the features.
  optional = ('AuxLogits.', 'num_batches_tracked')
  if isinstance(state_dict, dict) and isinstance(state_dict.get('state_dict'), dict):
    state_dict = state_dict['state_dict']
  try:
    result = net.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(optional[1])]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(optional)]
  except (RuntimeError, AttributeError, TypeError) as e:  # shape mismatch, not a dict
    missing, unexpected = [str(e).splitlines()[-1].strip()], []
  if missing or unexpected:
    raise errors.UserError(
        '%s does not hold weights of the %s Inception network (missing: %s; unexpected: %s); '
        'pass weights for --inception_net %s' % (source, network, ', '.join(missing[:3]) or '-',
                                                  ', '.join(unexpected[:3]) or '-', network))


def load_inception_net(parallel=False, network='torchvision', weights='', device=None,
                       resize='auto'):
  """The Inception network in eval mode on `device` (None/'auto': CUDA when present), calling
  net(x in [-1, 1]) -> (pool, logits); `resize` another policy than the network's own."""
  if network not in NETWORKS:
    raise errors.UserError('unknown Inception network %r; use --inception_net %s'
                           % (network, ' or '.join(NETWORKS)))
  policy = resize_policy(network, resize)
  net = _build(network)
  _load_weights(net, _read_weights(network, weights), network,
                weights or WEIGHTS_URLS[network])
  if network == 'torchvision':
    net = WrapInception(net)
  if policy != NATIVE_RESIZE[network]:
    net = ResizedInception(net, policy)
  net = net.eval().requires_grad_(False).to(distributed.pick_device(str(device or 'auto')))
  if parallel and torch.cuda.device_count() > 1:
    print('Parallelizing Inception module...')
    net = nn.DataParallel(net)
  return net


# ---------------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------------


def trace_sqrt_product(sigma1, sigma2):
  """tr sqrt(sigma1 sigma2) for covariance matrices, exact in float64.

  With a pivoted Cholesky factor sigma1 = B B^T (B is d x rank, so a rank-deficient sigma1 from
  fewer samples than dimensions is fine), sigma1 sigma2 has the nonzero eigenvalues of the
  symmetric PSD matrix M = B^T sigma2 B; the trace is the sum of their square roots. Eigenvalues
  of M below its rounding level (d * eps * largest, LAPACK's rank tolerance) count as 0: a
  rank-deficient sigma2 leaves such eigenvalues, and their square roots are not negligible.
  No complex arithmetic, no regularisation, ~10x cheaper than a general matrix square root.
  """
  sigma1 = np.asarray(sigma1, dtype=np.float64)
  sigma2 = np.asarray(sigma2, dtype=np.float64)
  c, piv, rank, info = scipy.linalg.lapack.dpstrf(sigma1, lower=1)
  if info < 0:
    raise ValueError('dpstrf: illegal argument %d' % -info)
  # A semi-definite sigma1 leaves a negligible remainder; an indefinite one does not.
  factor = np.zeros((sigma1.shape[0], rank))
  factor[piv - 1] = np.tril(c[:, :rank])
  remainder = np.trace(sigma1) - np.einsum('ij,ij->', factor, factor)
  if abs(remainder) > 1e-6 * max(np.abs(np.diag(sigma1)).sum(), np.finfo(float).tiny):
    _warn_not_psd('sigma1')
  if rank == 0:
    return 0.0
  b = torch.from_numpy(factor)  # torch's LAPACK (MKL) is the faster eigensolver here
  m = b.T @ (torch.from_numpy(sigma2) @ b)
  eig = torch.linalg.eigvalsh((m + m.T) / 2).numpy()
  scale = max(abs(eig[0]), abs(eig[-1]))
  if eig[0] < -1e-9 * scale:
    _warn_not_psd('sigma2')
  eig[eig <= len(eig) * np.finfo(float).eps * scale] = 0.
  return float(np.sqrt(eig).sum())


def _warn_not_psd(name):
  warnings.warn('%s is not positive semi-definite (not a covariance matrix?); the FID is not '
                'meaningful' % name, RuntimeWarning, stacklevel=4)


def numpy_calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
  """FID = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), exact in float64.

  `eps` is kept for the original's signature; the exact method needs no regularisation.
  Non-finite moments (e.g. a diverged G) give nan with a warning rather than an exception.
  """
  del eps
  mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
  sigma1, sigma2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError('FID moments do not match: mu %s vs %s, sigma %s vs %s'
                     % (mu1.shape, mu2.shape, sigma1.shape, sigma2.shape))
  if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
    warnings.warn('non-finite Inception moments; FID is nan', RuntimeWarning, stacklevel=2)
    return float('nan')
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2. * trace_sqrt_product(sigma1, sigma2))


def torch_calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
  """The same exact FID for tensors: a float64 scalar tensor on mu1's device (the original
  used 50 approximate Newton-Schulz iterations in float32 here)."""
  fid = numpy_calculate_frechet_distance(*[t.detach().cpu().double().numpy()
                                           for t in (mu1, sigma1, mu2, sigma2)], eps=eps)
  return torch.tensor(fid, dtype=torch.float64, device=mu1.device)


def torch_cov(m, rowvar=False):
  """Unbiased covariance of observations in rows (rowvar=False) or columns (the original's
  helper; unlike it, does not modify m)."""
  if m.dim() > 2:
    raise ValueError('m has more than 2 dimensions')
  if m.dim() < 2:
    m = m.view(1, -1)
  if not rowvar and m.size(0) != 1:
    m = m.t()
  m = m - m.mean(dim=1, keepdim=True)
  return (m @ m.t()).squeeze() / (m.size(1) - 1)


def sqrt_newton_schulz(A, numIters, dtype=None):
  """Approximate square roots of a batch of matrices A (B, d, d) by coupled Newton-Schulz
  iterations (the original's FID method, kept for compatibility and bench/bench_fid.py).
  dtype: a torch dtype, or a type string such as A.type() as the original took."""
  with torch.no_grad():
    A = A.type(dtype) if isinstance(dtype, str) else A.to(dtype or A.dtype)
    norm = A.flatten(1).norm(dim=1).view(-1, 1, 1)
    y = A / norm
    eye = torch.eye(A.shape[1], dtype=A.dtype, device=A.device).expand_as(A)
    z = eye.clone()
    for _ in range(numIters):
      t = 0.5 * (3.0 * eye - z @ y)
      y, z = y @ t, t @ z
    return y * norm.sqrt()


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


class InceptionStats:
  """Running float64 sums for FID moments and IS over `num_images` images.

  Memory is O(d^2 + splits x classes), independent of the number of images. IS splits are
  contiguous blocks of the stream (the papers' split boundaries i*N//splits), or of a seeded
  random order with `shuffle_seed` so that label-ordered data is not under-scored. A rank that
  sees images start .. start + num_images - 1 of a stream of `total` (rank_share) puts them in
  the splits of the whole stream, so that any number of ranks gives the IS of one.
  """

  def __init__(self, num_images, num_splits=10, shuffle_seed=None, start=0, total=None):
    self.num_images, self.num_splits, self.count = num_images, num_splits, 0
    self.start, self.total = start, num_images if total is None else total
    self.order = None
    if shuffle_seed is not None:
      generator = torch.Generator().manual_seed(shuffle_seed)
      self.order = torch.randperm(self.total, generator=generator)
    self.sums = {}  # created on the first batch, on the features' device

  def _add(self, name, shape, device, update):
    if name not in self.sums:
      self.sums[name] = torch.zeros(shape, dtype=torch.float64, device=device)
    update(self.sums[name])

  def update(self, pool=None, logits=None, log_probs=None):
    """Add a batch: pool features (N, d) and either logits or log-probabilities (N, classes)."""
    batch = next(t for t in (pool, logits, log_probs) if t is not None).shape[0]
    if self.count + batch > self.num_images:
      raise ValueError('InceptionStats: more than the announced %d images' % self.num_images)
    if pool is not None:
      x = pool.detach().double()
      self._add('feature_sum', x.shape[1], x.device, lambda s: s.add_(x.sum(0)))
      self._add('feature_outer', (x.shape[1],) * 2, x.device, lambda s: s.addmm_(x.T, x))
    if logits is not None:
      log_probs = F.log_softmax(logits.detach().double(), dim=1)
    if log_probs is not None:
      self._add_predictions(log_probs.detach().double())
    self.count += batch

  def _add_predictions(self, log_p):
    index = torch.arange(self.start + self.count, self.start + self.count + len(log_p))
    if self.order is not None:
      index = self.order[index]
    # Image j lies in split i when i*N//S <= j < (i+1)*N//S.
    n, s = self.total, self.num_splits
    split = (((index + 1) * s + n - 1) // n - 1).to(log_p.device)
    p = log_p.exp()
    shape = (s, log_p.shape[1])
    self._add('split_count', s, p.device,
              lambda t: t.index_add_(0, split, torch.ones_like(p[:, 0])))
    self._add('split_prob_sum', shape, p.device, lambda t: t.index_add_(0, split, p))
    self._add('split_neg_entropy', s, p.device,
              lambda t: t.index_add_(0, split, torch.special.xlogy(p, p).sum(1)))

  def all_reduce(self):
    """Sum the statistics of all torch.distributed ranks (each having seen its own share)."""
    if not (dist.is_available() and dist.is_initialized()):
      return self
    names = sorted(self.sums)
    flat = torch.cat([self.sums[k].flatten() for k in names] +
                     [torch.tensor([float(self.count), float(self.num_images)],
                                   dtype=torch.float64, device=self.sums[names[0]].device)])
    dist.all_reduce(flat)
    offset = 0
    for k in names:
      size = self.sums[k].numel()
      self.sums[k] = flat[offset:offset + size].view_as(self.sums[k])
      offset += size
    self.count, self.num_images = int(flat[-2].item()), int(flat[-1].item())
    self.start, self.total = 0, max(self.total, self.num_images)
    return self

  def moments(self):
    """(mu, sigma) of the pool features as float64 numpy arrays (sigma unbiased, as np.cov)."""
    if self.count < 2 or 'feature_sum' not in self.sums:
      raise errors.UserError('FID needs the features of at least 2 images, got %d; raise '
                             '--num_inception_images' % self.count)
    n = self.count
    mu = self.sums['feature_sum'] / n
    sigma = (self.sums['feature_outer'] - n * torch.outer(mu, mu)) / (n - 1)
    if n <= mu.numel():
      warnings.warn('FID from %d images of %d-dimensional features: the covariance is '
                    'rank-deficient and the FID strongly biased upwards; use more than %d '
                    'images to compare numbers' % (n, mu.numel(), mu.numel()),
                    RuntimeWarning, stacklevel=2)
    return mu.cpu().numpy(), ((sigma + sigma.T) / 2).cpu().numpy()

  def inception_score(self):
    """(mean, std) over the splits of exp(E_x KL(p(y|x) || p(y))), in float64."""
    count = self.sums['split_count']
    keep = count > 0
    count = count[keep]
    p_mean = self.sums['split_prob_sum'][keep] / count[:, None]
    kl = (self.sums['split_neg_entropy'][keep] / count
          - torch.special.xlogy(p_mean, p_mean).sum(1))
    scores = kl.exp().cpu().numpy()
    return float(np.mean(scores)), float(np.std(scores))


def calculate_inception_score(pred, num_splits=10):
  """IS (mean, std over num_splits contiguous splits) of softmax predictions (N, classes)."""
  pred = torch.as_tensor(np.asarray(pred), dtype=torch.float64)
  stats = InceptionStats(len(pred), num_splits)
  stats.update(log_probs=pred.log())
  return stats.inception_score()


# ---------------------------------------------------------------------------------------------
# Running the network
# ---------------------------------------------------------------------------------------------


def quantize_images(images):
  """Images in [-1, 1] (any float dtype, or uint8 0..255) rounded to the 256 levels a saved
  image has: round((x + 1) * 127.5), mapped back to [-1, 1] in float32."""
  if images.dtype == torch.uint8:
    levels = images.float()
  else:
    levels = torch.round((images.float() + 1.) * 127.5).clamp_(0., 255.)
  return levels / 127.5 - 1.


@contextlib.contextmanager
def _exact_float32(device):
  """Plain float32 for the network: no autocast, no TF32 (which changes features ~1e-3)."""
  saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
  try:
    with torch.autocast(device.type, enabled=False):
      yield
  finally:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def iterate_activations(sample, net, num_images):
  """Yields (pool, logits, labels) batches for exactly num_images images from sample()."""
  device = next(net.parameters()).device
  done = 0
  with torch.no_grad(), _exact_float32(device):
    while done < num_images:
      images, labels = sample()
      if len(images) == 0:
        raise ValueError('sample() returned an empty batch')
      images = quantize_images(images[:num_images - done].to(device))
      pool, logits = net(images)
      done += len(images)
      yield pool, logits, labels[:len(images)]


def accumulate_inception_activations(sample, net, num_inception_images=50000):
  """All pool features, softmax predictions and labels of num_inception_images images (the
  original's API; memory grows with the number of images: metrics use InceptionStats)."""
  pool, probs, labels = zip(*[(p, F.softmax(logit, 1), y) for p, logit, y in
                              iterate_activations(sample, net, num_inception_images)])
  return torch.cat(pool, 0), torch.cat(probs, 0), torch.cat(labels, 0)


def world_and_rank():
  """(world size, rank) of torch.distributed; (1, 0) without it."""
  if dist.is_available() and dist.is_initialized():
    return dist.get_world_size(), dist.get_rank()
  return 1, 0


def rank_share(num_images):
  """(start, stop): this torch.distributed rank's contiguous share of num_images images (the
  first num_images % world ranks take one more); (0, num_images) without distribution."""
  world, rank = world_and_rank()
  base, extra = divmod(num_images, world)
  start = rank * base + min(rank, extra)
  return start, start + base + (rank < extra)


def accumulate_inception_stats(sample, net, num_images, num_splits=10, shuffle_seed=None,
                               progress=False):
  """InceptionStats of num_images images from sample(); with torch.distributed every rank
  draws its share and the sums are all-reduced (IS splits per share, as train.py always did)."""
  start, stop = rank_share(num_images)
  share = stop - start
  stats = InceptionStats(share, num_splits, shuffle_seed)
  bar = tqdm(total=share, unit='img', desc='Inception',
             disable=not progress)
  for pool, logits, _ in iterate_activations(sample, net, share):
    stats.update(pool, logits)
    bar.update(len(pool))
  bar.close()
  return stats.all_reduce()


# ---------------------------------------------------------------------------------------------
# Dataset moments files
# ---------------------------------------------------------------------------------------------


def moments_filename(stats_name, network='torchvision', resize='auto'):
  """The original's '{stats_name}_inception_moments.npz' for torchvision; '..._tf.npz' for tf;
  another resize policy than the network's own adds '_{policy}'."""
  policy = resize_policy(network, resize)
  return '%s_inception_moments%s%s.npz' % (
      stats_name, '' if network == 'torchvision' else '_' + network,
      '' if policy == NATIVE_RESIZE[network] else '_' + policy)


def _moments_name(config):
  import datasets  # deferred: only needed once moments are looked up
  info = datasets.dataset_info(config['dataset'], config['data_root'],
                               config.get('resolution', 0))
  return moments_filename(info['stats_name'], config.get('inception_net', 'torchvision'),
                          config.get('inception_resize', 'auto'))


def moments_path(config):
  """Where calculate_inception_moments.py writes the moments of config's dataset and network."""
  return os.path.join(config['data_root'], _moments_name(config))


def moments_command(config):
  """The command that makes the moments file for config."""
  args = ['python', 'calculate_inception_moments.py', '--dataset', config['dataset'],
          '--data_root', config['data_root']]
  if config.get('resolution'):
    args += ['--resolution', str(config['resolution'])]
  if config.get('inception_net', 'torchvision') != 'torchvision':
    args += ['--inception_net', config['inception_net']]
  if config.get('inception_resize', 'auto') != 'auto':
    args += ['--inception_resize', config['inception_resize']]
  if config.get('inception_weights'):
    args += ['--inception_weights', config['inception_weights']]
  return ' '.join(shlex.quote(a) for a in args)


def save_moments(path, mu, sigma, network, num_images, resize='auto'):
  """Write the moments file atomically (an interrupted run leaves any old file intact); a
  resize policy other than the network's own is recorded as 'resize'."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  policy = resize_policy(network, resize)
  extra = {} if policy == NATIVE_RESIZE[network] else {'resize': policy}
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    np.savez(f, mu=mu, sigma=sigma, network=network, num_images=num_images, **extra)
  os.replace(tmp, path)


def load_moments(config):
  """(mu, sigma, path) of the dataset's moments, found in data_root or (where the original
  wrote them) the working directory."""
  path = moments_path(config)
  network = config.get('inception_net', 'torchvision')
  found = [p for p in (path, os.path.basename(path)) if os.path.isfile(p)]
  if not found:
    raise errors.UserError('no Inception moments for --dataset %s and --inception_net %s (looked '
                           'for %s and ./%s); make them with: %s'
                           % (config['dataset'], network, path, os.path.basename(path),
                              moments_command(config)))
  path = found[0]
  policy = resize_policy(network, config.get('inception_resize', 'auto'))
  try:
    with np.load(path) as f:
      mu, sigma = f['mu'], f['sigma']
      saved_network = str(f['network']) if 'network' in f.files else network
      saved_policy = str(f['resize']) if 'resize' in f.files else NATIVE_RESIZE[saved_network]
  except Exception as e:  # missing keys, corrupt file
    raise errors.UserError('cannot read Inception moments %s (%s); delete it and remake it '
                           'with: %s' % (path, e, moments_command(config)))
  if (saved_network != network or mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM,) * 2
      or saved_policy != policy):
    raise errors.UserError('%s holds moments of the %s network (%s resize) with shapes %s, %s, '
                           'not of the %s network (%s resize, %d features); remake them with: %s'
                           % (path, saved_network, saved_policy, mu.shape, sigma.shape, network,
                              policy, FEATURE_DIM, moments_command(config)))
  return mu, sigma, path


# ---------------------------------------------------------------------------------------------
# The metrics function of train.py / sample.py
# ---------------------------------------------------------------------------------------------


def prepare_inception_metrics(dataset, parallel, no_fid=False, network='torchvision',
                              weights='', data_root='data', resolution=0, device=None):
  """get_inception_metrics(sample, num_inception_images, num_splits=10, prints=True,
  use_torch=True) -> (IS_mean, IS_std, FID); FID is 9999.0 with no_fid (no moments needed).
  The function's .network attribute names the network behind its numbers."""
  config = dict(dataset=dataset, data_root=data_root, resolution=resolution,
                inception_net=network, inception_weights=weights)
  data_mu, data_sigma = (None, None) if no_fid else load_moments(config)[:2]
  net = load_inception_net(parallel, network=network, weights=weights, device=device)

  def get_inception_metrics(sample, num_inception_images, num_splits=10, prints=True,
                            use_torch=True):
    if prints:
      print('Gathering activations of %d images (Inception network: %s)...'
            % (num_inception_images, network))
    stats = accumulate_inception_stats(sample, net, num_inception_images, num_splits)
    IS_mean, IS_std = stats.inception_score()
    if no_fid:
      return IS_mean, IS_std, 9999.0
    mu, sigma = stats.moments()
    if use_torch:
      FID = float(torch_calculate_frechet_distance(*[torch.from_numpy(a) for a in
                                                     (mu, sigma, data_mu, data_sigma)]))
    else:
      FID = numpy_calculate_frechet_distance(mu, sigma, data_mu, data_sigma)
    return IS_mean, IS_std, FID

  get_inception_metrics.network = network
  return get_inception_metrics
