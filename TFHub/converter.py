"""Convert DeepMind's TF-Hub BigGAN generators into weights folders of this project.

    python TFHub/converter.py -r 256                  # biggan-256      -> weights/biggan-256
    python TFHub/converter.py -r 512 --deep           # biggan-deep-512 -> weights/biggan-deep-512
    python TFHub/converter.py                         # biggan-128, -256 and -512
    python TFHub/converter.py --hdf5 dump.h5          # stage 2 only, from an existing dump
    python sample.py --experiment_name biggan-256 --config_from_name ...

Two stages, as in the original TFHub/converter.py:
  1. (once; needs tensorflow, plus tensorflow_hub and internet to download the module) the
     module's variables, and the BN statistics per truncation that biggan-deep keeps as constants
     in its graph, are read from the module folder (variables/ and saved_model.pb; no hub.Module,
     which tensorflow_hub 0.16 removed) and dumped to --weights_dir/biggan[-deep]-{res}.h5.
     Skipped when that file exists (unless --redownload). Needs no torch: --dump_only runs it
     where TensorFlow is.
  2. (offline; h5py and torch) the dump is mapped onto BigGAN.Generator (biggan-*) or
     BigGANdeep.Generator --G_tfhub (biggan-deep-*), with sizes read from the dump, and written as
     --weights_root/<experiment>/{G.pth, state_dict.pth}: the EMA weights (unless --no_ema) as G,
     and a config that rebuilds that G. The BN statistics in G.pth are those of --truncation;
     BigGANdeep's G.set_truncation(t) selects others. TFHub/README.md lists the TF names used.
"""
import os
import re
import sys

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import errors  # noqa: E402
from errors import UserError  # noqa: E402

# Stage 1 runs where TensorFlow is, which need not have torch: stage 2's imports may fail there.
try:
  import torch  # noqa: E402
  import checkpoints  # noqa: E402
  import config as configuration  # noqa: E402
  import distributed  # noqa: E402
  import layers  # noqa: E402
  import models  # noqa: E402
  STAGE2_MISSING = None
except ImportError as e:
  STAGE2_MISSING = e

RESOLUTIONS = (128, 256, 512)
MODULE_URLS = {'biggan': 'https://tfhub.dev/deepmind/biggan-{}/2',
               'biggan-deep': 'https://tfhub.dev/deepmind/biggan-deep-{}/1'}
# Number of GBlocks -> resolution, and where TF-Hub put its one attention layer.
BLOCKS = {'biggan': {5: 128, 6: 256, 7: 512}, 'biggan-deep': {10: 128, 12: 256, 14: 512}}
ATTENTION = {'biggan': {128: '64', 256: '128', 512: '64'},
             'biggan-deep': {128: '64', 256: '64', 512: '64'}}
# Trainable variables (last name component) have an EMA copy '<name>/<EMA suffix>'.
EMA_NAMES = ('w', 'b', 'gamma', 'beta', 'scale', 'offset')
# biggan-deep: graph tensors holding each BN's means and variances per truncation, in BN order
# (4 per GBlock, then the output BN), a mean/variance pair at i*10+1, +3 and another at +6, +8.
# In the module's graph they are stack_{i}; applied as hub.Module, module_apply_default/stack_{i}
# (the name the dumps keep).
STACK = 'module_apply_default/stack_%d'
STACK_INDICES = [i * 10 + k for i in range(60) for k in (1, 3, 6, 8)]
STACK_ROWS = 51  # truncations 0, 0.02, ..., 1 (BigGANdeep.TFHUB_TRUNCATIONS)


def module_name(kind, resolution):
  return '%s-%d' % (kind, resolution)


def need_stage2():
  if STAGE2_MISSING is not None:
    raise UserError('converting a dump (stage 2) needs torch and this project\'s requirements '
                    '(%s); run it in the project\'s environment, or dump only with --dump_only'
                    % STAGE2_MISSING)


