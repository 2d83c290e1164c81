"""TFHub/converter.py stage 1 on real TensorFlow: skipped unless the environment variable
TF_PYTHON names a python that has tensorflow (and h5py, which tensorflow installs), e.g.

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow tensorflow_hub
    TF_PYTHON=/tmp/tfvenv/bin/python python -m pytest tests/test_tfhub_tensorflow.py

That python needs no torch. It writes TF1-format hub modules (saved_model.pb + variables/, the
layout of TF-Hub's BigGAN modules) holding the documented variable names with small shapes and,
for biggan-deep, the BN statistics as graph constants stack_{i} among other stacks; runs stage 1
(converter.py --dump_only) with it, and stage 2 here. TensorFlow itself computes the reference of
two layers (with TF's NHWC layout and its (in, out) / HWIO weights)."""
import os
import subprocess

import h5py
import numpy as np
import pytest
import torch

from TFHub import converter
from test_tfhub import STATS, deep_bn_scopes, dumped_arrays, write_dump

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TF_PYTHON = os.environ.get('TF_PYTHON', '')
pytestmark = pytest.mark.skipif(not TF_PYTHON, reason='set TF_PYTHON to a python with tensorflow')

# Runs under TF_PYTHON: argv = (dump.h5 module_folder reference.npz kind) for each module.
BUILD_MODULE = r'''
import sys
import h5py
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_eager_execution()


def build(dump, folder, reference, kind):
  with h5py.File(dump, 'r') as h5:
    arrays = {}
    h5.visititems(lambda n, o: arrays.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset)
                  else None)
  variables = {n[len('module/'):-len(':0')]: v for n, v in arrays.items()
               if n.startswith('module/')}
  stacks = {int(n.split('_')[-1][:-len(':0')]): v for n, v in arrays.items()
            if n.startswith('module_apply_default/')}
  deep = kind == 'biggan-deep'
  with tf.Graph().as_default():
    z = tf.placeholder(tf.float32, [None, 6], 'z')
    made = {name: tf.Variable(value, name=name) for name, value in sorted(variables.items())}
    if not deep:  # what the probe must skip (needs z; no table), and a (51, C) table it keeps
      stacks = {1: tf.reduce_sum(z), 3: np.zeros(2, np.float32), 6: np.ones((51, 8), np.float32)}
    # Stack ops are named stack, stack_1, ... in order: fill the indices between the tables.
    for index in range(max(stacks) + 1):
      value = stacks.get(index, np.float32(index))
      if not isinstance(value, tf.Tensor):  # (numpy values would take names of their own)
        value = tf.constant(value) if np.ndim(value) < 2 else [tf.constant(r) for r in value]
      parts = value if isinstance(value, list) else [value, value]
      name = tf.stack(parts, name='stack').name
      assert name == ('stack_%d:0' % index if index else 'stack:0'), (name, index)
    ema = lambda name: made[name + ('/ema_0.9999' if deep else '/ema_b999900')]

    def sn_weight(scope):  # TF-Hub's spectral norm: one power iteration from u0
      w = ema(scope + '/w')
      w2 = tf.reshape(w, [-1, w.shape[-1]])
      v = tf.nn.l2_normalize(tf.matmul(made[scope + '/u0'], w2, transpose_b=True))
      u = tf.nn.l2_normalize(tf.matmul(v, w2))
      return w / tf.squeeze(tf.matmul(tf.matmul(v, w2), u, transpose_b=True))
    rng = np.random.RandomState(0)
    lin = 'Generator/GenZ/G_linear' if deep else 'Generator/G_Z/G_linear'
    x_lin = rng.normal(0, 1, (2, variables[lin + '/w'].shape[0])).astype(np.float32)
    h = tf.reshape(tf.matmul(x_lin, sn_weight(lin)) + ema(lin + '/b'), [2, 4, 4, -1])
    conv = 'Generator/GBlock/conv1'
    x_conv = rng.normal(0, 1, (2, 8, 8, variables[conv + '/w'].shape[2])).astype(np.float32)
    y = tf.nn.conv2d(x_conv, sn_weight(conv), [1, 1, 1, 1], 'SAME') + ema(conv + '/b')
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      h, y = sess.run([h, y])
      builder = tf.saved_model.Builder(folder)
      builder.add_meta_graph_and_variables(sess, tags=[])
      builder.save()
  with open(folder + '/tfhub_module.pb', 'wb') as f:
    f.write(b'\x08\x03')  # ModuleDef {format: 3}, as TF-Hub's TF1 modules have
  np.savez(reference, x_lin=x_lin, h=h.transpose(0, 3, 1, 2), x_conv=x_conv,
           y=y.transpose(0, 3, 1, 2))


for i in range(1, len(sys.argv), 4):
  build(*sys.argv[i:i + 4])
print(tf.__version__)
'''


