"""train_fns.py: ortho reg against autograd, the EMA, gradient accumulation against one big
batch, the auxiliary classifier (AC-GAN and ADC-GAN) against float64 cross-entropies."""
import pytest
import torch

import BigGAN
import config as configuration
import sampling
import train_fns
from conftest import make_config
from errors import UserError


def penalty(w, off_diagonal):
  """The penalties whose gradients train_fns.ortho / train_fns.default_ortho add, for autograd."""
  w = w.view(w.shape[0], -1)
  eye = torch.eye(w.shape[0], dtype=w.dtype)
  gram = w @ w.t()
  gram = gram * (1 - eye) if off_diagonal else gram - eye
  return 0.5 * (gram ** 2).sum()


@pytest.mark.parametrize('fn,off_diagonal', [(train_fns.ortho, True),
                                             (train_fns.default_ortho, False)])
def test_ortho_reg_gradient_equals_autograd(fn, off_diagonal):
  torch.manual_seed(0)
  net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.Linear(4, 6),
                            torch.nn.Embedding(7, 3)).double()
  blacklisted = net[2].weight
  for p in net.parameters():
    p.grad = torch.randn_like(p)
  before = {n: p.grad.clone() for n, p in net.named_parameters()}
  strength = 0.3
  fn(net, strength, blacklist=[blacklisted])
  for name, p in net.named_parameters():
    if p.dim() < 2 or p is blacklisted:
      assert torch.equal(p.grad, before[name]), name  # biases and the blacklist untouched
      continue
    w = p.detach().clone().requires_grad_(True)
    expected, = torch.autograd.grad(strength * penalty(w, off_diagonal), w)
    torch.testing.assert_close(p.grad - before[name], expected, rtol=1e-10, atol=1e-12)


def test_ema_copies_before_start_then_averages_everything():
  torch.manual_seed(0)
  config = make_config('--G_ch 4 --G_attn 0 --cross_replica')
  source = BigGAN.Generator(**config)
  target = BigGAN.Generator(**{**config, 'no_optim': True})
  ema = train_fns.ema(source, target, decay=0.9, start_itr=10)
  assert all(torch.equal(source.state_dict()[k], v) for k, v in target.state_dict().items())

  def perturb():
    with torch.no_grad():
      for t in source.state_dict().values():
        t.add_(1) if t.is_floating_point() else t.add_(3)
  perturb()
  ema.update(5)  # before ema_start: a plain copy
  assert all(torch.equal(source.state_dict()[k], v) for k, v in target.state_dict().items())
  old = {k: v.clone() for k, v in target.state_dict().items()}
  perturb()
  ema.update(10)
  src = source.state_dict()
  for k, v in target.state_dict().items():
    if v.is_floating_point():  # weights and buffers (u, sv, BN statistics) alike
      torch.testing.assert_close(v, 0.9 * old[k] + 0.1 * src[k], rtol=1e-6, atol=1e-6)
    else:  # counters such as num_batches_tracked follow the source
      assert torch.equal(v, src[k])
  assert any('running_mean' in k for k in src)


class Scripted(sampling.Distribution):
  """A z_/y_ that refills itself from a list, so two runs can see the same noise."""

  def sample_(self, generator=None):
    self.copy_(self.queue.pop(0))
    return self


def scripted(values, like):
  t = torch.zeros_like(like).as_subclass(Scripted)
  t.queue = list(values)
  return t


