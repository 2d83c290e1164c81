"""The flag parser: every original flag with its dest and default, the original launch scripts,
experiment names."""
import glob
import json
import os
import re
import shlex

import pytest

import config as configuration
import models
import utils
from conftest import make_config
from errors import UserError

# name: (dest, default) of all 98 flags of the original prepare_parser() + add_sample_parser().
ORIGINAL_FLAGS = {
    'dataset': 'I128_hdf5', 'augment': False, 'num_workers': 8,
    'no_pin_memory': ('pin_memory', True),
    'shuffle': False, 'load_in_mem': False, 'use_multiepoch_sampler': False,
    'model': 'BigGAN', 'G_param': 'SN', 'D_param': 'SN', 'G_ch': 64, 'D_ch': 64, 'G_depth': 1,
    'D_depth': 1, 'D_thin': ('D_wide', True), 'G_shared': False, 'shared_dim': 0, 'dim_z': 128,
    'z_var': 1.0, 'hier': False, 'cross_replica': False, 'mybn': False, 'G_nl': 'relu',
    'D_nl': 'relu', 'G_attn': '64', 'D_attn': '64', 'norm_style': 'bn',
    'seed': 0, 'G_init': 'ortho', 'D_init': 'ortho', 'skip_init': False,
    'G_lr': 5e-5, 'D_lr': 2e-4, 'G_B1': 0.0, 'D_B1': 0.0, 'G_B2': 0.999, 'D_B2': 0.999,
    'adam_eps': 1e-8,
    'batch_size': 64, 'G_batch_size': 0, 'num_G_accumulations': 1, 'num_D_steps': 2,
    'num_D_accumulations': 1, 'split_D': False, 'num_epochs': 100, 'parallel': False,
    'G_fp16': False, 'D_fp16': False, 'G_mixed_precision': False, 'D_mixed_precision': False,
    'accumulate_stats': False, 'num_standing_accumulations': 16,
    'G_eval_mode': False, 'save_every': 2000, 'num_save_copies': 2, 'num_best_copies': 2,
    'which_best': 'IS', 'no_fid': False, 'test_every': 5000, 'num_inception_images': 50000,
    'hashname': False, 'base_root': '', 'data_root': 'data', 'weights_root': 'weights',
    'logs_root': 'logs', 'samples_root': 'samples', 'pbar': 'mine', 'name_suffix': '',
    'experiment_name': '', 'config_from_name': False,
    'ema': False, 'ema_decay': 0.9999, 'use_ema': False, 'ema_start': 0,
    'BN_eps': 1e-5, 'SN_eps': 1e-8, 'num_G_SVs': 1, 'num_D_SVs': 1, 'num_G_SV_itrs': 1,
    'num_D_SV_itrs': 1, 'G_ortho': 0.0, 'D_ortho': 0.0, 'toggle_grads': True,
    'which_train_fn': 'GAN', 'load_weights': '', 'resume': False,
    'logstyle': '%3.3e', 'log_G_spectra': False, 'log_D_spectra': False, 'sv_log_interval': 10,
    'sample_npz': False, 'sample_num_npz': 50000, 'sample_sheets': False, 'sample_interps': False,
    'sample_sheet_folder_num': -1, 'sample_random': False, 'sample_trunc_curves': '',
    'sample_inception_metrics': False,
}


def parser():
  return utils.add_sample_parser(utils.prepare_parser())


def test_every_original_flag_with_its_dest_and_default():
  assert len(ORIGINAL_FLAGS) == 98
  actions = {a.option_strings[0][2:]: a for a in parser()._actions if a.option_strings
             and a.dest != 'help'}
  for flag, expected in ORIGINAL_FLAGS.items():
    dest, default = expected if isinstance(expected, tuple) else (flag, expected)
    assert flag in actions, flag
    assert (actions[flag].dest, actions[flag].default) == (dest, default), flag
  new = set(actions) - set(ORIGINAL_FLAGS)
  assert all(actions[f].help.startswith('(new)') for f in new), new
  assert all(actions[f].help for f in actions)


def launch_commands(repo_root):
  """(script, argv) of every train.py/sample.py call (python or torchrun) in scripts/*.sh, with
  the scripts' shell variables at their defaults."""
  for path in sorted(glob.glob(os.path.join(repo_root, 'scripts', '*.sh'))):
    text = open(path).read().replace('\\\n', ' ')
    for old, new in [('$((256 / NPROC))', '32'), ('$EXP', 'exp'), ('$RESUME', ''), ('"$@" &', ''),
                     ('"$@"', '')]:
      text = text.replace(old, new)
    for line in text.splitlines():
      match = re.search(r'(?:python3? |torchrun .*)(train|sample)\.py(.*)', line)
      if match and not line.lstrip().startswith('#'):
        yield os.path.basename(path), shlex.split(match.group(2))


