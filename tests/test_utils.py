"""utils.py, the original's compatibility surface: every name the original's utils.py exported is
still there (and is the object of the module that now owns it), and its own small helpers work."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import BigGAN
import checkpoints
import config as configuration
import datasets
import logger
import sampling
import train_fns
import utils
from conftest import make_config
from errors import UserError

# The original's public names in utils.py, and where each lives now.
HOMES = {
    configuration: ['prepare_parser', 'add_sample_parser', 'name_from_config', 'hashname',
                    'update_config_roots', 'prepare_root', 'activation_dict'],
    datasets: ['get_data_loaders', 'MultiEpochSampler', 'CenterCropLongEdge', 'RandomCropLongEdge',
               'imsize_dict', 'nclass_dict', 'classes_per_sheet_dict', 'root_dict', 'dset_dict'],
    train_fns: ['ema', 'ortho', 'default_ortho', 'toggle_grad'],
    checkpoints: ['seed_rng', 'save_weights', 'load_weights', 'join_strings'],
    logger: ['MetricsLogger', 'MyLogger', 'write_metadata', 'progress'],
    sampling: ['prepare_z_y', 'Distribution', 'sample', 'sample_1hot', 'sample_sheet', 'interp',
               'interp_sheet', 'accumulate_standing_stats'],
}


def test_the_originals_names_are_the_owning_modules_objects():
  for module, names in HOMES.items():
    for name in names:
      assert getattr(utils, name) is getattr(module, name), name
  exported = {name for names in HOMES.values() for name in names}
  own = {'count_parameters', 'query_gpu', 'print_grad_norms', 'Adam16', 'initiate_standing_stats'}
  assert set(utils.__all__) == exported | own


def test_count_parameters_and_print_grad_norms(capsys):
  net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2, bias=False))
  assert utils.count_parameters(net) == 3 * 4 + 4 + 4 * 2
  assert 'Number of parameters: 24' in capsys.readouterr().out
  # Gradients: big for the first layer, small for the second -> listed small first.
  net[0].weight.grad = torch.full_like(net[0].weight, 10.)
  net[1].weight.grad = torch.full_like(net[1].weight, 1e-3)
  lines = utils.print_grad_norms(net)
  assert len(lines) == 2 and lines[0].endswith('1.weight (2, 4)') and '0.weight' in lines[1]
  assert lines[1].startswith('%3.3e,' % float(net[0].weight.grad.norm()))


def test_long_edge_crops_cover_every_position_and_follow_seed_rng():
  img = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3))  # 6 wide, 4 high
  assert np.array_equal(np.asarray(utils.CenterCropLongEdge()(img)), np.asarray(img)[:, 1:5])
  crops = {np.asarray(utils.RandomCropLongEdge(np.random.default_rng(s))(img)).tobytes()
           for s in range(20)}
  assert crops == {np.asarray(img)[:, i:i + 4].tobytes() for i in range(3)}  # every position
  utils.seed_rng(3)
  first = np.asarray(utils.RandomCropLongEdge()(img))
  utils.seed_rng(3)
  assert np.array_equal(np.asarray(utils.RandomCropLongEdge()(img)), first)


def test_progress_and_query_gpu(capsys):
  assert list(utils.progress(range(5), desc='Images: ', displaytype='eta')) == list(range(5))
  assert '5/5 (100.00%)' in capsys.readouterr().out
  info = utils.query_gpu()
  if not torch.cuda.is_available():
    assert info == {} and 'No CUDA GPU' in capsys.readouterr().out


def test_adam16_steps_as_adam_and_refuses_fp16_weights():
  a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
  for p, opt in [(a, utils.Adam16([a], lr=0.1)), (b, torch.optim.Adam([b], lr=0.1))]:
    p.grad = torch.tensor([1., -2., 3.])
    opt.step()
  assert torch.equal(a, b)
  with pytest.raises(UserError, match='--amp fp16'):
    utils.Adam16([nn.Parameter(torch.ones(2).half())])


def test_initiate_standing_stats_resets_the_statistics():
  G = BigGAN.Generator(**make_config('--G_ch 4 --G_attn 0 --G_shared --dim_z 8'))
  with torch.no_grad():
    G.output_layer[0].stored_mean.fill_(5.)
  utils.initiate_standing_stats(G)
  assert float(G.output_layer[0].stored_mean.abs().sum()) == 0.