# ---------------------------------------------------------------------------------------------
# Stage 1: TF-Hub module -> .h5 dump
# ---------------------------------------------------------------------------------------------


def import_tensorflow():
  try:
    import tensorflow as tf
  except ImportError:
    raise UserError('dumping a TF-Hub module (stage 1) needs tensorflow (and tensorflow_hub to '
                    'download it): pip install tensorflow tensorflow_hub; or run it where they '
                    'are, then copy the .h5 dump here and convert it with --hdf5')
  return tf


def module_folder(module_path):
  """The local folder of a TF-Hub handle: a folder as it is, else downloaded (and cached) by
  tensorflow_hub."""
  if os.path.isdir(module_path):
    return module_path
  try:
    import tensorflow_hub as hub
  except ImportError:
    raise UserError('downloading %s needs tensorflow_hub (pip install tensorflow_hub) and '
                    'internet; or give --module_path a downloaded, unpacked module folder'
                    % module_path)
  print('Resolving TF-Hub module %s...' % module_path)
  try:
    return hub.resolve(module_path)
  except Exception as e:  # network, HTTP or archive errors of every kind
    raise UserError('cannot download TF-Hub module %s (%s); check the handle and the network, '
                    'or give --module_path a downloaded module folder'
                    % (module_path, errors.reason(e)))


def read_module(tf, folder):
  """({TF variable name: array}, {stack index: array}) of a TF1-format hub module folder
  (saved_model.pb + variables/), read directly: tensorflow_hub 0.16 removed hub.Module, and
  these need no graph instantiation. Stacks that depend on inputs, or are not (51, C) float
  tables, are not statistics and are left out."""
  graph_file = os.path.join(folder, 'saved_model.pb')
  if not os.path.isfile(graph_file) or not os.path.isdir(os.path.join(folder, 'variables')):
    raise UserError('%s is not a TF1 TF-Hub module (no saved_model.pb and variables/); give '
                    'BigGAN\'s TF-Hub handle or its unpacked folder' % folder)
  reader = tf.train.load_checkpoint(os.path.join(folder, 'variables', 'variables'))
  variables = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
               if not name.startswith('_')}  # not TF2's object-graph bookkeeping
  from tensorflow.core.protobuf import saved_model_pb2
  saved = saved_model_pb2.SavedModel()
  with open(graph_file, 'rb') as f:
    saved.ParseFromString(f.read())
  # The inference graph has no tags ('train' is the other one).
  meta = next((m for m in saved.meta_graphs if not m.meta_info_def.tags), saved.meta_graphs[0])
  nodes = {node.name: node for node in meta.graph_def.node}
  wanted = {}
  for index in STACK_INDICES:  # probed for every module, deep or not
    name = 'stack_%d' % index
    if name not in nodes:
      break
    needed = subgraph(nodes, name)
    if not any(nodes[n].op.startswith(('Placeholder', 'Variable', 'VarHandle')) for n in needed):
      wanted[index] = needed
  stacks = {}
  if wanted:
    from tensorflow.core.framework import graph_pb2
    graph_def = graph_pb2.GraphDef(versions=meta.graph_def.versions,
                                   library=meta.graph_def.library)
    graph_def.node.extend(nodes[n] for n in sorted(set().union(*wanted.values())))
    graph = tf.Graph()
    with graph.as_default():
      tf.compat.v1.import_graph_def(graph_def, name='')
    with tf.compat.v1.Session(graph=graph) as sess:
      values = sess.run(['stack_%d:0' % i for i in wanted])
    for index, value in zip(wanted, values):
      value = np.asarray(value)
      if value.ndim == 2 and value.shape[0] == STACK_ROWS and value.dtype.kind == 'f':
        stacks[index] = value
  return variables, stacks


def subgraph(nodes, name):
  """The names of the nodes that `name` is computed from (itself included)."""
  needed, todo = set(), [name]
  while todo:
    node = todo.pop()
    if node in needed or node not in nodes:
      continue
    needed.add(node)
    todo.extend(i.lstrip('^').split(':')[0] for i in nodes[node].input)
  return needed


