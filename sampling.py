"""Drawing from G: building G for sampling, the z/y sampling tensors, batches, class sheets,
interpolation sheets and standing statistics: what train.py and sample.py share. The original kept
most of these in utils.py (which still re-exports them).

The sheet functions take an optional torch.Generator so that the training loop can sample without
touching the global random stream (which keeps resumed runs bit-identical).

Truncation (sample.py --truncation, --sample_trunc_curves) has three meanings, named explicitly
(sample_truncated_): the BigGAN paper's resampling, TF-Hub's scaled truncated normal and the
original sample.py's z variance.
"""
import math
import os

import torch
import torch.nn as nn
import torchvision
from PIL import Image, ImageDraw, ImageFont

import layers
import models

TRUNCATION_MODES = ('z_var', 'resample', 'tfhub')


def _standard_truncnorm_(z, bound, generator=None):
  # Inverse CDF: uniform over the CDF range of [-bound, bound], mapped back. One pass, no
  # rejection loop; the clamp only catches float32 rounding at the edges.
  edge = math.erf(bound / math.sqrt(2.))
  return z.uniform_(-edge, edge, generator=generator).erfinv_().mul_(math.sqrt(2.)).clamp_(
      -bound, bound)


def sample_truncated_(z, truncation, mode, generator=None):
  """Fill z in place with the noise of the truncation trick at threshold `truncation` (t >= 0):
    resample  N(0, 1) with every value of |z| > t redrawn (BigGAN paper, sec. 4.1), i.e. the
              standard normal truncated to [-t, t] (drawn by inverse CDF: the same distribution)
    tfhub     t * (standard normal truncated to [-2, 2]), as TF-Hub's modules take it
    z_var     N(0, t^2): the original sample.py's sweep, which set z_.var = t
  """
  if mode == 'resample':
    return _standard_truncnorm_(z, truncation, generator)
  if mode == 'tfhub':
    return _standard_truncnorm_(z, 2.0, generator).mul_(truncation)
  if mode == 'z_var':
    return z.normal_(0, truncation, generator=generator)
  raise ValueError('unknown truncation mode %r; use one of %s'
                   % (mode, ', '.join(TRUNCATION_MODES)))


class Distribution(torch.Tensor):
  """A tensor that can refill itself in place: z_.sample_() / y_.sample_() as in the original.

  Every operation on it returns a plain torch.Tensor (so torchvision and other libraries see
  ordinary tensors); only the object itself keeps sample_(). As in the original, 'normal' uses z_var
  as the standard deviation, unless set_truncation() replaced it by a truncation.
  """
  __torch_function__ = torch._C._disabled_torch_function_impl

  def init_distribution(self, dist_type, **kwargs):
    self.dist_type = dist_type
    self.dist_kwargs = kwargs
    if dist_type == 'normal':
      self.mean, self.var = kwargs['mean'], kwargs['var']
      self.truncation, self.truncation_mode = None, None
    elif dist_type == 'categorical':
      self.num_categories = kwargs['num_categories']
    return self

  def set_truncation(self, truncation, mode='resample'):
    """From now on draw z by sample_truncated_(truncation, mode); None: N(mean, var^2) again."""
    if mode not in TRUNCATION_MODES:
      raise ValueError('unknown truncation mode %r' % mode)
    self.truncation = truncation
    self.truncation_mode = None if truncation is None else mode
    return self

  def describe(self):
    """The z distribution in words, for printed results."""
    if getattr(self, 'truncation', None) is None:
      return 'z ~ N(%g, %g^2)' % (self.mean, self.var)
    return {'resample': 'z ~ N(0, 1) resampled where |z| > %g',
            'tfhub': 'z = %g * truncnorm(-2, 2)',
            'z_var': 'z ~ N(0, %g^2)'}[self.truncation_mode] % self.truncation

  def draw(self, *shape, generator=None):
    """A new plain tensor of `shape` from the same normal distribution."""
    if getattr(self, 'truncation', None) is None:
      return self.mean + self.var * torch.randn(*shape, device=self.device, dtype=self.dtype,
                                                generator=generator)
    out = torch.empty(*shape, device=self.device, dtype=self.dtype)
    return sample_truncated_(out, self.truncation, self.truncation_mode, generator)

  def sample_(self, generator=None):
    if self.dist_type == 'normal':
      if getattr(self, 'truncation', None) is None:
        self.normal_(self.mean, self.var, generator=generator)
      else:
        sample_truncated_(self, self.truncation, self.truncation_mode, generator)
    elif self.dist_type == 'categorical':
      self.random_(0, self.num_categories, generator=generator)
    return self


