"""BigGANdeep.py: the layout of the original's BigGAN-deep checkpoint; G and D against the
original's equations at 64 px, where stages change channels (written out independently in
bench/biggan_reference.py, float64), also without --hier and at other depths; G runs with and
without --hier. What BigGAN-deep shares with BigGAN (layouts derived from the rules, construction,
G_D): tests/test_models.py."""
import pytest
import torch

import BigGANdeep
from conftest import DEEP, Ref, assert_matches_reference, build_meta, make_config, n_itrs, randomise


def test_deep_layout():
  G, D = build_meta(BigGANdeep, DEEP)
  g, d = G.state_dict(), D.state_dict()
  # G: one entry per block (5 stages x depth 2), attention appended to the last block of 64 px.
  assert {k.split('.')[1] for k in g if k.startswith('blocks.')} == {str(i) for i in range(10)}
  assert 'blocks.7.1.gamma' in g and 'blocks.6.1.gamma' not in g
  assert tuple(g['linear.weight'].shape) == (4 * 4 * 16 * 128, 256)
  assert tuple(g['blocks.0.0.bn1.gain.weight'].shape) == (2048, 256)
  assert tuple(g['output_layer.2.weight'].shape) == (3, 128, 3, 3)
  # D: input conv, blocks.{stage}.{d}, concatenating shortcut for the extra channels only.
  assert tuple(d['input_conv.weight'].shape) == (128, 3, 3, 3)
  assert tuple(d['blocks.0.0.conv_sc.weight'].shape) == (128, 128, 1, 1)
  assert 'blocks.0.1.conv_sc.weight' not in d and 'blocks.0.2.gamma' in d


# ---------------------------------------------------------------------------------------------
# The original's equations, written out independently
# ---------------------------------------------------------------------------------------------


DEEP_TINY = ('--model BigGANdeep --G_shared --G_ch 4 --D_ch 4 --dim_z 6 --shared_dim 5 '
             '--G_attn 16 --D_attn 16_32 --SN_eps 1e-6 --BN_eps 1e-4')
DEEP_CASES = {
    # flags, train, (G depth, D depth)
    'original_train': (DEEP_TINY + ' --hier --G_depth 2 --D_depth 2', True, (2, 2)),
    'original_eval': (DEEP_TINY + ' --hier --G_depth 2 --D_depth 2', False, (2, 2)),
    'no_hier': (DEEP_TINY + ' --G_depth 2 --D_depth 2', True, (2, 2)),  # new: blocks see y only
    'mybn_sv_itrs': (DEEP_TINY + ' --hier --G_depth 2 --D_depth 2 --mybn --num_G_SV_itrs 2 '
                     '--num_D_SV_itrs 2', True, (2, 2)),
    'other_depths': (DEEP_TINY + ' --hier --G_depth 3 --D_depth 1', True, (3, 1)),
}


@pytest.mark.parametrize('case', list(DEEP_CASES))
def test_deep_G_and_D_follow_the_original_equations(case, one_thread):
  """BigGAN-deep at 64 px, where stages change channels: G's shortcut drops channels, D's
  concatenates conv_sc(x)."""
  flags, train, (g_depth, d_depth) = DEEP_CASES[case]
  torch.manual_seed(0)
  config = make_config(flags, 64, G_init='N02', D_init='N02')
  G, D = BigGANdeep.Generator(**config).double(), BigGANdeep.Discriminator(**config).double()
  randomise(G)
  randomise(D)
  G.train(train)
  D.train(train)
  sd = G.state_dict()
  assert 'blocks.%d.1.gamma' % (2 * g_depth - 1) in sd  # attention after stage 1 (16 px)
  # Stage 0 keeps 64 channels; the last block of stage 1 goes 64 -> 32 (hidden 64 / 4).
  assert tuple(sd['blocks.0.0.conv4.weight'].shape) == (64, 16, 1, 1)
  assert tuple(sd['blocks.%d.0.conv4.weight' % (2 * g_depth - 1)].shape) == (32, 16, 1, 1)
  z, y = torch.randn(4, G.dim_z, dtype=torch.float64), torch.randint(0, 10, (4,))
  ref = Ref(sd, train, 1e-6, 1e-4, num_itrs=n_itrs(flags, 'G'))
  assert_matches_reference(G, ref, lambda: G(z, G.shared(y)),
                           lambda: ref.G_deep(z, y, n_stages=4, depth=g_depth, attn_stages={1},
                                              hier='--hier' in flags))
  assert (G.linear.in_features, G.blocks[0][0].bn1.gain.in_features) == (
      (11, 11) if '--hier' in flags else (6, 5))

  x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
  sd = D.state_dict()
  assert tuple(sd['blocks.0.0.conv_sc.weight'].shape) == (4, 4, 1, 1)  # 4 -> 8 channels
  assert 'blocks.0.%d.gamma' % d_depth in sd and 'blocks.1.%d.gamma' % d_depth in sd
  dref = Ref(sd, train, 1e-6, 1e-4, num_itrs=n_itrs(flags, 'D'))
  assert_matches_reference(D, dref, lambda: D(x, y),
                           lambda: dref.D_deep(x, y, downsample=[True] * 4, depth=d_depth,
                                               attn_stages={0, 1}))


# ---------------------------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('hier', [True, False])
def test_deep_runs_with_and_without_hier(hier):
  torch.manual_seed(0)
  config = make_config('--model BigGANdeep --G_shared --G_ch 16 --D_ch 16 --G_depth 2 --D_depth 2 '
                       '--dim_z 16 --G_attn 16 --D_attn 16' + (' --hier' if hier else ''), 32)
  G, D = BigGANdeep.Generator(**config), BigGANdeep.Discriminator(**config)
  y = torch.tensor([1, 2])
  x = G(torch.randn(2, G.dim_z), G.shared(y))
  assert x.shape == (2, 3, 32, 32) and D(x, y).shape == (2, 1)
  assert G.linear.in_features == 16 + (16 if hier else 0)
  GD = BigGANdeep.G_D(G, D)
  assert GD(torch.randn(2, G.dim_z), y).shape == (2, 1)