def dump_tfhub_to_hdf5(module_path, hdf5_path):
  """Write every variable of the module under its TF name as hub.Module named it
  ('module/...:0', as the original converter's dumps), and the BN statistics stacks
  ('module_apply_default/stack_{i}:0', each (51, C); biggan-deep has them), to hdf5_path."""
  tf = import_tensorflow()
  folder = module_folder(module_path)
  print('Reading TF-Hub module %s...' % folder)
  variables, stacks = read_module(tf, folder)
  if not variables:
    raise UserError('%s has no variables; it is not a BigGAN generator module' % folder)
  os.makedirs(os.path.dirname(os.path.abspath(hdf5_path)), exist_ok=True)
  with h5py.File(hdf5_path + '.new', 'w') as h5:
    h5.attrs['module'] = module_path
    for name, value in sorted(variables.items()):
      if np.asarray(value).dtype.kind in 'biuf':  # (no string bookkeeping; HDF5 stores none)
        h5.create_dataset('module/%s:0' % name, data=value)
    for index, value in sorted(stacks.items()):
      h5.create_dataset(STACK % index + ':0', data=value)
  os.replace(hdf5_path + '.new', hdf5_path)
  print('Wrote %s (%d variables, %d BN statistics stacks)' % (hdf5_path, len(variables),
                                                             len(stacks)))


# ---------------------------------------------------------------------------------------------
# Stage 2: .h5 dump -> this project's G
# ---------------------------------------------------------------------------------------------


class Dump(object):
  """The arrays of a stage-1 dump by TF name without 'module/' and ':0', read when asked for.
  With ema, a trainable variable is read from its EMA copy."""

  def __init__(self, path, ema=True):
    if not os.path.isfile(path):
      raise UserError('%s does not exist; dump a module first (stage 1, without --hdf5) or give '
                      'the path of a dump' % path)
    try:
      self.h5 = h5py.File(path, 'r')
    except OSError as e:
      raise UserError('%s is not an HDF5 file (%s); give a dump written by stage 1' % (path, e))
    self.path, self.ema = path, ema
    self.names = {}

    def add(name, obj):  # (returning a value would stop the walk)
      if isinstance(obj, h5py.Dataset):
        self.names[re.sub(r'^module/|:\d+$', '', name)] = name
    self.h5.visititems(add)
    if not any(n.startswith(('Generator/', 'linear/')) for n in self.names):
      self.h5.close()
      raise UserError('%s holds none of TF-Hub BigGAN\'s variables (Generator/..., linear/w): it '
                      'is not a stage-1 dump; give the .h5 that stage 1 wrote' % path)
    suffixes = {n.rsplit('/', 1)[1] for n in self.names if re.search(r'/ema_[^/]*$', n)}
    if ema and not suffixes:
      raise UserError('%s has no EMA weights; convert with --no_ema' % path)
    self.ema_suffix = sorted(suffixes)[0] if suffixes else None
    self.used = set()

  def name(self, name):
    if self.ema and name.rsplit('/', 1)[-1] in EMA_NAMES:
      return '%s/%s' % (name, self.ema_suffix)
    return name

  def __contains__(self, name):
    return self.name(name) in self.names

  def __getitem__(self, name):
    full = self.name(name)
    if full not in self.names:
      raise UserError('%s has no variable %s: it is not a TF-Hub BigGAN dump, or an incomplete '
                      'one; dump the module again with --redownload' % (self.path, full))
    self.used.add(full)
    return np.asarray(self.h5[self.names[full]][()], dtype=np.float32)

  def blocks(self):
    """Number of GBlocks: scopes Generator/GBlock, Generator/GBlock_1, ..."""
    return len({m.group(0) for m in map(re.compile(r'^Generator/GBlock(_\d+)?/').match,
                                        self.names) if m})

  def stacks(self):
    """The BN statistics stacks of biggan-deep in index order (empty for other dumps)."""
    found = [(int(m.group(1)), n) for n in self.names
             for m in [re.match(r'^module_apply_default/stack_(\d+)$', n)] if m]
    return [name for _, name in sorted(found)]

  def unused(self):
    return sorted(set(self.names) - self.used)

  def close(self):
    self.h5.close()