@pytest.mark.parametrize('k', [2, 3])
def test_D_accumulation_equals_one_big_batch(k):
  """k accumulations of batch b give the D update of one batch of k*b."""
  b = 2
  flags = ('--G_shared --G_ch 4 --D_ch 4 --G_attn 0 --D_attn 0 --num_D_steps 1 '
           '--num_D_SV_itrs 60 --D_init N02 --D_lr 1e-2 --G_lr 1e-2')
  torch.manual_seed(0)
  x = torch.randn(k * b, 3, 32, 32, dtype=torch.float64)
  y = torch.randint(0, 10, (k * b,))
  zs = torch.randn(k, b, 128, dtype=torch.float64)
  ys = torch.randint(0, 10, (k, b))
  results = []
  for accumulations, batch in [(k, b), (1, k * b)]:
    config = make_config(flags + ' --num_D_accumulations %d --batch_size %d' % (accumulations,
                                                                                batch))
    torch.manual_seed(1)
    G = BigGAN.Generator(**config).double().eval()  # eval: G's BN does not mix the batch
    D = BigGAN.Discriminator(**config).double()
    for _ in range(10):  # converge the SN vectors, so extra forward passes leave them alone
      D(x[:1], y[:1])
    # SGD: the update is the gradient itself (Adam would turn rounding noise in near-zero
    # gradients into full-size steps).
    D.optim = torch.optim.SGD(D.parameters(), lr=1.0)
    like_z = torch.zeros(batch, 128, dtype=torch.float64)
    like_y = torch.zeros(batch, dtype=torch.long)
    z_seq = list(zs) if accumulations > 1 else [zs.reshape(-1, 128)]
    y_seq = list(ys) if accumulations > 1 else [ys.reshape(-1)]
    z_ = scripted(z_seq + [torch.zeros(batch, 128, dtype=torch.float64)], like_z)
    y_ = scripted(y_seq + [torch.zeros(batch, dtype=torch.long)], like_y)
    train = train_fns.GAN_training_function(G, D, BigGAN.G_D(G, D), z_, y_, None, {'itr': 1},
                                            config)
    out = train(x, y)
    assert set(out) == {'G_loss', 'D_loss_real', 'D_loss_fake'}
    results.append({n: p.detach().clone() for n, p in D.named_parameters()})
  for name in results[0]:
    torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-9, atol=1e-11,
                               msg=name)


# ---------------------------------------------------------------------------------------------
# --AC_weight: the auxiliary classifier
# ---------------------------------------------------------------------------------------------

AC_FLAGS = ('--G_ch 4 --D_ch 4 --G_attn 0 --D_attn 0 --dim_z 8 --batch_size 3 --num_D_steps 1 '
            '--G_shared --shared_dim 4')


def cross_entropy64(logits, labels):
  """Mean -log softmax(logits)[label], written out in float64."""
  logits = logits.double()
  log_sum = torch.log(torch.exp(logits - logits.max(1, keepdim=True)[0]).sum(1))
  picked = logits.gather(1, labels.view(-1, 1)).squeeze(1) - logits.max(1)[0]
  return (log_sum - picked).mean().item()


def test_auxiliary_classifier_logits_follow_the_projection_output_and_its_keys_come_last():
  torch.manual_seed(0)
  plain = BigGAN.Discriminator(**make_config(AC_FLAGS)).eval()
  torch.manual_seed(0)
  D = BigGAN.Discriminator(**make_config(AC_FLAGS + ' --AC_weight 0.5')).eval()
  keys = list(D.state_dict())
  assert keys[:len(plain.state_dict())] == list(plain.state_dict())
  assert all(k.startswith('classifier.') for k in keys[len(plain.state_dict()):])
  D.load_state_dict(plain.state_dict(), strict=False)
  x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 9, 3])
  features = []
  D.linear.register_forward_hook(lambda module, args, out: features.append(args[0]))
  out = D(x, y)
  assert out.shape == (4, 11)
  assert torch.equal(out[:, :1], plain(x, y))
  torch.testing.assert_close(out[:, 1:], D.classifier(features[0]))


