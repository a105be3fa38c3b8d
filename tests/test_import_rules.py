"""The import rules of docs/development/architecture.md, read from the source with ``ast`` (nothing is imported):

- no import cycle between modules, counting every import (inside functions and under ``TYPE_CHECKING`` too);
- no import cycle between the packages they sit in, counting module-level imports (a lazy import of a
  release-0.1 name kept for notebooks may point back);
- the core (``mech_interp.core``) imports no model library (TransformerLens, transformers, timm);
- the run engine (``mech_interp.runs``) imports no study and no model engine at module level: it finds
  studies through its registry table;
- a study never imports another study, at any level (lazy imports included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mech_interp", "vit_hooks", "train_gpt2_bias")
MODEL_LIBRARIES = ("transformer_lens", "transformers", "timm")
# Each study and the modules that are only its own; a study may import the core, the engine and the model engines.
STUDIES = {
    "lm": ("mech_interp.studies.lm",),
    "heads": ("mech_interp.studies.heads",),
    "followups": ("mech_interp.studies.followups",),
    "vit": ("vit_hooks",),
    "trainer": ("train_gpt2_bias",),
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" or \
        isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"


def _imports(module: str, top_level_only: bool, type_checking: bool = False) -> set[str]:
    """Modules of ours (or model libraries) that ``module`` imports."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child) and not type_checking:
                continue
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if nested and top_level_only:
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in child.names)
            visit(child, top and not nested)

    visit(tree, True)
    ours = {n for n in names if n in MODULES}
    libraries = {n for n in names if n.split(".")[0] in MODEL_LIBRARIES}
    return ours | libraries


def _graph(top_level_only: bool, type_checking: bool = False) -> dict[str, set[str]]:
    return {m: {n for n in _imports(m, top_level_only, type_checking) if n in MODULES and n != m} for m in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def _package_of(module: str) -> str:
    path = MODULES[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


@pytest.mark.unit
def test_no_module_imports_itself_through_others():
    graph = _graph(top_level_only=False, type_checking=True)
    # a package's __init__ importing its own modules is how a package is built, not a cycle
    graph = {m: {n for n in deps if not (MODULES[m].name == "__init__.py" and n.startswith(m + "."))}
             for m, deps in graph.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


@pytest.mark.unit
def test_no_package_imports_itself_through_others():
    graph: dict[str, set[str]] = {}
    for module, deps in _graph(top_level_only=True).items():
        source = _package_of(module)
        for dep in deps:
            target = _package_of(dep)
            if target != source and not target.startswith(source + ".") and not source.startswith(target + "."):
                graph.setdefault(source, set()).add(target)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


@pytest.mark.unit
def test_the_core_imports_no_model_library():
    for module in (m for m in MODULES if m.startswith("mech_interp.core")):
        libraries = {n for n in _imports(module, top_level_only=False) if n.split(".")[0] in MODEL_LIBRARIES}
        assert not libraries, f"{module} imports {sorted(libraries)}"


@pytest.mark.unit
def test_the_engine_imports_no_study_at_module_level():
    study_roots = [root for roots in STUDIES.values() for root in roots]
    for module in (m for m in MODULES if m.startswith("mech_interp.runs")):
        bad = {n for n in _imports(module, top_level_only=True)
               if n.startswith(tuple(study_roots)) or n.startswith("mech_interp.models")}
        assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.unit
def test_no_study_imports_another():
    for study, roots in STUDIES.items():
        others = [r for name, rs in STUDIES.items() if name != study for r in rs]
        for module in (m for m in MODULES if m.startswith(roots)):
            bad = {n for n in _imports(module, top_level_only=False) if n.startswith(tuple(others))}
            assert not bad, f"{module} ({study}) imports {sorted(bad)}"


@pytest.mark.unit
def test_the_rules_see_imports():
    """The reader finds what it must: a module-level import, a relative one, and a lazy one."""
    assert "mech_interp.runs.study" in _imports("mech_interp.runs.spec", top_level_only=True)
    assert "mech_interp.models.loading" in _imports("mech_interp.models.language_study", top_level_only=False)
    assert "mech_interp.models.loading" not in _imports("mech_interp.models.language_study", top_level_only=True)
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