def read_config(dump, experiment_name=''):
  """The project config of the dumped module: the parser's defaults with the TF-Hub settings,
  sizes from the dump (so tiny test dumps work too). A plain dict, as state_dict.pth stores."""
  deep = 'Generator/GenZ/G_linear/w' in dump
  kind = 'biggan-deep' if deep else 'biggan'
  if not deep and 'Generator/G_Z/G_linear/w' not in dump:
    raise UserError('%s holds neither a biggan nor a biggan-deep generator (no '
                    'Generator/G_Z/G_linear or Generator/GenZ/G_linear)' % dump.path)
  n_blocks = dump.blocks()
  if n_blocks not in BLOCKS[kind]:
    raise UserError('%s has %d GBlocks; TF-Hub %s has %s' % (
        dump.path, n_blocks, kind, ' or '.join(str(n) for n in BLOCKS[kind])))
  resolution = BLOCKS[kind][n_blocks]
  n_classes, shared_dim = dump['linear/w'].shape
  z_in, first = dump['Generator/%s/G_linear/w' % ('GenZ' if deep else 'G_Z')].shape
  config = vars(configuration.prepare_parser().parse_args([]))
  config.update(
      model='BigGANdeep' if deep else 'BigGAN', G_tfhub=deep, G_depth=2 if deep else 1,
      G_ch=first // (16 * 4 * 4), G_shared=True, shared_dim=int(shared_dim), hier=True,
      # biggan: z has one chunk for the linear layer and one per block; deep: [z, y] everywhere.
      dim_z=int(z_in - shared_dim if deep else z_in * (n_blocks + 1)),
      G_attn=ATTENTION[kind][resolution], G_nl='relu', BN_eps=1e-4, SN_eps=1e-4,
      dataset='I%d' % resolution, resolution=resolution, n_classes=int(n_classes),
      G_eval_mode=True, ema=False, use_ema=False,
      experiment_name=(experiment_name
                       or module_name(kind, resolution) + ('' if dump.ema else '_noema')))
  return config


def build_G(config):
  model = models.load_model_module(config['model'])
  activation = configuration.activation_dict[config['G_nl']]
  return model.Generator(**dict(config, G_activation=activation, skip_init=True, no_optim=True))


def block_scope(index):
  return 'Generator/GBlock' + ('_%d' % index if index else '')


def bn_scope(scope, name, index):
  return '%s/%s%s' % (scope, name, '_%d' % index if index else '')


def nhwc_rows(channels, width):
  """Row r = c*width^2 + p of a linear producing an NCHW (C, width, width) map is column
  p*C + c of TF's, which reshapes its output as NHWC."""
  return (np.arange(width * width)[None, :] * channels + np.arange(channels)[:, None]).reshape(-1)


def y_then_z(z_size, y_size):
  """TF-Hub conditions on [z, y]; this project on [y, z]: the column order that converts."""
  return np.concatenate([np.arange(z_size, z_size + y_size), np.arange(z_size)])


def sn_linear(out, key, dump, scope, rows=None, cols=None, bias=True):
  """TF's w is (in, out) and u0 (1, out); PyTorch's weight is (out, in)."""
  w, u = dump[scope + '/w'].T, dump[scope + '/u0'].reshape(1, -1)
  if rows is not None:
    w, u = w[rows], u[:, rows]
  out[key + '.weight'] = w if cols is None else w[:, cols]
  out[key + '.u0'] = u
  if bias:
    b = dump[scope + '/b'].reshape(-1)
    out[key + '.bias'] = b if rows is None else b[rows]