def default_device(device=None):
  """The device to use when a caller names none: CUDA when present, else the CPU (the original
  defaulted to 'cuda', which fails on CPU-only machines)."""
  return device if device is not None else ('cuda' if torch.cuda.is_available() else 'cpu')


def prepare_z_y(G_batch_size, dim_z, nclasses, device=None, fp16=False, z_var=1.0):
  """z_ (G_batch_size, dim_z) ~ N(0, z_var^2) and y_ (G_batch_size,) uniform over classes."""
  device = default_device(device)
  z_ = torch.zeros(G_batch_size, dim_z, device=device, requires_grad=False)
  if fp16:
    z_ = z_.half()
  z_ = z_.as_subclass(Distribution).init_distribution('normal', mean=0, var=z_var)
  y_ = torch.zeros(G_batch_size, device=device, dtype=torch.int64, requires_grad=False)
  y_ = y_.as_subclass(Distribution).init_distribution('categorical', num_categories=nclasses)
  return z_, y_


# ---------------------------------------------------------------------------------------------
# G and its noise, as train.py and sample.py build them
# ---------------------------------------------------------------------------------------------


def build_generator(config, device, copy=False):
  """The Generator of --model on `device`; copy: one whose weights are loaded or averaged anyway
  (G_ema, sampling), so no init and no optimizer."""
  model = models.load_model_module(config['model'])
  extra = {'skip_init': True, 'no_optim': True} if copy else {}
  return model.Generator(**{**config, **extra}).to(device)


def G_batch_size(config):
  """The batch of G's step and of sampling: max(--G_batch_size, --batch_size), as the original."""
  return max(config['G_batch_size'], config['batch_size'])


def prepare_noise(config, dim_z, device):
  """z_, y_ of G_batch_size(config) for G's input (z ~ N(0, z_var^2), y uniform)."""
  return prepare_z_y(G_batch_size(config), dim_z, config['n_classes'], device=device,
                     z_var=config['z_var'])


def fixed_noise(G_batch_size, dim_z, n_classes, seed, device, z_var):
  """The fixed z, y of fixed_samples{itr}.jpg, from their own generator: identical in every run
  of the experiment, including resumed ones."""
  gen = torch.Generator().manual_seed(seed)
  z = torch.randn(G_batch_size, dim_z, generator=gen) * z_var
  y = torch.randint(0, n_classes, (G_batch_size,), generator=gen)
  return z.to(device), y.to(device)


# ---------------------------------------------------------------------------------------------
# Batches and sheets
# ---------------------------------------------------------------------------------------------


def run_G(G, z, y_embedded, parallel=False):
  """G(z, y) without gradient, over all GPUs with --parallel (and on the one device otherwise)."""
  with torch.no_grad():
    if parallel and z.is_cuda and torch.cuda.device_count() > 1:
      return nn.parallel.data_parallel(G, (z, y_embedded))
    return G(z, y_embedded)


def sample(G, z_, y_, config):
  """A fresh batch (images, labels): the `sample` function that the Inception metrics call.
  The labels are a copy: y_ itself is refilled by the next call (the original returned y_, so
  on the CPU, where .cpu().numpy() does not copy, every collected batch became the last one)."""
  with torch.no_grad():
    z_.sample_()
    y_.sample_()
    return run_G(G, z_, G.shared(y_), config['parallel']), y_.clone()