def test_original_launch_scripts_parse(repo_root):
  originals = {'launch_BigGAN_bs256x8.sh', 'launch_BigGAN_bs512x4.sh',
               'launch_BigGAN_ch64_bs256x8.sh', 'launch_BigGAN_deep.sh',
               'launch_SAGAN_bs128x2_ema.sh', 'launch_SNGAN.sh', 'launch_cifar_ema.sh',
               'sample_BigGAN_bs256x8.sh', 'sample_cifar_ema.sh'}
  seen = set()
  for script, argv in launch_commands(repo_root):
    parser().parse_args(argv)
    seen.add(script)
  assert originals <= seen


def test_released_experiment_name(repo_root):
  argv = dict(launch_commands(repo_root))['launch_BigGAN_bs256x8.sh']
  config = vars(parser().parse_args(argv))
  assert utils.name_from_config(config) == (
      'BigGAN_I128_hdf5_seed0_Gch96_Dch96_bs256_nDa8_nGa8_Glr1.0e-04_Dlr4.0e-04_'
      'Gnlinplace_relu_Dnlinplace_relu_Ginitortho_Dinitortho_Gattn64_Dattn64_Gshared_hier_ema')


def test_name_rule_covers_every_optional_part():
  config = vars(parser().parse_args(shlex.split(
      '--dataset C10 --model BigGANdeep --G_depth 2 --D_depth 3 --G_fp16 --D_fp16 --num_D_steps 1 '
      '--G_B1 0.5 --G_B2 0.99 --D_B1 0.1 --D_B2 0.9 --G_param P --D_param Q --G_attn 0 '
      '--G_ortho 1e-4 --D_ortho 2e-4 --norm_style gn --cross_replica --name_suffix run1')))
  assert utils.name_from_config(config) == (
      'BigGAN_C10_BigGANdeep_seed0_Gch64_Dch64_Gd2_Dd3_bs64_Gfp16_Dfp16_Glr5.0e-05_Dlr2.0e-04_'
      'GB0.500_GBB0.990_DB0.100_DBB0.900_Gnlrelu_Dnlrelu_Ginitortho_Dinitortho_GP_DQ_Dattn64_'
      'Gortho1.0e-04_Dortho2.0e-04_gn_cr_run1')


def test_hashname_is_deterministic_and_short():
  config = vars(parser().parse_args(['--hashname']))
  name = utils.name_from_config(config)
  assert name == utils.name_from_config(dict(config))
  assert name == utils.hashname(utils.name_from_config({**config, 'hashname': False}))
  assert re.fullmatch(r'[a-z]+_[a-z]+_\d{4}', name)
  assert utils.hashname('a') != utils.hashname('b')


def test_toggle_grads_can_be_switched_off():
  assert parser().parse_args([]).toggle_grads is True
  assert parser().parse_args(['--toggle_grads']).toggle_grads is True
  assert parser().parse_args(['--no_toggle_grads']).toggle_grads is False


@pytest.mark.parametrize('base', ['', '/tmp/x'])
def test_base_root(base):
  config = utils.update_config_roots(vars(parser().parse_args(['--base_root', base])))
  expected = {k: (os.path.join(base, k) if base else k)
              for k in ['data', 'weights', 'logs', 'samples']}
  assert {k: config[k + '_root'] for k in expected} == expected


def test_ddp_launchers_keep_the_2048_mega_batch(repo_root):
  commands = dict(launch_commands(repo_root))
  for script, world in [('launch_BigGAN_bs256x8_ddp.sh', 8), ('launch_BigGAN_deep_ddp.sh', 8),
                        ('slurm_BigGAN_multinode.sh', 32)]:
    config = vars(parser().parse_args(commands[script]))
    for accumulations in ['num_D_accumulations', 'num_G_accumulations']:
      assert config['batch_size'] * config[accumulations] * world == 2048, script


# ---------------------------------------------------------------------------------------------
# config.py: the table against the one recorded before it moved out of utils.py
# ---------------------------------------------------------------------------------------------

# Every action of both parsers, vars(parse_args([])) and the launchers' experiment names, as the
# flag table gave them before config.py existed: choices= and help texts may change, and "(new)"
# flags may be added, nothing else.
GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden_flags.json')


def flag_table(parser):
  return [{'options': list(a.option_strings), 'dest': a.dest, 'default': repr(a.default),
           'action': type(a).__name__, 'nargs': repr(a.nargs), 'const': repr(a.const),
           'type': getattr(a.type, '__name__', repr(a.type))} for a in parser._actions]


def test_flags_defaults_order_and_names_are_the_recorded_ones(repo_root):
  with open(GOLDEN) as f:
    golden = json.load(f)
  for built, recorded in ((configuration.prepare_parser(), golden['train_flags']),
                          (parser(), golden['sample_flags'])):
    table = flag_table(built)
    old = [row for row in table if row['options'] in [r['options'] for r in recorded]]
    assert old == recorded  # in the same order; flags added later are new ones:
    added = [a for a, row in zip(built._actions, table) if row not in recorded]
    assert all(a.help.startswith('(new)') for a in added), [a.dest for a in added]
  defaults = vars(configuration.prepare_parser().parse_args([]))
  assert {k: repr(defaults[k]) for k in golden['train_defaults']} == golden['train_defaults']
  # The launchers' command lines as recorded (scripts/ may be retuned since): same names.
  names = [[script, argv, configuration.name_from_config(vars(parser().parse_args(argv)))]
           for script, argv, _ in golden['names']]
  assert names == golden['names']
  assert {script for script, _, _ in golden['names']} <= {s for s, _ in launch_commands(repo_root)}


