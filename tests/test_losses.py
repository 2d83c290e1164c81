"""losses.py: the hinge and non-saturating losses against their formulas written out."""
import pytest
import torch

import losses


def test_hinge_and_dcgan_losses_equal_their_formulas():
  fake, real = torch.tensor([[-2.0], [0.5]]), torch.tensor([[2.0], [0.2]])
  d_real, d_fake = losses.get_losses('hinge')[0](fake, real)
  assert d_real.item() == pytest.approx((0 + 0.8) / 2)
  assert d_fake.item() == pytest.approx((0 + 1.5) / 2)
  assert losses.get_losses('hinge')[1](fake).item() == pytest.approx(0.75)
  d_real, d_fake = losses.get_losses('dcgan')[0](fake, real)
  sig = torch.sigmoid
  assert d_real.item() == pytest.approx(-torch.log(sig(real)).mean().item(), rel=1e-6)
  assert d_fake.item() == pytest.approx(-torch.log(1 - sig(fake)).mean().item(), rel=1e-6)
  assert losses.get_losses('dcgan')[1](fake).item() == pytest.approx(
      -torch.log(sig(fake)).mean().item(), rel=1e-6)
  assert losses.discriminator_loss is losses.loss_hinge_dis
  with pytest.raises(ValueError):
    losses.get_losses('wgan')