def run_tf(args, cwd):
  result = subprocess.run([TF_PYTHON] + args, cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
                                                CUDA_VISIBLE_DEVICES=''))
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_stage_one_on_real_tensorflow_then_stage_two(tmp_path):
  script = tmp_path / 'build_module.py'
  script.write_text(BUILD_MODULE)
  modules, args = {}, [str(script)]
  for kind in ('biggan-deep', 'biggan'):
    modules[kind] = (str(tmp_path / ('%s-reference.h5' % kind)), str(tmp_path / kind))
    write_dump(modules[kind][0], kind, ch=4)
    args += list(modules[kind]) + [str(tmp_path / ('%s.npz' % kind)), kind]
  version = run_tf(args, str(tmp_path)).strip().splitlines()[-1]
  for _, folder in modules.values():
    assert os.path.exists(os.path.join(folder, 'variables', 'variables.index'))
  # Stage 1: the converter's own command line under TF_PYTHON (which has no torch, or ignores it).
  printed = run_tf([os.path.join(ROOT, 'TFHub', 'converter.py'), '-r', '128', '--deep',
                    '--module_path', modules['biggan-deep'][1], '--dump_only', '--weights_dir',
                    str(tmp_path / 'dumps')], ROOT)
  assert '82 BN statistics stacks' in printed
  printed = run_tf([os.path.join(ROOT, 'TFHub', 'converter.py'), '-r', '128', '--module_path',
                    modules['biggan'][1], '--dump_only', '--weights_dir',
                    str(tmp_path / 'dumps')], ROOT)
  assert '1 BN statistics stacks' in printed  # stack_1 needs z, stack_3 is no table
  print('TensorFlow %s' % version)

  # The deep dump holds exactly what the reference dump held: the names hub.Module gave.
  deep = str(tmp_path / 'dumps' / 'biggan-deep-128.h5')
  dumped, reference = dumped_arrays(deep), dumped_arrays(modules['biggan-deep'][0])
  assert set(dumped) == set(reference)
  for name, value in reference.items():
    np.testing.assert_array_equal(dumped[name], value, err_msg=name)
  assert len(deep_bn_scopes(10)) * 2 == sum(n.startswith('module_apply_default/') for n in dumped)

  for kind, G_kind in [('biggan-deep', 'BigGANdeep'), ('biggan', 'BigGAN')]:
    G, config = converter.convert(str(tmp_path / 'dumps' / ('%s-128.h5' % kind)))
    assert config['model'] == G_kind
    ref = np.load(str(tmp_path / ('%s.npz' % kind)))
    with torch.no_grad():
      x = torch.from_numpy(ref['x_lin'])
      if kind == 'biggan-deep':  # TF's [z, y] is this project's [y, z]
        x = torch.cat([x[:, G.dim_z:], x[:, :G.dim_z]], 1)
      h = G.linear(x).view(2, -1, 4, 4)
      y = G.blocks[0][0].conv2(torch.from_numpy(ref['x_conv']).permute(0, 3, 1, 2))
    np.testing.assert_allclose(h.numpy(), ref['h'], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y.numpy(), ref['y'], rtol=1e-4, atol=1e-5)
  # The one (51, C) table in the biggan module was dumped; stage 2 warned and ignored it.
  with h5py.File(str(tmp_path / 'dumps' / 'biggan-128.h5'), 'r') as h5:
    assert h5['module_apply_default/stack_6:0'].shape == (STATS, 8)