def test_help_shows_every_default_once(repo_root):
  formatter = configuration.HelpFormatter('x')
  for action in parser()._actions:
    if action.option_strings and action.dest != 'help':
      text = formatter._get_help_string(action)
      assert text.count('(default:') == 1, action.dest
      if '%(default)s' in text:
        assert repr(action.default) not in ('None', "''"), action.dest
  shown = parser().format_help()
  assert '(default: 0.9999)' in shown and '(default: I128_hdf5)' in shown
  assert '(default: off)' in shown and '(default: none)' in shown
  with open(os.path.join(repo_root, 'config.py')) as f:
    assert '%(default)' not in f.read().replace("' (default: %(default)s)'", '')


def test_help_texts_carry_no_measurements():
  """Measured numbers go stale in help texts: they live in README.md and bench docstrings."""
  for action in parser()._actions:
    assert not re.search(r'\d+(\.\d+)?x (faster|slower)|\d+%', action.help or ''), action.dest


def test_choices_come_from_the_registries():
  actions = {a.dest: a for a in parser()._actions}
  import inception_utils
  import layers
  import losses
  import sampling
  assert list(actions['G_init'].choices) == list(layers.INIT_STYLES)
  assert list(actions['loss'].choices) == list(losses.LOSSES)
  assert list(actions['G_nl'].choices) == list(configuration.activation_dict)
  assert list(actions['inception_net'].choices) == list(inception_utils.NETWORKS)
  assert list(actions['truncation_mode'].choices) == list(sampling.TRUNCATION_MODES)
  for family in models.FAMILIES:
    assert family in actions['model'].help
  with pytest.raises(UserError, match="argument --D_init: invalid choice: 'kaiming'"):
    parser().parse_args(['--D_init', 'kaiming'])


@pytest.mark.parametrize('overrides,message', [
    ({'D_init': 'kaiming'}, '--D_init kaiming is unknown; use one of ortho, N02'),
    ({'norm_style': 'batch'}, '--norm_style batch is unknown'),
    ({'hier': True}, '--hier concatenates z chunks to the shared embedding: add --G_shared'),
    ({'model': 'BigGANdeep', 'G_tfhub': True, 'mybn': True}, '--G_tfhub keeps TF-Hub'),
    ({'which_train_fn': 'nope'}, '--which_train_fn nope is unknown; use GAN, dummy'),
    ({'pbar': 'bar'}, '--pbar must be mine or tqdm'),
    ({'G_B2': 1.0}, '--G_B2 is an Adam beta'),
])
def test_model_and_training_options_are_checked(overrides, message):
  """Stored configs and users' dicts bypass the parser's choices: check_config refuses them."""
  with pytest.raises(UserError, match=message):
    configuration.check_config(make_config('', **overrides))


@pytest.mark.parametrize('overrides,message', [
    ({'which_best': 'KID'}, '--which_best KID needs KID_mean among --metrics'),
    ({'which_best': 'FOO'}, '--which_best FOO is not a metric'),
    ({'which_best': 'FID', 'no_fid': True}, '--which_best FID needs FID: drop --no_fid'),
    ({'kid_subset_size': 1}, '--kid_subset_size must be at least 2'),
])
def test_metric_flags_are_checked(overrides, message):
  with pytest.raises(UserError, match=message):
    configuration.check_metrics({'metrics': 'IS,FID', 'no_fid': False, 'which_best': 'IS',
                                 **overrides})


def test_small_data_flags_are_checked():
  for flags, message in [('--DiffAugment crop', 'unknown op crop'),
                         ('--ada_target 1.5', '--ada_target must be in'),
                         ('--ada_interval 0', '--ada_interval must be'),
                         ('--LeCam -1', '--LeCam must not be negative'),
                         ('--LeCam_decay 1', '--LeCam_decay must be in'),
                         ('--AC_weight -1', '--AC_weight must not be negative')]:
    with pytest.raises(UserError, match=message):
      configuration.check_config(make_config(flags))
  default = make_config('')
  assert configuration.name_from_config(default) == configuration.name_from_config(
      {k: v for k, v in default.items() if 'ada' not in k and 'LeCam' not in k
       and k not in ('DiffAugment', 'AC_weight')})


def test_truncation_values_do_not_drift():
  assert configuration.truncation_values('0.3_0.1_0.6') == [0.3, 0.4, 0.5, 0.6]
  assert len(configuration.truncation_values('0.05_0.05_1.0')) == 20
  assert configuration.truncation_values('1_1_1') == [1.0]
  with pytest.raises(UserError, match='at most 1000'):
    configuration.truncation_values('0_0.001_2')
