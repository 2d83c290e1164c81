"""GAN losses. Discriminator losses return (loss_real, loss_fake), as in the original.

`--loss hinge` (BigGAN, the default) or `--loss dcgan` (non-saturating); `get_losses(name)` gives the
(discriminator_loss, generator_loss) pair. Losses are computed in fp32 even under autocast.
"""
import torch
import torch.nn.functional as F


def loss_hinge_dis(dis_fake, dis_real):
  loss_real = torch.mean(F.relu(1. - dis_real.float()))
  loss_fake = torch.mean(F.relu(1. + dis_fake.float()))
  return loss_real, loss_fake


def loss_hinge_gen(dis_fake):
  return -torch.mean(dis_fake.float())


def loss_dcgan_dis(dis_fake, dis_real):
  """-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))), written with softplus for stability."""
  loss_real = torch.mean(F.softplus(-dis_real.float()))
  loss_fake = torch.mean(F.softplus(dis_fake.float()))
  return loss_real, loss_fake


def loss_dcgan_gen(dis_fake):
  """Non-saturating: -log sigmoid(D(G(z)))."""
  return torch.mean(F.softplus(-dis_fake.float()))


LOSSES = {'hinge': (loss_hinge_dis, loss_hinge_gen),
          'dcgan': (loss_dcgan_dis, loss_dcgan_gen)}

# The original's module-level names.
discriminator_loss, generator_loss = LOSSES['hinge']


def get_losses(name='hinge'):
  """(discriminator_loss, generator_loss) for --loss name."""
  if name not in LOSSES:
    raise ValueError('unknown loss %r; use one of %s' % (name, ', '.join(LOSSES)))
  return LOSSES[name]
