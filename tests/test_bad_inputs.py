"""The bad-input catalogue (issue 7): train.py, sample.py, make_hdf5.py,
calculate_inception_moments.py and TFHub/converter.py each get contradictory flags, missing or
corrupt files, impossible values, missing resources and unwritable outputs. Every case must end
with exit status 2 and one line `error: <what is wrong; what to do>` (no traceback; only the
warnings and progress bars of work already done may precede it), and leave every file already on
disk (a good run's weights, logs and samples, data, dumps, an existing output) byte- and
mtime-identical, with no new file such as a temporary one. Most cases run in-process through
errors.run_main; one per script runs again as a real process."""
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import calculate_inception_moments
import config as configuration
import datasets
import errors
import inception_utils
import make_hdf5
import sample
import train
from test_tfhub import write_dump
from TFHub import converter

FLAGS = ('--dataset Shapes --resolution 32 --G_ch 4 --D_ch 4 --batch_size 4 --G_attn 0 '
         '--D_attn 0 --num_workers 0')
SCRIPTS = {'train': train, 'sample': sample, 'make_hdf5': make_hdf5,
           'moments': calculate_inception_moments, 'converter': converter}
FILES = {'train': 'train.py', 'sample': 'sample.py', 'make_hdf5': 'make_hdf5.py',
         'moments': 'calculate_inception_moments.py', 'converter': 'TFHub/converter.py'}


