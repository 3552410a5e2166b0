"""The package layout, enforced (docs/layout.md explains it).

Every .py file of stylegan_rlo, torch_utils and dnnlib is parsed; its imports, also those inside functions, are the
edges of the module graph (relative imports resolved; `from a.b import c` is an import of a.b.c when c is a module).
The tests check that

- every edge points to the same or a lower layer (table LAYERS), except the one persistence hook (HOOK);
- the graph has no circle (function-level imports count: they only defer a circle to run time);
- stylegan_rlo/ itself holds at most MAX_TOP_LEVEL_MODULES modules, the rest lives in subpackages;
- the networks and the augment pipe, whose source is persisted into pickles that the official code loads, import
  only numpy, torch, torch_utils, dnnlib and the standard library;
- every import inside a function of stylegan_rlo says why on its line or the line above (LAZY_REASONS).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import io
import os
import re
import sys
import tokenize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOTS = ("dnnlib", "torch_utils", "stylegan_rlo")

# Lowest first; a module may import its own layer and the layers before it. A module's layer is that of the longest
# entry its name starts with. The top-level modules of stylegan_rlo (errors, devices, fileio, images, the package
# itself) are utilities, except objectives: the paper's contribution sits one level up, beside model and data.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("upstream API", ("dnnlib", "torch_utils")),
    ("utilities", ("stylegan_rlo",)),
    ("components", ("stylegan_rlo.objectives", "stylegan_rlo.model", "stylegan_rlo.data")),
    ("checkpoints", ("stylegan_rlo.checkpoints",)),
    ("evaluation", ("stylegan_rlo.evaluation",)),
    ("training", ("stylegan_rlo.training",)),
    ("applications", ("stylegan_rlo.experiments", "stylegan_rlo.bench")),
    ("cli", ("stylegan_rlo.cli",)),
]

# The one upward import: official pickles name torch_utils.persistence's reconstructor, which rebuilds their
# networks as our classes through the safe loader. It is imported inside that function, when a pickle is loaded.
HOOK = ("torch_utils.persistence", "stylegan_rlo.checkpoints.pickles")

MAX_TOP_LEVEL_MODULES = 7

PERSISTED = ("stylegan_rlo/model/networks.py", "stylegan_rlo/model/augment.py")
PERSISTED_MAY_IMPORT = {"numpy", "torch", "torch_utils", "dnnlib"}

# An import inside a function is there for one of these reasons, said in a comment on its line or the line above.
LAZY_REASONS = re.compile(r"start-up|optional|persistence hook", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Import:
    path: str         # the importing file, relative to the repository
    line: int
    source: str       # the importing module
    target: str       # the imported module (a submodule where `from x import y` names one)
    in_function: bool
    statement: str    # the import as written (first line)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.statement}"


def module_name(path: str) -> str:
    parts = path[:-len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=None)
def source_files() -> dict[str, str]:
    """{module name: path relative to the repository} of every .py file under the roots."""
    files = {}
    for root in ROOTS:
        for folder, dirs, names in os.walk(os.path.join(REPO, root)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(names):
                if name.endswith(".py"):
                    path = os.path.relpath(os.path.join(folder, name), REPO).replace(os.sep, "/")
                    files[module_name(path)] = path
    return files


def _resolve_base(node: ast.ImportFrom, module: str, path: str) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.endswith("/__init__.py") else module.split(".")[:-1]
    package = package[:len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


@functools.lru_cache(maxsize=None)
def imports_of(path: str) -> tuple[Import, ...]:
    """Every import in the file (module level and inside functions), one per imported name."""
    text = open(os.path.join(REPO, path), encoding="utf-8").read()
    lines = text.splitlines()
    module, modules = module_name(path), source_files()
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                else:
                    base = _resolve_base(child, module, path)
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in child.names]
                found.extend(Import(path, child.lineno, module, t, in_function, lines[child.lineno - 1].strip())
                             for t in dict.fromkeys(targets))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))
    visit(ast.parse(text, filename=path), False)
    return tuple(found)


def all_imports() -> list[Import]:
    return [i for path in source_files().values() for i in imports_of(path)]


def internal(target: str) -> str | None:
    """The module of ours that an import of `target` runs (its longest existing prefix); None for other packages."""
    if target.split(".")[0] not in ROOTS:
        return None
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in source_files():
            return ".".join(parts[:n])
    return target.split(".")[0]


def layer(module: str) -> int | None:
    """Index into LAYERS; None for a subpackage of stylegan_rlo that the table does not place."""
    parts = module.split(".")
    if parts[0] == "stylegan_rlo" and len(parts) > 1:
        names = [f"stylegan_rlo.{parts[1]}"]  # a subpackage or a top-level module placed by name
        if len(parts) == 2 and os.path.isfile(os.path.join(REPO, "stylegan_rlo", parts[1] + ".py")):
            names.append("stylegan_rlo")  # else a top-level module is a utility
    else:
        names = [parts[0]]
    for name in names:
        for index, (_, members) in enumerate(LAYERS):
            if name in members:
                return index
    return None


def edges() -> list[tuple[str, str, Import]]:
    """(importer, imported module, import) for each import of one of our modules, the hook included."""
    return [(i.source, target, i) for i in all_imports() if (target := internal(i.target)) is not None]


def test_the_sources_are_found():
    modules = source_files()
    assert len(modules) > 60
    for name in ("dnnlib", "torch_utils.persistence", "stylegan_rlo.model.networks", "stylegan_rlo.cli.train"):
        assert name in modules
    assert {i.target for i in imports_of(modules["torch_utils.ops.bias_act"])} >= {"torch_utils.custom_ops"}


def test_relative_and_submodule_imports_are_resolved(tmp_path, monkeypatch):
    tree = tmp_path / "stylegan_rlo" / "training"
    tree.mkdir(parents=True)
    for name in ("__init__.py", "a.py", "b.py", "../__init__.py", "../errors.py"):
        (tree / name).write_text("")
    (tree / "a.py").write_text("from . import b\nfrom .. import errors\nfrom stylegan_rlo.training import b, c\n"
                               "def f():\n    import stylegan_rlo.errors  # start-up\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    monkeypatch.setattr(sys.modules[__name__], "ROOTS", ("stylegan_rlo",))
    source_files.cache_clear(), imports_of.cache_clear()
    try:
        found = [(i.target, i.in_function) for i in imports_of("stylegan_rlo/training/a.py")]
    finally:
        source_files.cache_clear(), imports_of.cache_clear()
    assert found == [("stylegan_rlo.training.b", False), ("stylegan_rlo.errors", False),
                     ("stylegan_rlo.training.b", False), ("stylegan_rlo.training", False),
                     ("stylegan_rlo.errors", True)]


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in source_files() if layer(m) is None)
    assert not unplaced, f"modules in no layer (add their subpackage to LAYERS in tests/test_layout.py): {unplaced}"


def test_imports_of_our_modules_name_existing_modules():
    missing = [f"{i} (no module {i.target})" for _, target, i in edges()
               if target != i.target and i.target.rsplit(".", 1)[0] not in source_files()]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def test_imports_point_to_the_same_or_a_lower_layer():
    upward = []
    for source, target, imp in edges():
        if (source, target) == HOOK:
            continue
        have, need = layer(source), layer(target)
        if have is not None and need is not None and need > have:
            upward.append(f"{imp}  ({source} is in layer '{LAYERS[have][0]}', {target} in the higher "
                          f"layer '{LAYERS[need][0]}')")
    assert not upward, "imports that point up the layers (see docs/layout.md):\n" + "\n".join(upward)


def test_the_persistence_hook_is_the_only_upward_import_and_is_lazy():
    hook = [imp for source, target, imp in edges() if (source, target) == HOOK]
    assert hook, f"{HOOK[0]} no longer imports {HOOK[1]}: drop HOOK from tests/test_layout.py and docs/layout.md"
    eager = [str(imp) for imp in hook if not imp.in_function]
    assert not eager, ("the persistence hook must be imported inside the function that needs it, so that importing "
                       f"torch_utils does not import stylegan_rlo: {eager}")


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components of more than one module, or of one that imports itself."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_strongly_connected_finds_circles():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"a"}, "b": set()}) == [["a"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    graph: dict[str, set[str]] = {}
    for source, target, _ in edges():
        if (source, target) != HOOK:
            graph.setdefault(source, set()).add(target)
    circles = []
    for component in strongly_connected(graph):
        members = set(component)
        circles.append(" <-> ".join(component) + "\n" + "\n".join(
            f"    {imp}" + ("  (inside a function)" if imp.in_function else "")
            for source, target, imp in edges() if source in members and target in members))
    assert not circles, "import circles (function-level imports included):\n" + "\n".join(circles)


def test_few_modules_directly_in_the_package():
    top = sorted(n for n in os.listdir(os.path.join(REPO, "stylegan_rlo")) if n.endswith(".py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, (f"stylegan_rlo/ holds {len(top)} modules {top}, at most "
                                               f"{MAX_TOP_LEVEL_MODULES}: put new ones into a subpackage")


def test_persisted_modules_import_only_what_official_code_has():
    assert all(p in source_files().values() for p in PERSISTED)
    foreign = [f"{imp}  ({imp.target} is none of numpy, torch, torch_utils, dnnlib, the standard library)"
               for path in PERSISTED for imp in imports_of(path)
               if imp.target.split(".")[0] not in PERSISTED_MAY_IMPORT | set(sys.stdlib_module_names)]
    assert not foreign, ("the networks' source is persisted into pickles that the official StyleGAN2-ADA code "
                         "loads; these imports would not resolve there:\n" + "\n".join(foreign))


def comments_by_line(path: str) -> dict[int, str]:
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        tokens = tokenize.generate_tokens(io.StringIO(f.read()).readline)
        return {t.start[0]: t.string for t in tokens if t.type == tokenize.COMMENT}


def unexplained_lazy_imports(path: str) -> list[str]:
    """The imports inside functions with no LAZY_REASONS comment on their line(s), in the comment block right
    above them, or above the first of the run of imports they belong to."""
    text = open(os.path.join(REPO, path), encoding="utf-8").read()
    lines, comments = text.splitlines(), comments_by_line(path)

    def explained(stmt: ast.stmt) -> bool:
        said = [comments.get(n, "") for n in range(stmt.lineno, stmt.end_lineno + 1)]
        n = stmt.lineno - 1
        while n >= 1 and lines[n - 1].strip().startswith("#"):
            said.append(comments.get(n, ""))
            n -= 1
        return any(LAZY_REASONS.search(c) for c in said)

    bad = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            run_explained = False
            previous = None
            for stmt in block:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    follows = (isinstance(previous, (ast.Import, ast.ImportFrom))
                               and not "".join(lines[previous.end_lineno:stmt.lineno - 1]).strip())
                    run_explained = explained(stmt) or (follows and run_explained)
                    if in_function and not run_explained:
                        bad.append(f"{path}:{stmt.lineno}: {lines[stmt.lineno - 1].strip()}")
                previous = stmt
        for child in ast.iter_child_nodes(node):
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))
    visit(ast.parse(text, filename=path), False)
    return bad


def test_function_level_imports_say_why():
    bad = [b for name, path in source_files().items() if name.split(".")[0] == "stylegan_rlo"
           for b in unexplained_lazy_imports(path)]
    assert not bad, ("imports inside functions need a comment on their line or the line above saying why they are "
                     "not at the top of the module: start-up (cost saved for the commands), optional (package "
                     "not always installed) or persistence hook, e.g. "
                     "`import matplotlib  # start-up: loads only when a plot is drawn`:\n" + "\n".join(bad))


def test_unexplained_lazy_imports_are_found(tmp_path, monkeypatch):
    (tmp_path / "m.py").write_text(
        "import os\n"
        "def f():\n"
        "    # start-up: heavy\n"
        "    import a\n"
        "\n"
        "    import b\n"
        "    x = 1\n"
        "    import c\n"
        "    import d  # optional package\n"
        "    try:\n"
        "        import e\n"
        "    except ImportError:  # no reason given\n"
        "        import g\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    assert unexplained_lazy_imports("m.py") == ["m.py:8: import c", "m.py:11: import e", "m.py:13: import g"]
