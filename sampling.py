"""Drawing from G: the z/y sampling tensors, batches, class sheets, interpolation sheets and
standing statistics. The original kept these in utils.py (which still re-exports them).

The sheet functions take an optional torch.Generator so that the training loop can sample without
touching the global random stream (which keeps resumed runs bit-identical).
"""
import os

import torch
import torch.nn as nn
import torchvision

import layers


class Distribution(torch.Tensor):
  """A tensor that can refill itself in place: z_.sample_() / y_.sample_() as in the original.

  Every operation on it returns a plain torch.Tensor (so torchvision and other libraries see
  ordinary tensors); only the object itself keeps sample_(). As in the original, 'normal' uses z_var
  as the standard deviation.
  """
  __torch_function__ = torch._C._disabled_torch_function_impl

  def init_distribution(self, dist_type, **kwargs):
    self.dist_type = dist_type
    self.dist_kwargs = kwargs
    if dist_type == 'normal':
      self.mean, self.var = kwargs['mean'], kwargs['var']
    elif dist_type == 'categorical':
      self.num_categories = kwargs['num_categories']
    return self

  def sample_(self, generator=None):
    if self.dist_type == 'normal':
      self.normal_(self.mean, self.var, generator=generator)
    elif self.dist_type == 'categorical':
      self.random_(0, self.num_categories, generator=generator)
    return self


def prepare_z_y(G_batch_size, dim_z, nclasses, device='cuda', fp16=False, z_var=1.0):
  """z_ (G_batch_size, dim_z) ~ N(0, z_var^2) and y_ (G_batch_size,) uniform over classes."""
  z_ = torch.zeros(G_batch_size, dim_z, device=device, requires_grad=False)
  if fp16:
    z_ = z_.half()
  z_ = z_.as_subclass(Distribution).init_distribution('normal', mean=0, var=z_var)
  y_ = torch.zeros(G_batch_size, device=device, dtype=torch.int64, requires_grad=False)
  y_ = y_.as_subclass(Distribution).init_distribution('categorical', num_categories=nclasses)
  return z_, y_


def run_G(G, z, y_embedded, parallel=False):
  """G(z, y) without gradient, over all GPUs with --parallel."""
  with torch.no_grad():
    if parallel:
      return nn.parallel.data_parallel(G, (z, y_embedded))
    return G(z, y_embedded)


def sample(G, z_, y_, config):
  """A fresh batch (images, labels): the `sample` function that the Inception metrics call."""
  with torch.no_grad():
    z_.sample_()
    y_.sample_()
    return run_G(G, z_, G.shared(y_), config['parallel']), y_


def sample_1hot(batch_size, num_classes, device='cuda', generator=None):
  """Random class indices (the original's name: they are not one-hot)."""
  return torch.randint(low=0, high=num_classes, size=(batch_size,), device=device,
                       dtype=torch.int64, generator=generator)


def save_grid(images, filename, nrow):
  """Save images in [-1, 1] as one grid, mapped to [0, 255] with the batch's min/max (as the
  original's normalize=True)."""
  os.makedirs(os.path.dirname(filename) or '.', exist_ok=True)
  torchvision.utils.save_image(images.float().cpu(), filename, nrow=nrow, normalize=True)


def sample_sheet(G, classes_per_sheet, num_classes, samples_per_class, parallel, samples_root,
                 experiment_name, folder_number, z_=None, generator=None):
  """samples_root/<exp>/<folder_number>/samples{i}.jpg: one row per class, samples_per_class
  columns, classes_per_sheet classes per sheet."""
  device = next(G.parameters()).device
  std = getattr(z_, 'var', 1.0)  # the z_var of a prepare_z_y tensor, as the original
  for i in range(num_classes // classes_per_sheet):
    y = torch.arange(i * classes_per_sheet, (i + 1) * classes_per_sheet, device=device)
    ims = []
    for _ in range(samples_per_class):
      z = std * torch.randn(classes_per_sheet, G.dim_z, device=device, generator=generator)
      ims.append(run_G(G, z, G.shared(y), parallel).float().cpu())
    out = torch.stack(ims, 1).view(-1, *ims[0].shape[1:])
    save_grid(out, '%s/%s/%d/samples%d.jpg' % (samples_root, experiment_name, folder_number, i),
              nrow=samples_per_class)


def interp(x0, x1, num_midpoints):
  """Linear interpolation from x0 to x1 (each (N, 1, D)) with num_midpoints points between."""
  lerp = torch.linspace(0, 1.0, num_midpoints + 2, device=x0.device).to(x0.dtype)
  return (x0 * (1 - lerp.view(1, -1, 1))) + (x1 * lerp.view(1, -1, 1))


def interp_sheet(G, num_per_sheet, num_midpoints, num_classes, parallel, samples_root,
                 experiment_name, folder_number, sheet_number=0, fix_z=False, fix_y=False,
                 device=None, generator=None):
  """samples_root/<exp>/<folder>/interp{Z}{Y}{sheet}.jpg: rows interpolate z and/or the class
  embedding between two random endpoints."""
  device = device or next(G.parameters()).device
  n, steps = num_per_sheet, num_midpoints + 2

  def randn():
    return torch.randn(n, 1, G.dim_z, device=device, generator=generator)

  def embed():
    return G.shared(sample_1hot(n, num_classes, device, generator)).view(n, 1, -1)
  with torch.no_grad():
    zs = randn().repeat(1, steps, 1) if fix_z else interp(randn(), randn(), num_midpoints)
    ys = embed().repeat(1, steps, 1) if fix_y else interp(embed(), embed(), num_midpoints)
    out = run_G(G, zs.view(n * steps, -1), ys.view(n * steps, -1), parallel)
  style = ('Z' if not fix_z else '') + ('Y' if not fix_y else '')
  save_grid(out, '%s/%s/%d/interp%s%d.jpg' % (samples_root, experiment_name, folder_number, style,
                                              sheet_number), nrow=steps)


def accumulate_standing_stats(net, z, y, nclasses, num_accumulations=16):
  """Replace the BN statistics of G by their average over num_accumulations fresh batches
  ("standing statistics"), then leave G in eval mode. Works for every BN type (the original's only
  for --mybn)."""
  layers.begin_standing_stats(net)
  net.train()
  with torch.no_grad():
    for _ in range(num_accumulations):
      z.normal_()
      y.random_(0, nclasses)
      net(z, net.shared(y))
  layers.end_standing_stats(net)
  net.eval()
