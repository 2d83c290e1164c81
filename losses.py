"""GAN losses. Discriminator losses return (loss_real, loss_fake), as in the original.

`--loss hinge` (BigGAN, the default) or `--loss dcgan` (non-saturating); `get_losses(name)` gives
the (discriminator_loss, generator_loss) pair. Losses are computed in fp32 even under autocast.

`--LeCam LAMBDA` adds LAMBDA * LeCam(D_real, D_fake) to D's loss (`LeCam`, Tseng et al. 2021).
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


# ---------------------------------------------------------------------------------------------
# LeCam regularisation
# ---------------------------------------------------------------------------------------------


def lecam_reg(dis_real, dis_fake, anchor_real, anchor_fake):
  """mean(relu(D(x) - anchor_fake)^2) + mean(relu(anchor_real - D(G(z)))^2): D's outputs on reals
  held near the fakes' running mean and vice versa. The form of the authors' code, which their
  results come from (the paper's equation squares the differences without the ReLU)."""
  return (torch.mean(F.relu(dis_real.float() - anchor_fake) ** 2)
          + torch.mean(F.relu(anchor_real - dis_fake.float()) ** 2))


class LeCam(object):
  """The anchors: exponential moving averages (decay `decay`) of the mean D output on reals and on
  fakes, updated with each D micro-batch before its term is computed, and bias-corrected for their
  zero start (anchor = ema / (1 - decay^updates)), as the authors' code did. They stay on the
  device: no host synchronisation."""

  def __init__(self, decay=0.99, device='cpu'):
    self.decay = decay
    self.ema = torch.zeros(2, device=device)  # real, fake
    self.updates = 0

  def update(self, dis_real, dis_fake):
    with torch.no_grad():
      means = torch.stack([dis_real.detach().float().mean(), dis_fake.detach().float().mean()])
      self.ema.mul_(self.decay).add_(means, alpha=1 - self.decay)
    self.updates += 1

  def anchors(self):
    """(anchor_real, anchor_fake) as 0-d tensors."""
    ema = self.ema / (1 - self.decay ** self.updates) if self.updates else self.ema
    return ema[0], ema[1]

  def __call__(self, dis_real, dis_fake):
    """Update the anchors with this batch, then the regulariser of this batch."""
    self.update(dis_real, dis_fake)
    return lecam_reg(dis_real, dis_fake, *self.anchors())

  def state_dict(self):
    return {'ema': self.ema.cpu().clone(), 'updates': self.updates}

  def load_state_dict(self, state):
    self.ema.copy_(state['ema'])
    self.updates = int(state['updates'])