class Payload(object):
  """A pickle that would create a folder when loaded: safe loading must refuse it unrun."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.mkdir, (self.marker,)


def truncate(source, target):
  """target = the first half of source, as an interrupted copy leaves it."""
  with open(source, 'rb') as f:
    blob = f.read()
  with open(target, 'wb') as f:
    f.write(blob[:len(blob) // 2])


def save_images(folder, n, size=32, seed=0):
  rng = np.random.default_rng(seed)
  for i in range(n):
    path = os.path.join(folder, 'c%d' % (i % 2), '%d.png' % i)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  """Files from earlier good runs and the broken inputs of the cases: {name: path}."""
  root = tmp_path_factory.mktemp('bad_inputs')
  w = {'root': str(root), 'run': str(root / 'run'), 'data': str(root / 'data'),
       'file': str(root / 'a_file')}
  w['roots'] = ' '.join('--%s_root %s/%s' % (k, w['run'], k)
                        for k in ['weights', 'logs', 'samples', 'data'])
  with open(w['file'], 'w') as f:
    f.write('a regular file, not a folder\n')
  # A good training run and a good sample.py run: weights, logs, samples, samples.npz.
  run_argv = shlex.split('%s --num_iters 2 --save_every 2 --base_root %s' % (FLAGS, w['run']))
  train.main(run_argv)
  w['exp'] = configuration.name_from_config(configuration.prepare_config(vars(
      configuration.prepare_parser().parse_args(run_argv))))
  sample.main(shlex.split('%s --base_root %s --sample_npz --sample_num_npz 8' % (FLAGS, w['run'])))
  w['npz'] = os.path.join(w['run'], 'samples', w['exp'], 'samples.npz')
  weights = os.path.join(w['run'], 'weights', w['exp'])
  # The same checkpoint with a truncated G.pth, and with a malicious state_dict.pth.
  for name in ['cut', 'evil']:
    shutil.copytree(weights, os.path.join(str(root), name, 'weights', w['exp']))
  w['cut'], w['evil'] = str(root / 'cut'), str(root / 'evil')
  for suffix in ['', '_copy0']:
    path = os.path.join(w['cut'], 'weights', w['exp'], 'G%s.pth' % suffix)
    truncate(path, path)
  w['marker'] = str(root / 'payload_ran')
  for suffix in ['', '_copy0']:
    torch.save({'itr': 2, 'config': Payload(w['marker'])},
               os.path.join(w['evil'], 'weights', w['exp'], 'state_dict%s.pth' % suffix))
  # Data: a good image folder (indexed) and its HDF5, and broken ones.
  data = w['data']
  save_images(os.path.join(data, 'pics'), 4)
  w['h5'] = make_hdf5.main(['--dataset', os.path.join(data, 'pics'), '--resolution', '32',
                            '--num_workers', '0'])
  os.makedirs(os.path.join(data, 'empty'))
  os.makedirs(os.path.join(data, 'hollow', 'c0'))
  with open(os.path.join(data, 'hollow', 'c0', 'notes.txt'), 'w') as f:
    f.write('no images here')
  os.makedirs(os.path.join(data, 'junk', 'c0'))
  for i in range(3):
    with open(os.path.join(data, 'junk', 'c0', '%d.png' % i), 'wb') as f:
      f.write(b'not an image')
  datasets.open_dataset(os.path.join(data, 'junk'), resolution=32)  # its index cache, as a run
  truncate(w['h5'], os.path.join(data, 'cut.hdf5'))
  with h5py.File(os.path.join(data, 'grouped.hdf5'), 'w') as f:
    f.create_group('imgs')['0'] = np.zeros((3, 32, 32), np.uint8)
    f['labels'] = np.zeros(1, np.int64)
  with h5py.File(os.path.join(data, 'foreign.hdf5'), 'w') as f:
    f['weights'] = np.zeros(3)
  w['out'] = os.path.join(str(root), 'out', 'previous.hdf5')
  os.makedirs(os.path.dirname(w['out']))
  shutil.copy(w['h5'], w['out'])
  # A moments file without sigma, Inception weights that are truncated or of another network.
  w['bad_moments'] = str(root / 'bad_moments')
  os.makedirs(w['bad_moments'])
  np.savez(os.path.join(w['bad_moments'], inception_utils.moments_filename('Shapes32')),
           mu=np.zeros(2048))
  torch.save({'fc.weight': torch.zeros(3, 3)}, str(root / 'other_net.pth'))
  truncate(str(root / 'other_net.pth'), str(root / 'cut_net.pth'))
  # A TF-Hub dump and its conversion (the dataset .hdf5 above is a dump of the wrong kind).
  w['dump'] = str(root / 'dump.h5')
  write_dump(w['dump'], 'biggan', ch=4)
  w['tfhub'] = str(root / 'tfhub')
  converter.main(['--hdf5', w['dump'], '--weights_root', w['tfhub']])
  return w


def snapshot(root):
  """{relative path: (sha1, mtime_ns)} of every file below root."""
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        digest = hashlib.sha1(f.read()).hexdigest()
      out[os.path.relpath(path, root)] = (digest, os.stat(path).st_mtime_ns)
  return out


def check_untouched(before, after):
  changed = sorted(p for p in before if before[p] != after.get(p))
  new = sorted(set(after) - set(before))
  assert not changed, 'changed or removed: %s' % changed
  assert not new, 'new files: %s' % new


# (id, script, argv (formatted with world), the message: fragments in order, joined by ' ... ',
#  world keys of files the case must leave intact, patch)
CASES = [
    # --- train.py ---------------------------------------------------------------------------
    ('train-use_ema-without-ema', 'train', '{roots} --use_ema',
     '--use_ema samples with G_ema, which only exists with --ema: add --ema or drop --use_ema', [],
     None),
    ('train-hier-without-G_shared', 'train', '{roots} --hier',
     '--hier concatenates z chunks to the shared embedding: add --G_shared', [], None),
    ('train-which_best-FID-no_fid', 'train', '{roots} --which_best FID --no_fid',
     '--which_best FID needs FID: drop --no_fid or use --which_best IS', [], None),
    ('train-negative-iterations', 'train', '{roots} --num_iters -3',
     '--num_iters must not be negative (got -3)', [], None),
    ('train-negative-minutes', 'train', '{roots} --max_minutes -5',
     '--max_minutes must not be negative (got -5.0)', [], None),
    ('train-resolution-without-architecture', 'train', '{roots} --resolution 48',
     'BigGAN has no G architecture for resolution 48; available: 16, 32, 64', [], None),
    ('train-unknown-model', 'train', '{roots} --model BigGAN3',
     'unknown --model BigGAN3: there is no BigGAN3.py; use BigGAN or BigGANdeep', [], None),
    ('train-unknown-dataset', 'train', '{roots} --dataset ImageNet21k',
     "unknown --dataset 'ImageNet21k': use one of C10, C100, ... or the path of an image folder",
     [], None),
    ('train-unknown-network', 'train', '{roots} --inception_net inception4',
     "argument --inception_net: invalid choice: 'inception4' (choose from 'torchvision', 'tf')",
     [], None),
    ('train-folder-without-images', 'train', '{roots} --dataset {data}/empty',
     '{data}/empty has no class subfolders with images; point --dataset at a folder with one '
     'subfolder per class', ['data'], None),
    ('train-foreign-hdf5', 'train', '{roots} --dataset {data}/foreign.hdf5',
     '{data}/foreign.hdf5 has no "imgs" and "labels" datasets, so it is not a dataset file; '
     'remake it with make_hdf5.py', ['data'], None),
    ('train-resume-without-checkpoint', 'train', '{roots} --resume --experiment_name never_trained',
     '--resume: no complete checkpoint in {run}/weights/never_trained; train without --resume '
     'first', ['run'], None),
    ('train-truncated-checkpoint', 'train', '--base_root {cut} --resume',
     'cannot read checkpoint {cut}/weights/{exp}/G ... the file is truncated or not a PyTorch '
     'checkpoint: load another save (--load_weights copy0', ['cut'], None),
    ('train-checkpoint-of-another-config', 'train',
     '{roots} --resume --G_ch 8 --experiment_name {exp}',
     '{run}/weights/{exp}/G.pth does not fit the model built from these flags ... size mismatch '
     'for ... use the flags of the run that wrote it', ['run'], None),
    ('train-malicious-pickle', 'train', '--base_root {evil} --resume',
     'refusing to load {evil}/weights/{exp}/state_dict ... could run code ... use a checkpoint '
     'from a source you trust', ['evil'], None),
    ('train-moments-missing-for-FID', 'train', '{roots} --num_iters 2 --test_every 1',
     'no Inception moments for --dataset Shapes ... make them with: python '
     'calculate_inception_moments.py --dataset Shapes --data_root {run}/data', ['run'], None),
    ('train-inception-weights-offline', 'train', '{roots} --num_iters 2 --test_every 1 --no_fid',
     'cannot get the torchvision Inception weights ... without internet, download that file '
     'elsewhere and pass --inception_weights PATH', ['run'], 'offline'),
    ('train-unwritable-samples_root', 'train', '{roots} --samples_root {file}/samples',
     '--samples_root {file}/samples is not a writable folder ({file} is a file); choose another '
     '--samples_root', ['run'], None),
    ('train-finetune-from-nothing', 'train',
     '{roots} --finetune_from never_trained --experiment_name tuned',
     '--finetune_from: no complete checkpoint in {run}/weights/never_trained; point '
     '--finetune_from / --weights_root at an existing run', ['run'], None),
    ('train-no-cuda', 'train', '{roots} --device cuda:3',
     '--device cuda:3: no CUDA device is available here; use --device cpu', [], None),
    # The new-user audit (issue 16): each of these reached a traceback or did something else.
    ('train-negative-lr', 'train', '{roots} --G_lr=-0.0001',
     '--G_lr must be a number >= 0 (got -0.0001)', [], None),
    ('train-negative-lr-without-equals', 'train', '{roots} --D_lr -1e-4',
     '--D_lr must be a number >= 0 (got -0.0001)', [], None),
    ('train-beta-above-1', 'train', '{roots} --D_B1 1.5',
     '--D_B1 is an Adam beta and must be in [0, 1) (got 1.5)', [], None),
    ('train-negative-adam_eps', 'train', '{roots} --adam_eps -1',
     '--adam_eps must be a number >= 0 (got -1.0)', [], None),
    ('train-group-count-not-dividing', 'train', '{roots} --norm_style gn_grp_3',
     "--norm_style gn_grp_3: G's normalised layers of 16 channels cannot be split into 3 groups; "
     'use gn_grp_N or gn_ch_N with an N that divides 16', [], None),
    ('train-group-count-not-a-number', 'train', '{roots} --norm_style gn_grp_abc',
     '--norm_style gn_grp_abc is not a group norm style; use gn, gn_grp_GROUPS or gn_ch_CHANNELS',
     [], None),
    ('train-hier-z-too-short', 'train', '{roots} --G_shared --hier --dim_z 3',
     '--hier splits z into 4 chunks (the linear layer and 3 blocks) at 32 px, so --dim_z must be '
     'at least 4 (got 3)', [], None),
    ('train-attention-without-its-resolution', 'train', '{roots} --G_attn 128 --D_attn 128',
     '--G_attn 128: G at 32 px has no block at 128 px, so that attention would not exist though '
     'the experiment name says it; use some of 8, 16, 32 joined by _, or 0', [], None),
    ('train-one-inception-image', 'train', '{roots} --num_inception_images 1',
     '--num_inception_images must be at least 2 for IS/FID (got 1); this run evaluates every '
     '--test_every 5000 iterations', [], None),
    ('train-no-inception-images', 'train',
     '{roots} --num_inception_images 0 --num_iters 20 --test_every 10',
     '--num_inception_images must be at least 2 for IS/FID (got 0)', [], None),
    ('train-zero-epochs', 'train', '{roots} --num_epochs 0',
     '--num_epochs 0 trains nothing', [], None),
    ('train-load_weights-without-resume', 'train', '{roots} --load_weights copy0',
     '--load_weights copy0 loads a checkpoint only with --resume (or --finetune_from); add '
     '--resume', ['run'], None),
    ('train-model-named-as-a-file', 'train', '{roots} --model BigGAN.py',
     '--model BigGAN.py: give the module name without .py, e.g. --model BigGAN', [], None),
    ('train-batch-larger-than-the-data', 'train',
     '{roots} --dataset {data}/pics --resolution 32 --experiment_name pics',
     "4 images per process are fewer than one batch of 8 (train.py's batch is one iteration's "
     'images: --batch_size x --num_D_steps x --num_D_accumulations)', ['data'], None),
    ('train-hdf5-images-in-a-group', 'train', '{roots} --dataset {data}/grouped.hdf5',
     '{data}/grouped.hdf5: "imgs" is an HDF5 group, not a dataset; remake it with make_hdf5.py',
     ['data'], None),
    # --- sample.py --------------------------------------------------------------------------
    ('sample-config_from_name-without-name', 'sample', '{roots} --config_from_name',
     '--config_from_name reads the config of an existing run: name it with --experiment_name',
     [], None),
    ('sample-missing-experiment', 'sample',
     '{roots} --config_from_name --experiment_name never_trained',
     'checkpoint file {run}/weights/never_trained/state_dict.pth does not exist; check '
     '--weights_root, --experiment_name and --load_weights', [], None),
    ('sample-bad-truncation-sweep', 'sample', '{roots} --sample_trunc_curves 0.1_1',
     '--sample_trunc_curves 0.1_1 must be start_step_end, e.g. 0.05_0.05_1.0', [], None),
    ('sample-no-images', 'sample', '{roots} --sample_npz --sample_num_npz 0',
     '--sample_num_npz must be at least 1 (got 0)', ['npz'], None),
    ('sample-negative-truncation', 'sample', '{roots} --sample_npz --truncation -0.5',
     'truncation -0.5 is negative; truncations are thresholds >= 0', ['npz'], None),
    ('sample-use_ema-without-ema', 'sample', '{roots} --use_ema --sample_sheets',
     '--use_ema samples with G_ema, which only exists with --ema: add --ema or drop --use_ema', [],
     None),
    ('sample-checkpoint-of-another-config', 'sample',
     '{roots} --G_ch 8 --experiment_name {exp} --sample_npz',
     '{run}/weights/{exp}/G.pth does not fit the model built from these flags ... use the flags '
     'of the run that wrote it', ['npz'], None),
    ('sample-truncated-checkpoint', 'sample', '--base_root {cut} --sample_sheets',
     'cannot read checkpoint {cut}/weights/{exp}/G.pth ... load another save', ['cut'], None),
    ('sample-malicious-pickle', 'sample',
     '--base_root {evil} --config_from_name --experiment_name {exp}',
     'refusing to load {evil}/weights/{exp}/state_dict.pth ... use a checkpoint from a source you '
     'trust', ['evil'], None),
    ('sample-moments-missing-for-FID', 'sample', '{roots} --sample_npz --sample_inception_metrics',
     'no Inception moments for --dataset Shapes ... make them with: python '
     'calculate_inception_moments.py --dataset Shapes --data_root {run}/data', ['npz'], None),
    ('sample-bad-moments-file', 'sample',
     '{roots} --data_root {bad_moments} --sample_inception_metrics',
     'cannot read Inception moments {bad_moments}/Shapes32_inception_moments.npz ... delete it and '
     'remake it with: python calculate_inception_moments.py', ['bad_moments'], None),
    ('sample-unwritable-samples_root', 'sample',
     '{roots} --samples_root {file}/samples --sample_npz --sample_num_npz 4',
     '--samples_root {file}/samples is not a writable folder ({file} is a file); choose another '
     '--samples_root', [], None),
    ('sample-no-cuda', 'sample', '{roots} --sample_sheets --device cuda',
     '--device cuda: no CUDA device is available here; use --device cpu', [], None),
    ('sample-truncation-sweep-nan', 'sample', '{roots} --sample_trunc_curves nan_0.1_1',
     '--sample_trunc_curves nan_0.1_1: start, step and end must be finite numbers', [], None),
    ('sample-truncation-sweep-to-inf', 'sample', '{roots} --sample_trunc_curves 0_0.1_inf',
     '--sample_trunc_curves 0_0.1_inf: start, step and end must be finite numbers', [], None),
    ('sample-truncation-sweep-too-long', 'sample', '{roots} --sample_trunc_curves 0_0.1_1e12',
     '--sample_trunc_curves 0_0.1_1e12 gives 10000000000001 truncations, each a full IS/FID '
     'evaluation; at most 1000: use a larger step', [], None),
    ('sample-truncation-nan', 'sample', '{roots} --sample_npz --truncation nan',
     'truncation nan is not a finite number; truncations are thresholds >= 0', ['npz'], None),
    # --- make_hdf5.py -----------------------------------------------------------------------
    ('hdf5-from-hdf5', 'make_hdf5', '--dataset I128_hdf5 --data_root {data}',
     '--dataset I128_hdf5 is already HDF5; give the image dataset it is made from, I128', [],
     None),
    ('hdf5-folder-without-resolution', 'make_hdf5', '--dataset {data}/pics',
     '--dataset {data}/pics is an image folder: give the image size with --resolution', [], None),
    ('hdf5-class-folder-without-images', 'make_hdf5', '--dataset {data}/hollow --resolution 32',
     'class folder {data}/hollow/c0 has no images ... add images or remove the folder', [], None),
    ('hdf5-no-readable-image-onto-existing-out', 'make_hdf5',
     '--dataset {data}/junk --resolution 32 --out {out} --num_workers 0 --overwrite',
     'no readable image in {data}/junk (see the warnings above); nothing written: fix or replace '
     'the images', ['out'], None),
    ('hdf5-corrupt-source', 'make_hdf5', '--dataset {data}/cut.hdf5',
     '{data}/cut.hdf5 is not a readable HDF5 file ... remake it with make_hdf5.py', [], None),
    ('hdf5-zero-chunk', 'make_hdf5',
     '--dataset {data}/pics --resolution 32 --out {out} --chunk_size 0 --overwrite',
     '--chunk_size 0 --batch_size 256 --num_workers 16: sizes must be at least 1 and workers at '
     'least 0', ['out'], None),
    ('hdf5-negative-workers', 'make_hdf5',
     '--dataset {data}/pics --resolution 32 --out {out} --num_workers -2 --overwrite',
     '--num_workers -2: sizes must be at least 1 and workers at least 0', ['out'], None),
    ('hdf5-out-under-a-file', 'make_hdf5',
     '--dataset {data}/pics --resolution 32 --out {file}/x.hdf5 --num_workers 0',
     'the folder of --out {file}/x.hdf5 is not a writable folder ({file} is a file); choose '
     'another --out', [], None),
    ('hdf5-out-is-a-folder', 'make_hdf5',
     '--dataset {data}/pics --resolution 32 --out {data}/pics --num_workers 0',
     '--out {data}/pics is a folder; give a file name, e.g. {data}/pics/pics32.hdf5', ['data'],
     None),
    ('hdf5-onto-an-existing-dataset', 'make_hdf5',
     '--dataset {data}/pics --resolution 32 --out {out}',
     '--out {out} already exists (an HDF5 dataset of 4 images); choose another --out, or pass '
     '--overwrite to replace it', ['out'], None),
    ('hdf5-onto-another-file', 'make_hdf5', '--dataset {data}/pics --resolution 32 --out {file}',
     '--out {file} already exists (not an HDF5 dataset); choose another --out, or pass '
     '--overwrite', [], None),
    ('hdf5-unknown-dataset', 'make_hdf5', '--dataset flowers --data_root {data}',
     "unknown --dataset 'flowers': use one of ... or the path of an image folder", [], None),
    # --- calculate_inception_moments.py -----------------------------------------------------
    ('moments-weights-missing', 'moments',
     '{flags} --data_root {data} --inception_weights {root}/nowhere.pth',
     'Inception weights file {root}/nowhere.pth does not exist; pass an existing file to '
     '--inception_weights', [], None),
    ('moments-weights-a-folder', 'moments', '{flags} --data_root {data} --inception_weights {root}',
     'Inception weights file {root} is a folder; pass an existing file to --inception_weights',
     [], None),
    ('moments-weights-truncated', 'moments',
     '{flags} --data_root {data} --inception_weights {root}/cut_net.pth',
     'cannot read Inception weights file {root}/cut_net.pth ... pass a state_dict saved with '
     'torch.save to --inception_weights', [], None),
    ('moments-weights-of-another-network', 'moments',
     '{flags} --data_root {data} --inception_weights {root}/other_net.pth',
     '{root}/other_net.pth does not hold weights of the torchvision Inception network ... pass '
     'weights for --inception_net torchvision', [], None),
    ('moments-weights-offline', 'moments', '{flags} --data_root {data}',
     'cannot get the torchvision Inception weights ... without internet, download that file '
     'elsewhere and pass --inception_weights PATH', [], 'offline'),
    ('moments-folder-without-images', 'moments',
     '{flags} --dataset {data}/empty --inception_weights {root}/other_net.pth',
     '{data}/empty has no class subfolders with images; point --dataset at a folder', [], None),
    ('moments-corrupt-hdf5', 'moments',
     '{flags} --dataset {data}/cut.hdf5 --inception_weights {root}/other_net.pth',
     '{data}/cut.hdf5 is not a readable HDF5 file ... remake it with make_hdf5.py', [], None),
    ('moments-unwritable-data_root', 'moments',
     '{flags} --data_root {file}/data --inception_weights {root}/other_net.pth',
     '--data_root {file}/data is not a writable folder ({file} is a file); choose another '
     '--data_root', [], None),
    ('moments-zero-batch', 'moments',
     '{flags} --data_root {data} --batch_size 0 --inception_weights {root}/other_net.pth',
     '--batch_size must be at least 1 (got 0)', [], None),
    ('moments-unknown-network', 'moments', '{flags} --inception_net inception4',
     "argument --inception_net: invalid choice: 'inception4' (choose from 'torchvision', 'tf')",
     [], None),
    # --- TFHub/converter.py -----------------------------------------------------------------
    ('converter-dump-missing', 'converter', '--hdf5 {root}/nothing.h5 --weights_root {tfhub}',
     '{root}/nothing.h5 does not exist; give -r (and --deep) to dump that module into it, or the '
     'path of an existing dump', [], None),
    ('converter-not-hdf5', 'converter', '--hdf5 {file} --weights_root {tfhub}',
     '{file} is not an HDF5 file ... give a dump written by stage 1', ['tfhub'], None),
    ('converter-dump-of-the-wrong-kind', 'converter', '--hdf5 {h5} --weights_root {tfhub}',
     "{h5} holds none of TF-Hub BigGAN's variables ... it is not a stage-1 dump; give the .h5 "
     'that stage 1 wrote', ['tfhub'], None),
    ('converter-onto-a-training-run', 'converter',
     '--hdf5 {dump} --weights_root {run}/weights --experiment_name {exp}',
     '{run}/weights/{exp} already holds a checkpoint that is not a TF-Hub conversion; choose '
     'another --experiment_name or --weights_root', ['run'], None),
    ('converter-truncation-out-of-range', 'converter',
     '--hdf5 {dump} --weights_root {tfhub} --truncation 1.5',
     '--truncation 1.5 is outside [0, 1], where TF-Hub stored BN statistics; choose one in [0, 1]',
     ['tfhub'], None),
    ('converter-zero-batch', 'converter',
     '--hdf5 {dump} --weights_root {tfhub} --generate_samples --batch_size 0',
     '--batch_size must be at least 1 (got 0)', ['tfhub'], None),
    ('converter-module-without-resolution', 'converter', '--module_path {root}/module',
     '--module_path names one module: give its resolution with -r', [], None),
    ('converter-unknown-resolution', 'converter', '-r 1024 --weights_dir {root}',
     'argument --resolution/-r: invalid choice: 1024 (choose from 128, 256, 512)', [], None),
    ('converter-without-tensorflow', 'converter', '-r 128 --weights_dir {root}/dumps',
     'dumping a TF-Hub module (stage 1) needs tensorflow ... pip install tensorflow '
     'tensorflow_hub ... convert it with --hdf5', [],
     'no_tensorflow'),
    ('converter-unwritable-weights_root', 'converter', '--hdf5 {dump} --weights_root {file}/w',
     '--weights_root {file}/w is not a writable folder ({file} is a file); choose another '
     '--weights_root', [], None),
    ('converter-unwritable-samples_dir', 'converter',
     '--hdf5 {dump} --weights_root {tfhub} --generate_samples --samples_dir {file}/s',
     '--samples_dir {file}/s is not a writable folder ({file} is a file); choose another '
     '--samples_dir', ['tfhub'], None),
]


def error_line(err):
  """The one `error: ` line of stderr as a terminal shows it (a progress bar rewritten with \\r
  is not a line), after nothing but warnings and progress bars."""
  assert 'Traceback' not in err, err
  lines = [line.split('\r')[-1].strip() for line in err.split('\n')]
  lines = [line for line in lines if line]
  assert lines and lines[-1].startswith('error: '), err
  for line in lines[:-1]:
    assert line.startswith('warning: ') or re.search(r'\d+%\|', line), err
  return lines[-1]


def says(line, message):
  """line holds the fragments of message (joined by ' ... ') in order."""
  at = 0
  for fragment in message.split(' ... '):
    found = line.find(fragment, at)
    assert found >= 0, 'expected %r in %r' % (fragment, line[at:])
    at = found + len(fragment)


def case_argv(world, script, args):
  """The command line of a case: train.py and sample.py (without --config_from_name) get the
  tiny model's flags first."""
  argv = shlex.split(args.format(flags=FLAGS, **world))
  if script == 'train' or (script == 'sample' and '--config_from_name' not in argv):
    argv = shlex.split(FLAGS) + argv
  return argv