def to_uint8(images):
  """Images in [-1, 1] -> uint8 levels round((x + 1) * 127.5), on their device (the original
  sample.py truncated with np.uint8 on the host, darkening every pixel by half a level)."""
  return ((images.float() + 1.) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def sample_1hot(batch_size, num_classes, device=None, generator=None):
  """Random class indices (the original's name: they are not one-hot)."""
  return torch.randint(low=0, high=num_classes, size=(batch_size,), device=default_device(device),
                       dtype=torch.int64, generator=generator)


def save_grid(images, filename, nrow, row_labels=None):
  """Save images in [-1, 1] as one grid, mapped to [0, 255] with the batch's min/max (as the
  original's normalize=True). row_labels: a text per grid row, drawn in a margin on the left."""
  os.makedirs(os.path.dirname(filename) or '.', exist_ok=True)
  if not row_labels:
    torchvision.utils.save_image(images.float().cpu(), filename, nrow=nrow, normalize=True)
    return
  padding = 2
  grid = torchvision.utils.make_grid(images.float().cpu(), nrow=nrow, padding=padding,
                                     normalize=True)
  # save_image's own conversion, so that the pixels equal an unlabelled sheet's.
  pixels = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
  labels = [str(label)[:28] for label in row_labels]
  font = ImageFont.load_default()
  measure = ImageDraw.Draw(Image.new('RGB', (1, 1)))
  margin = int(max(measure.textlength(label, font=font) for label in labels)) + 2 * padding + 2
  sheet = Image.new('RGB', (pixels.shape[1] + margin, pixels.shape[0]))
  sheet.paste(Image.fromarray(pixels), (margin, 0))
  draw = ImageDraw.Draw(sheet)
  row_height = images.shape[2] + padding
  for row, label in enumerate(labels):
    top, _, _, bottom = draw.textbbox((0, 0), label, font=font)
    y = padding + row * row_height + (images.shape[2] - (bottom - top)) // 2 - top
    draw.text((padding, y), label, fill=(255, 255, 255), font=font)
  sheet.save(filename)


def sample_sheet(G, classes_per_sheet, num_classes, samples_per_class, parallel, samples_root,
                 experiment_name, folder_number, z_=None, generator=None, class_names=None):
  """samples_root/<exp>/<folder_number>/samples{i}.jpg: one row per class, samples_per_class
  columns, classes_per_sheet classes per sheet; rows labelled with class_names when given. z is
  drawn as z_ draws it (its z_var or truncation), else from N(0, 1)."""
  device = next(G.parameters()).device
  for i in range(num_classes // classes_per_sheet):
    y = torch.arange(i * classes_per_sheet, (i + 1) * classes_per_sheet, device=device)
    ims = []
    for _ in range(samples_per_class):
      shape = (classes_per_sheet, G.dim_z)
      z = (z_.draw(*shape, generator=generator) if isinstance(z_, Distribution)
           else torch.randn(*shape, device=device, generator=generator))
      ims.append(run_G(G, z.to(device), G.shared(y), parallel).float().cpu())
    out = torch.stack(ims, 1).reshape(-1, *ims[0].shape[1:])
    save_grid(out, '%s/%s/%d/samples%d.jpg' % (samples_root, experiment_name, folder_number, i),
              nrow=samples_per_class,
              row_labels=[class_names[c] for c in y.tolist()] if class_names else None)


def interp(x0, x1, num_midpoints):
  """Linear interpolation from x0 to x1 (each (N, 1, D)) with num_midpoints points between."""
  lerp = torch.linspace(0, 1.0, num_midpoints + 2, device=x0.device).to(x0.dtype)
  return (x0 * (1 - lerp.view(1, -1, 1))) + (x1 * lerp.view(1, -1, 1))


def slerp(x0, x1, num_midpoints):
  """Spherical interpolation from x0 to x1 (each (N, 1, D)): along the great circle between
  their directions, so a midpoint of two typical Gaussian z keeps a typical norm (a straight
  line's midpoint is ~0.7x shorter). Linear where x0 and x1 are (nearly) parallel or zero."""
  if not x0.is_floating_point():  # class indices of a G without a shared embedding
    return interp(x0, x1, num_midpoints)
  w = torch.linspace(0, 1.0, num_midpoints + 2, device=x0.device, dtype=x0.dtype).view(1, -1, 1)
  n0, n1 = x0.norm(dim=-1, keepdim=True), x1.norm(dim=-1, keepdim=True)
  cos = ((x0 * x1).sum(-1, keepdim=True) / (n0 * n1).clamp_min(1e-30)).clamp(-1., 1.)
  omega = torch.acos(cos)
  sin = torch.sin(omega)
  linear = (sin < 1e-6) | (n0 * n1 == 0)
  safe = torch.where(linear, torch.ones_like(sin), sin)
  a = torch.where(linear, 1 - w, torch.sin((1 - w) * omega) / safe)
  b = torch.where(linear, w, torch.sin(w * omega) / safe)
  return a * x0 + b * x1


INTERPOLATIONS = {'lerp': interp, 'slerp': slerp}


def interp_sheet(G, num_per_sheet, num_midpoints, num_classes, parallel, samples_root,
                 experiment_name, folder_number, sheet_number=0, fix_z=False, fix_y=False,
                 device=None, generator=None, z_=None, method='lerp'):
  """samples_root/<exp>/<folder>/interp{Z}{Y}{sheet}.jpg: rows interpolate z and/or the class
  embedding between two random endpoints, by `method` (lerp or slerp). The z endpoints are drawn
  as z_ draws them when given (z_var, truncation), else from N(0, 1)."""
  device = device or next(G.parameters()).device
  n, steps = num_per_sheet, num_midpoints + 2
  interpolate = INTERPOLATIONS[method]

  def randn():
    if isinstance(z_, Distribution):
      return z_.draw(n, 1, G.dim_z, generator=generator).to(device)
    return torch.randn(n, 1, G.dim_z, device=device, generator=generator)

  def embed():
    return G.shared(sample_1hot(n, num_classes, device, generator)).view(n, 1, -1)
  with torch.no_grad():
    zs = randn().repeat(1, steps, 1) if fix_z else interpolate(randn(), randn(), num_midpoints)
    ys = embed().repeat(1, steps, 1) if fix_y else interpolate(embed(), embed(), num_midpoints)
    out = run_G(G, zs.view(n * steps, -1), ys.view(n * steps, -1), parallel)
  style = ('Z' if not fix_z else '') + ('Y' if not fix_y else '')
  save_grid(out, '%s/%s/%d/interp%s%d.jpg' % (samples_root, experiment_name, folder_number, style,
                                              sheet_number), nrow=steps)


def write_sheets(G, config, experiment_name, folder, z_=None, generator=None, class_names=None):
  """The class sheets of sample_sheet for this config: 10 samples per class."""
  sample_sheet(G, classes_per_sheet=config['classes_per_sheet'], num_classes=config['n_classes'],
               samples_per_class=10, parallel=config['parallel'],
               samples_root=config['samples_root'], experiment_name=experiment_name,
               folder_number=folder, z_=z_, generator=generator, class_names=class_names)


def write_interps(G, config, experiment_name, folder, z_=None, generator=None, device=None,
                  method='lerp'):
  """The three interpolation sheets (z and class, class only, z only) of interp_sheet."""
  for fix_z, fix_y in zip([False, False, True], [False, True, False]):
    interp_sheet(G, num_per_sheet=16, num_midpoints=8, num_classes=config['n_classes'],
                 parallel=config['parallel'], samples_root=config['samples_root'],
                 experiment_name=experiment_name, folder_number=folder, sheet_number=0,
                 fix_z=fix_z, fix_y=fix_y, device=device, generator=generator, z_=z_,
                 method=method)


def accumulate_standing_stats(net, z, y, nclasses, num_accumulations=16):
  """Replace the BN statistics of G by their average over num_accumulations fresh batches
  ("standing statistics"), then leave G in eval mode. Works for every BN type (the original's only
  for --mybn). z is drawn as it will be sampled (a Distribution's z_var or truncation; the
  original always used N(0, 1), so its statistics did not match a truncated z)."""
  layers.begin_standing_stats(net)
  net.train()
  with torch.no_grad():
    for _ in range(num_accumulations):
      if isinstance(z, Distribution) and z.dist_type == 'normal':
        z.sample_()
      else:
        z.normal_()
      y.random_(0, nclasses)
      net(z, net.shared(y))
  layers.end_standing_stats(net)
  net.eval()