def test_ac_weight_adds_the_weighted_cross_entropy_of_reals_to_D_and_of_fakes_to_G():
  weight = 0.7
  config = make_config(AC_FLAGS + ' --AC_weight %g' % weight)
  torch.manual_seed(0)
  G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
  z_, y_ = sampling.prepare_z_y(3, G.dim_z, 10, device='cpu')
  step = train_fns.GAN_training_function(G, D, BigGAN.G_D(G, D), z_, y_, None, {'itr': 1},
                                         config)
  outputs = []  # D's outputs: the D step's [fakes; reals], then the G step's fakes
  D.register_forward_hook(lambda module, args, out: outputs.append(out.detach().clone()))
  x, y = torch.rand(3, 3, 32, 32) * 2 - 1, torch.tensor([1, 7, 4])
  metrics = step(x, y)
  (D_out, G_out), labels = outputs, y_.as_subclass(torch.Tensor)  # y_: the G step's last draw
  assert D_out.shape == (6, 11) and G_out.shape == (3, 11)
  assert metrics['AC_loss_real'].item() == pytest.approx(cross_entropy64(D_out[3:, 1:], y),
                                                         rel=1e-5)
  assert metrics['AC_loss_fake'].item() == pytest.approx(cross_entropy64(G_out[:, 1:], labels),
                                                         rel=1e-5)
  hinge = -G_out[:, 0].double().mean().item()  # the generator's hinge loss on the fakes
  assert metrics['G_loss'].item() == pytest.approx(
      hinge + weight * cross_entropy64(G_out[:, 1:], labels), rel=1e-5)
  real_hinge = torch.relu(1 - D_out[3:, 0].double()).mean().item()
  assert metrics['D_loss_real'].item() == pytest.approx(real_hinge, rel=1e-5)  # adversarial only
  # The classifier learns from the reals' classes: its weights moved in the D step.
  torch.manual_seed(0)
  untouched = BigGAN.Discriminator(**config)
  assert not torch.equal(untouched.classifier.weight, D.classifier.weight)


def test_adc_classifier_tells_real_from_fake_classes_and_G_moves_fakes_to_the_real_ones():
  """--AC_type adc (ADC-GAN): 2 n_classes logits; D's loss: cross-entropy of real class c at 2c
  and of fake class c at 2c + 1; G's: that of 2c minus that of 2c + 1, on its fakes."""
  weight = 0.5
  config = make_config(AC_FLAGS + ' --AC_weight %g --AC_type adc' % weight)
  assert configuration.name_from_config(config).endswith('_ADC0.5')
  torch.manual_seed(0)
  G, D = BigGAN.Generator(**config), BigGAN.Discriminator(**config)
  assert D.classifier.weight.shape[0] == 20
  z_, y_ = sampling.prepare_z_y(3, G.dim_z, 10, device='cpu')
  step = train_fns.GAN_training_function(G, D, BigGAN.G_D(G, D), z_, y_, None, {'itr': 1},
                                         config)
  calls = []  # (D's labels, D's outputs): the D step's [fakes; reals], then the G step's fakes
  D.register_forward_hook(lambda module, args, out: calls.append(
      (args[1].as_subclass(torch.Tensor).clone(), out.detach().clone())))
  x, y = torch.rand(3, 3, 32, 32) * 2 - 1, torch.tensor([1, 7, 4])
  metrics = step(x, y)
  (D_labels, D_out), (G_labels, G_out) = calls
  assert D_out.shape == (6, 21) and G_out.shape == (3, 21)
  assert torch.equal(D_labels[3:], y)
  real = cross_entropy64(D_out[3:, 1:], 2 * y)
  fake = cross_entropy64(D_out[:3, 1:], 2 * D_labels[:3] + 1)
  assert metrics['AC_loss_real'].item() == pytest.approx(real, rel=1e-5)
  assert metrics['AC_loss_D_fake'].item() == pytest.approx(fake, rel=1e-5)
  G_adc = cross_entropy64(G_out[:, 1:], 2 * G_labels) - cross_entropy64(G_out[:, 1:],
                                                                        2 * G_labels + 1)
  assert metrics['AC_loss_fake'].item() == pytest.approx(G_adc, abs=1e-5)
  hinge = -G_out[:, 0].double().mean().item()
  assert metrics['G_loss'].item() == pytest.approx(hinge + weight * G_adc, rel=1e-5, abs=1e-6)
  with pytest.raises(UserError, match='--AC_type adc sets the auxiliary classifier of '
                                      '--AC_weight, which is 0'):
    configuration.check_config(make_config('--AC_type adc'))