def sn_conv(out, key, dump, scope, bias=True):
  """TF's w is (kh, kw, in, out); PyTorch's (out, in, kh, kw)."""
  out[key + '.weight'] = dump[scope + '/w'].transpose(3, 2, 0, 1)
  out[key + '.u0'] = dump[scope + '/u0'].reshape(1, -1)
  if bias:
    out[key + '.bias'] = dump[scope + '/b'].reshape(-1)


def attention(out, key, dump):
  for pt, tf in [('theta', 'theta'), ('phi', 'phi'), ('g', 'g'), ('o', 'o_conv')]:
    sn_conv(out, '%s.%s' % (key, pt), dump, 'Generator/attention/' + tf, bias=False)
  out[key + '.gamma'] = dump['Generator/attention/gamma'].reshape(())


def biggan_tensors(dump, G):
  """state_dict entries of BigGAN.Generator from a biggan-{128,256,512} dump."""
  out = {'shared.weight': dump['linear/w']}
  chunk = G.z_chunk_size
  sn_linear(out, 'linear', dump, 'Generator/G_Z/G_linear',
            rows=nhwc_rows(G.arch['in_channels'][0], G.bottom_width))
  for i, blocklist in enumerate(G.blocks):
    scope, key = block_scope(i), 'blocks.%d.0' % i
    for pt, tf in [('conv1', 'conv0'), ('conv2', 'conv1'), ('conv_sc', 'conv_sc')]:
      sn_conv(out, '%s.%s' % (key, pt), dump, '%s/%s' % (scope, tf))
    for k, bn in enumerate(['bn1', 'bn2']):
      for pt, tf in [('gain', 'gamma'), ('bias', 'beta')]:
        sn_linear(out, '%s.%s.%s' % (key, bn, pt), dump,
                  '%s/%s' % (bn_scope(scope, 'HyperBN', k), tf), cols=y_then_z(chunk, G.shared_dim),
                  bias=False)
      stats = bn_scope(scope, 'CrossReplicaBN', k)
      out['%s.%s.stored_mean' % (key, bn)] = dump[stats + '/accumulated_mean']
      out['%s.%s.stored_var' % (key, bn)] = dump[stats + '/accumulated_var']
    if len(blocklist) > 1:
      attention(out, 'blocks.%d.1' % i, dump)
  out['output_layer.0.gain'] = dump['Generator/ScaledCrossReplicaBN/gamma'].reshape(-1)
  out['output_layer.0.bias'] = dump['Generator/ScaledCrossReplicaBN/beta'].reshape(-1)
  out['output_layer.0.stored_mean'] = dump['Generator/ScaledCrossReplicaBNbn/accumulated_mean']
  out['output_layer.0.stored_var'] = dump['Generator/ScaledCrossReplicaBNbn/accumulated_var']
  sn_conv(out, 'output_layer.2', dump, 'Generator/conv_2d')
  if dump.stacks():  # TF-Hub's biggan modules are not known to have any
    print('Warning: %s holds %d BN statistics stacks (module_apply_default/stack_*), but '
          'biggan-* modules have one set of BN statistics and BigGAN.Generator no per-truncation '
          'tables; the stacks are ignored and the accumulated statistics used'
          % (dump.path, len(dump.stacks())))
  return out