def apply_patch(patch, monkeypatch, tmp_path):
  if patch == 'offline':  # no internet, empty hub cache
    monkeypatch.setattr(inception_utils, 'WEIGHTS_URLS', {
        k: 'http://127.0.0.1:9/' + os.path.basename(v)
        for k, v in inception_utils.WEIGHTS_URLS.items()})
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
  elif patch == 'no_tensorflow':
    monkeypatch.setitem(sys.modules, 'tensorflow', None)  # import fails, installed or not


@pytest.mark.parametrize('name,script,args,message,about,patch', CASES,
                         ids=[case[0] for case in CASES])
def test_bad_input_fails_with_one_line_and_damages_nothing(world, capsys, monkeypatch, tmp_path,
                                                           name, script, args, message, about,
                                                           patch):
  argv = case_argv(world, script, args)
  apply_patch(patch, monkeypatch, tmp_path)
  before = snapshot(world['root'])
  for key in about:  # the files the case is about exist, so that "intact" means something
    assert any(p.startswith(os.path.relpath(world[key], world['root'])) for p in before), key
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    errors.run_main(SCRIPTS[script].main, argv)
  assert e.value.code == 2
  says(error_line(capsys.readouterr().err), message.format(**world))
  check_untouched(before, snapshot(world['root']))
  assert not os.path.exists(world['marker'])


