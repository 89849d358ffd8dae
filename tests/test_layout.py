"""The package's layering, read from its import statements (ast): libraries -> stages -> main,
no stage imports another stage, and no import cycle anywhere."""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "leaml_jax")


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
  return rel.removesuffix(".__init__")


def _modules() -> dict[str, str]:
  out = {}
  for root, _, files in os.walk(ROOT):
    out.update({_module_name(os.path.join(root, f)): os.path.join(root, f)
                for f in files if f.endswith(".py")})
  return out


def _imports(path: str, modules) -> set[str]:
  """Package modules `path` imports, at any depth of the file (lazy imports count too)."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from pkg import sub` depends on the module pkg.sub; `from mod import name` on mod.
      names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
               for a in node.names]
    else:
      continue
    for name in names:
      while name and name not in modules:
        name = name.rpartition(".")[0]
      if name and name.startswith("leaml_jax.") or name == "leaml_jax":
        found.add(name)
  return found


GRAPH = {m: _imports(p, _modules()) - {m} for m, p in _modules().items()}


def _is_stage(m: str) -> bool:
  return m.startswith("leaml_jax.stages.") and m.rsplit(".", 1)[-1] not in ("context", "artifacts")


def test_no_stage_imports_another_stage():
  bad = {m: sorted(d for d in deps if _is_stage(d)) for m, deps in GRAPH.items() if _is_stage(m)}
  assert not {m: d for m, d in bad.items() if d}


def test_libraries_import_no_stage_and_no_entry_point():
  libraries = [m for m in GRAPH if not m.startswith("leaml_jax.stages") and m != "leaml_jax.main"]
  bad = {m: sorted(d for d in GRAPH[m] if d.startswith("leaml_jax.stages") or d == "leaml_jax.main")
         for m in libraries}
  assert not {m: d for m, d in bad.items() if d}


def test_errors_module_imports_nothing_from_the_package():
  assert GRAPH["leaml_jax.errors"] <= {"leaml_jax"}


def _cycle(graph) -> list[str] | None:
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for d in sorted(graph.get(m, ())):
      if d == "leaml_jax" or d not in graph:
        continue
      if state.get(d) == "open":
        return stack[stack.index(d):] + [d]
      if d not in state and (found := visit(d)):
        return found
    state[m] = "done"
    stack.pop()
    return None

  for m in sorted(graph):
    if m not in state and (found := visit(m)):
      return found
  return None


def test_no_import_cycle():
  cycle = _cycle(GRAPH)
  assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("pair", [("a", "b"), ("a", "b", "c")])
def test_cycle_finder_finds_a_planted_cycle(pair):
  graph = {f"leaml_jax.{x}": {f"leaml_jax.{pair[(i + 1) % len(pair)]}"} for i, x in enumerate(pair)}
  assert _cycle(graph) is not None and _cycle({"leaml_jax.a": {"leaml_jax.b"}}) is None
