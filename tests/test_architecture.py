"""The import structure the layout promises: no import cycles among jaxseg's modules, no method imports
another method, and the loss library imports no trainer or method code.

Read from the source, so the test needs no jax. Function-level (lazy) imports count: a lazy import that
closes a circle (jaxseg/config.py importing the optimiser that imports it) still ties the modules together.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "jaxseg")


def _modules() -> dict[str, str]:
  """{dotted module name: file path} of every module of the package."""
  out = {}
  for folder, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
        out[rel.removesuffix(".__init__")] = os.path.join(folder, f)
  return out


def import_graph() -> dict[str, set[str]]:
  """{module: the jaxseg modules it imports, anywhere in the file} (a module's own parent packages, always
  imported first, left out)."""
  modules = _modules()
  graph = {}
  for name, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    deps = set()
    is_package = path.endswith("__init__.py")
    for node in ast.walk(tree):  # function-level (lazy) imports too
      targets = []
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative import
          parts = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
          base = ".".join(parts + ([base] if base else []))
        # `from pkg import x` depends on the module pkg.x when x is one, else on pkg.
        targets = [
            f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
        ]
      for t in targets:
        while t and t not in modules:
          t = t.rpartition(".")[0]
        # A module's own ancestors are imported (partly initialised) before it: not an edge.
        if t and t != name and not name.startswith(t + "."):
          deps.add(t)
    graph[name] = deps
  return graph


def _cycle(graph) -> list[str] | None:
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for dep in sorted(graph[node]):
      if state.get(dep) == "open":
        return stack[stack.index(dep) :] + [dep]
      if dep not in state and (found := visit(dep)):
        return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


def test_no_import_cycles():
  graph = import_graph()
  assert "jaxseg.config" in graph and "jaxseg.train.optimizer" in graph
  cycle = _cycle(graph)
  assert cycle is None, " -> ".join(cycle)


def test_the_cycle_detector_finds_a_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_method_imports_another_and_losses_stay_pure():
  graph = import_graph()
  methods = ("supervised", "seam", "uda", "hn", "vos")
  for name, deps in graph.items():
    parts = name.split(".")
    if len(parts) > 2 and parts[1] == "methods" and parts[2] in methods:
      others = {d for d in deps if d.startswith("jaxseg.methods.") and d.split(".")[2] != parts[2]}
      assert not others, (name, others)
    if name.startswith("jaxseg.losses"):
      bad = {d for d in deps if d.startswith(("jaxseg.methods", "jaxseg.train", "jaxseg.data"))}
      assert not bad, (name, bad)
