"""The import graph of the top-level modules is acyclic: read from the source (module-level and
function-level imports alike), so a circle fails here before it bites at import time."""
import ast
import os

from conftest import ROOT


def top_level_modules():
  return sorted(name[:-3] for name in os.listdir(ROOT) if name.endswith('.py'))


def imports_of(path, modules):
  """The project modules a file imports anywhere in it (import x, import x as y, from x import)."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name.split('.')[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      found.add(node.module.split('.')[0])
  return found & set(modules)


def import_graph():
  modules = top_level_modules()
  return {m: imports_of(os.path.join(ROOT, m + '.py'), modules) - {m} for m in modules}


def find_cycle(graph):
  """A list of modules that import each other in a circle, or None: depth-first search that
  keeps the path on a stack (a node met again while on the path closes a circle)."""
  state, path = {}, []  # state: 1 while on the path, 2 when finished

  def visit(node):
    state[node] = 1
    path.append(node)
    for child in sorted(graph[node]):
      if state.get(child) == 1:
        return path[path.index(child):] + [child]
      if child not in state:
        cycle = visit(child)
        if cycle:
          return cycle
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_the_cycle_finder_finds_circles_and_only_circles():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None
  assert find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None  # a diamond is no circle
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': set(), 'b': {'d'}, 'c': {'b'}, 'd': {'c'}}) == ['b', 'd', 'c', 'b']


def test_imports_are_read_at_every_level(tmp_path):
  (tmp_path / 'x.py').write_text('import os\nimport a as b\n\ndef f():\n  from c import d\n'
                                 '  import e.f\n')
  assert imports_of(str(tmp_path / 'x.py'), ['a', 'c', 'e', 'x']) == {'a', 'c', 'e'}


def test_top_level_modules_import_each_other_without_a_circle():
  graph = import_graph()
  assert {'config', 'utils', 'train', 'models'} <= set(graph)
  assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))


def test_only_users_import_utils():
  """utils.py is the original's compatibility surface, not a dependency of the project."""
  graph = import_graph()
  assert [m for m in graph if 'utils' in graph[m]] == []