def deep_tensors(dump, G):
  """state_dict entries of BigGANdeep.Generator --G_tfhub from a biggan-deep-* dump."""
  out = {'shared.weight': dump['linear/w']}
  cols = y_then_z(G.dim_z, G.shared_dim)
  sn_linear(out, 'linear', dump, 'Generator/GenZ/G_linear',
            rows=nhwc_rows(G.arch['in_channels'][0], G.bottom_width), cols=cols)
  bns = []  # (state_dict prefix, TF scope) in TF-Hub's BN order
  for i, blocklist in enumerate(G.blocks):
    scope, key = block_scope(i), 'blocks.%d.0' % i
    for k in range(4):
      sn_conv(out, '%s.conv%d' % (key, k + 1), dump, '%s/conv%d' % (scope, k))
      tf_bn = bn_scope(scope, 'BatchNorm', k)
      sn_linear(out, '%s.bn%d.gain' % (key, k + 1), dump, tf_bn + '/scale', cols=cols, bias=False)
      sn_linear(out, '%s.bn%d.bias' % (key, k + 1), dump, tf_bn + '/offset', cols=cols,
                bias=False)
      bns.append(('%s.bn%d' % (key, k + 1), tf_bn))
    if len(blocklist) > 1:
      attention(out, 'blocks.%d.1' % i, dump)
  out['output_layer.0.gain'] = dump['Generator/BatchNorm/scale'].reshape(-1)
  out['output_layer.0.bias'] = dump['Generator/BatchNorm/offset'].reshape(-1)
  bns.append(('output_layer.0', 'Generator/BatchNorm'))
  sn_conv(out, 'output_layer.2', dump, 'Generator/conv_to_rgb')
  out.update(truncation_stats(dump, bns))
  return out


def truncation_stats(dump, bns):
  """Each BN's (51, C) tables of means and variances per truncation, from the graph's stacks;
  a dump without them gives the accumulated statistics for every truncation."""
  import BigGANdeep
  stacks = dump.stacks()
  out = {}
  if not stacks:
    print('Notice: %s has no statistics per truncation (module_apply_default/stack_*); every '
          'truncation uses the accumulated BN statistics' % dump.path)
    for key, scope in bns:
      for stat in ['mean', 'var']:
        row = dump['%s/accumulated_%s' % (scope, stat)].reshape(1, -1)
        out['%s.truncation_%s' % (key, stat)] = np.repeat(row, BigGANdeep.TFHUB_TRUNCATIONS, 0)
  else:
    # The stacks of the BNs are the first of the index pattern; a module may hold more tables
    # after them (not known in TF-Hub's), which are left alone.
    expected = [STACK % i for i in STACK_INDICES[:2 * len(bns)]]
    missing = [name for name in expected if name not in stacks]
    if missing:
      raise UserError('%s has %d BN statistics stacks, not the %d its %d BNs need (no %s); dump '
                      'the module again with --redownload' % (dump.path, len(stacks),
                                                             len(expected), len(bns), missing[0]))
    extra = [name for name in stacks if name not in expected]
    if extra:
      print('Notice: %s: %d statistics stacks after those of the BNs are not used (%s...)'
            % (dump.path, len(extra), extra[0]))
    for index, (key, _) in enumerate(bns):
      for stat, name in zip(['mean', 'var'], expected[2 * index:2 * index + 2]):
        out['%s.truncation_%s' % (key, stat)] = dump[name]
  for key, _ in bns:  # replaced by G.set_truncation
    out[key + '.stored_mean'] = out[key + '.truncation_mean'][-1]
    out[key + '.stored_var'] = out[key + '.truncation_var'][-1]
  return out


def load_tensors(G, tensors, source):
  """Copy every converted array into G; every entry but the logged singular values must come
  from the dump, with its exact shape. The sv buffers get the values G's spectral norm finds."""
  state = G.state_dict()
  expected = {k for k in state if not re.search(r'(^|\.)sv\d+$', k)}
  missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
  if missing or extra:
    raise RuntimeError('converter and model disagree: not converted %s; no such entry %s'
                       % (missing[:5], extra[:5]))
  for key, value in tensors.items():
    if tuple(value.shape) != tuple(state[key].shape):
      raise UserError('%s: %s has shape %s in the dump but %s in the model; the dump is not a '
                      'TF-Hub BigGAN layout' % (source, key, tuple(value.shape),
                                                tuple(state[key].shape)))
    with torch.no_grad():
      state[key].copy_(torch.as_tensor(np.array(value)))
  with torch.no_grad():
    for m in G.modules():
      if isinstance(m, layers.SN):
        W = m.weight.view(m.weight.size(0), -1)
        svs, _, _ = layers.power_iteration(W.t() if m.transpose else W, m.u, update=False,
                                           eps=m.eps)
        for buffer, sv in zip(m.sv, svs):
          buffer.copy_(sv)