# ---------------------------------------------------------------------------------------------
# --reuse_fakes
# ---------------------------------------------------------------------------------------------


def test_reuse_fakes_scores_the_last_D_steps_fakes_in_the_G_step():
  """One iteration (2 D steps, AC on) with --reuse_fakes equals the same updates written out:
  each D step on fresh fakes, then the G step on the second D step's fakes, through the D that
  step left, with their classes; no noise is drawn for the G step."""
  import copy
  flags = ('--G_ch 4 --D_ch 4 --G_attn 0 --D_attn 0 --dim_z 8 --batch_size 3 --num_D_steps 2 '
           '--G_shared --shared_dim 4 --AC_weight 0.5 --G_lr 1e-2 --D_lr 1e-2')
  config = make_config(flags + ' --reuse_fakes')
  torch.manual_seed(0)
  G = BigGAN.Generator(**config).double()
  D = BigGAN.Discriminator(**config).double()
  G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
  for net in (G, D, G_ref, D_ref):  # SGD: the update is the gradient itself
    net.optim = torch.optim.SGD(net.parameters(), lr=0.1)
  torch.manual_seed(1)
  x, y = torch.rand(6, 3, 32, 32, dtype=torch.float64) * 2 - 1, torch.tensor([1, 7, 4, 0, 2, 9])
  zs, ys = torch.randn(2, 3, 8, dtype=torch.float64), torch.randint(0, 10, (2, 3))
  z_ = scripted(list(zs), torch.zeros(3, 8, dtype=torch.float64))
  y_ = scripted(list(ys), torch.zeros(3, dtype=torch.long))
  step = train_fns.GAN_training_function(G, D, BigGAN.G_D(G, D), z_, y_, None, {'itr': 1},
                                         config)
  metrics = step(x, y)
  assert z_.queue == [] and y_.queue == []  # two draws: the D steps'
  # Written out: hinge losses, AC cross-entropy of the reals for D and of the fakes for G.
  ce = torch.nn.functional.cross_entropy
  for i in range(2):
    D_ref.optim.zero_grad()
    with torch.no_grad() if i == 0 else torch.enable_grad():
      fakes = G_ref(zs[i], G_ref.shared(ys[i]))
    out = D_ref(torch.cat([fakes.detach(), x[3 * i:3 * i + 3]]), torch.cat([ys[i],
                                                                           y[3 * i:3 * i + 3]]))
    loss = (torch.relu(1 - out[3:, 0]).mean() + torch.relu(1 + out[:3, 0]).mean()
            + 0.5 * ce(out[3:, 1:], y[3 * i:3 * i + 3]))
    loss.backward()
    D_ref.optim.step()
  G_ref.optim.zero_grad()
  out = D_ref(fakes, ys[1])
  G_loss = -out[:, 0].mean() + 0.5 * ce(out[:, 1:], ys[1])
  G_loss.backward()
  D_ref.optim.zero_grad()  # the G step leaves D's weights alone
  G_ref.optim.step()
  # (the losses are taken in float32, as in the original: float32 agreement)
  assert metrics['G_loss'].item() == pytest.approx(G_loss.item(), rel=1e-6)
  for net, ref in ((G, G_ref), (D, D_ref)):
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
      torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8, msg=name)
    for (name, b), c in zip(net.named_buffers(), ref.buffers()):  # BN statistics, SN vectors
      torch.testing.assert_close(b, c, rtol=1e-6, atol=1e-8, msg=name)


@pytest.mark.parametrize('extra,message', [
    ('--num_D_accumulations 2', 'needs --num_D_accumulations 1'),
    ('--num_G_accumulations 2', 'needs --num_G_accumulations 1'),
    ('--G_batch_size 8', 'G\'s batch to be --batch_size'),
    ('--parallel', 'does not work with --parallel')])
def test_reuse_fakes_refuses_what_it_cannot_do(extra, message):
  config = make_config('--batch_size 4 --reuse_fakes ' + extra)
  with pytest.raises(UserError, match=message) as e:
    configuration.check_config(config)
  assert '\n' not in str(e.value)