# One case per script again as a real process: exit status and stderr end to end.
PROCESSES = ['train-truncated-checkpoint', 'sample-malicious-pickle',
             'hdf5-no-readable-image-onto-existing-out', 'moments-weights-missing',
             'converter-onto-a-training-run']


def test_scripts_exit_2_with_one_line_in_real_processes(world, repo_root):
  cases = [case for case in CASES if case[0] in PROCESSES]
  assert sorted(case[1] for case in cases) == sorted(SCRIPTS) and not any(c[5] for c in cases)
  before = snapshot(world['root'])
  running = [(name, message, subprocess.Popen(  # in parallel: mostly import time
      [sys.executable, os.path.join(repo_root, FILES[script])] + case_argv(world, script, args),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=world['root']))
      for name, script, args, message, _, _ in cases]
  for name, message, process in running:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2, (name, err)
    says(error_line(err), message.format(**world))
  check_untouched(before, snapshot(world['root']))
  assert not os.path.exists(world['marker'])


def test_flags_that_do_nothing_say_so(world, capsys):
  before = snapshot(world['root'])
  capsys.readouterr()
  sample.main(case_argv(world, 'sample', '{roots}'))  # no --sample_* mode
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith(
      'warning: no sampling mode was given, so sample.py only loads G; add one or more of '
      '--sample_npz, --sample_sheets, --sample_interps, --sample_random, ')
  config = vars(configuration.prepare_parser().parse_args(case_argv(
      world, 'train', '{roots} --resume --finetune_from elsewhere')))
  configuration.prepare_config(config, training=True)
  assert ('Notice: --finetune_from elsewhere is not used with --resume: this run continues from '
          'its own checkpoint') in capsys.readouterr().out
  # Attention where G has no block: refused for a new run (a case above), said on --resume.
  config = vars(configuration.prepare_parser().parse_args(case_argv(world, 'train',
                                                            '--G_attn 64 --resume')))
  configuration.prepare_config(config, training=True)
  assert capsys.readouterr().err.startswith('warning: --G_attn 64: G at 32 px has no block at 64 '
                                            'px, so that attention would not exist')
  check_untouched(before, snapshot(world['root']))