def convert(hdf5_path, ema=True, truncation=1.0, experiment_name='', verbose=False):
  """Stage 2: (G in eval mode, its config) from a dump."""
  need_stage2()
  if not 0.0 <= truncation <= 1.0:
    raise UserError('--truncation %s is outside [0, 1], where TF-Hub stored BN statistics; '
                    'choose one in [0, 1]' % truncation)
  dump = Dump(hdf5_path, ema=ema)
  try:
    config = read_config(dump, experiment_name)
    G = build_G(config)
    tensors = (deep_tensors if config['G_tfhub'] else biggan_tensors)(dump, G)
    load_tensors(G, tensors, hdf5_path)
    if verbose:
      print('TF variables not used: %s' % ', '.join(dump.unused()))
  finally:
    dump.close()
  if config['G_tfhub']:
    G.set_truncation(truncation)
  return G.eval(), config


def write_weights(G, config, weights_root):
  """weights_root/<experiment>/{G.pth, state_dict.pth}, each written whole before it replaces
  an older file. A folder holding anything but an earlier conversion is left alone."""
  root = os.path.join(weights_root, config['experiment_name'])
  state_path = checkpoints.file_path(root, checkpoints.STATE_FILE)
  G_path = checkpoints.file_path(root, 'G')
  earlier = os.path.exists(state_path) and 'tfhub_module' in checkpoints.safe_load(state_path)
  if (os.path.exists(G_path) or os.path.exists(state_path)) and not earlier:
    raise UserError('%s already holds a checkpoint that is not a TF-Hub conversion; choose '
                    'another --experiment_name or --weights_root' % root)
  state = {'itr': 0, 'epoch': 0, 'save_num': 0, 'save_best_num': 0, 'best_IS': 0,
           'best_FID': 999999, 'config': config,
           'tfhub_module': module_name('biggan-deep' if config['G_tfhub'] else 'biggan',
                                       config['resolution'])}
  checkpoints.save_set(root, [('G', G.state_dict())], state)
  print('Wrote %s and %s' % (G_path, state_path))
  return root


def generate_sample(G, batch_size, filename, truncation=1.0, parallel=False, seed=0):
  """A sheet of random classes with z = truncation * (normal truncated to [-2, 2]), as TF-Hub's
  samples."""
  import sampling
  device = next(G.parameters()).device
  generator = torch.Generator().manual_seed(seed)
  z = torch.nn.init.trunc_normal_(torch.empty(batch_size, G.dim_z), a=-2.0, b=2.0,
                                  generator=generator) * truncation
  y = torch.randint(0, G.n_classes, (batch_size,), generator=generator)
  G.eval()
  images = sampling.run_G(G, z.to(device), G.shared(y.to(device)), parallel)
  sampling.save_grid(images, filename, nrow=int(np.ceil(np.sqrt(batch_size))))
  print('Wrote %s' % filename)


def prepare_parser():
  parser = errors.ArgumentParser(description=__doc__.split('\n')[0])
  add = parser.add_argument
  add('--resolution', '-r', type=int, default=None, choices=RESOLUTIONS,
      help='Resolution of the TF-Hub module to convert; all three if not given')
  add('--deep', action='store_true', default=False,
      help='(new) Convert biggan-deep-{res} instead of biggan-{res}')
  add('--module_path', type=str, default='',
      help='(new) TF-Hub handle or local folder of the module for stage 1; default '
           'https://tfhub.dev/deepmind/biggan-{res}/2 or biggan-deep-{res}/1')
  add('--hdf5', type=str, default='',
      help='(new) Convert this dump (stage 2 only unless it is missing and -r is given) '
           'instead of --weights_dir/biggan[-deep]-{res}.h5')
  add('--redownload', action='store_true', default=False,
      help='Dump the module again (stage 1) even if its .h5 file exists')
  add('--weights_dir', type=str, default='pretrained_weights',
      help='Folder of the stage-1 dumps biggan[-deep]-{res}.h5')
  add('--weights_root', type=str, default='weights',
      help='(new) Root of the weights folder written, as train.py and sample.py use it')
  add('--experiment_name', type=str, default='',
      help='(new) Name of the weights folder; default the module name, e.g. biggan-deep-256 '
           '(+ _noema with --no_ema)')
  add('--no_ema', action='store_true', default=False,
      help='Convert the raw weights instead of their EMA')
  add('--truncation', type=float, default=1.0,
      help='(new) biggan-deep: the truncation whose BN statistics G.pth holds, and the '
           'truncation of --generate_samples')
  add('--dump_only', action='store_true', default=False,
      help='(new) Stage 1 only: write the .h5 dumps and stop')
  add('--samples_dir', type=str, default='pretrained_samples',
      help='Where --generate_samples writes biggan{res}_samples.jpg')
  add('--generate_samples', action='store_true', default=False,
      help='Write a sheet of samples of each converted G')
  add('--batch_size', type=int, default=16,
      help='Number of images in that sheet')
  add('--parallel', action='store_true', default=False,
      help='Sample over all GPUs with DataParallel')
  add('--device', type=str, default='auto',
      help='(new) Device for --generate_samples: auto (CUDA when present, else CPU), cpu, cuda, '
           'cuda:1, ...')
  add('--verbose', action='store_true', default=False,
      help='Also list the TF variables that were not used')
  return parser


def jobs(args):
  """(module name or None, TF-Hub path, dump path) of each conversion asked for."""
  kind = 'biggan-deep' if args.deep else 'biggan'
  if args.hdf5:
    name = module_name(kind, args.resolution) if args.resolution else None
    return [(name, args.module_path or (name and MODULE_URLS[kind].format(args.resolution)),
             args.hdf5)]
  if args.module_path and not args.resolution:
    raise UserError('--module_path names one module: give its resolution with -r')
  return [(module_name(kind, res), args.module_path or MODULE_URLS[kind].format(res),
           os.path.join(args.weights_dir, module_name(kind, res) + '.h5'))
          for res in ([args.resolution] if args.resolution else RESOLUTIONS)]


def main(argv=None):
  args = prepare_parser().parse_args(argv)
  if args.batch_size < 1:
    raise UserError('--batch_size must be at least 1 (got %d)' % args.batch_size)
  if not args.dump_only:  # fail now, not after converting
    need_stage2()
    configuration.check_writable_folder(
        args.weights_root, '--weights_root %s' % args.weights_root, '--weights_root')
    if args.generate_samples:
      configuration.check_writable_folder(
          args.samples_dir, '--samples_dir %s' % args.samples_dir, '--samples_dir')
  for name, module_path, hdf5_path in jobs(args):
    if args.redownload or not os.path.exists(hdf5_path):
      if not name:
        raise UserError('%s does not exist; give -r (and --deep) to dump that module into it, '
                        'or the path of an existing dump' % hdf5_path)
      dump_tfhub_to_hdf5(module_path, hdf5_path)
    if args.dump_only:
      continue
    G, config = convert(hdf5_path, ema=not args.no_ema, truncation=args.truncation,
                        experiment_name=args.experiment_name, verbose=args.verbose)
    write_weights(G, config, args.weights_root)
    if args.generate_samples:
      tag = module_name('biggan-deep' if config['G_tfhub'] else 'biggan', config['resolution'])
      filename = os.path.join(args.samples_dir, '%s_samples.jpg' % tag.replace('-%d' % config[
          'resolution'], str(config['resolution'])))
      generate_sample(G.to(distributed.pick_device(args.device)), args.batch_size, filename,
                      args.truncation, args.parallel)


if __name__ == '__main__':
  errors.run_main(main)
