"""Count the structural debts the redesign removes, so before/after figures are measured.

Run from the repository root::

    python tools/structure_report.py

It reads the source of the installed package folders (``posheads/``, ``models/``,
``datasets/``) with :mod:`ast` and prints:

* family name lists -- list, tuple, set or dict literals holding two or more likelihood
  names (``"poisson"``, ``"negative-binomial"``, ...);
* family-string comparisons -- ``==``/``!=``/``in`` tests and ``startswith`` calls against
  a likelihood name, outside the family registry (``posheads/families/``);
* cross-module private imports -- ``from m import _x`` and ``m._x`` where ``m`` is another
  posheads module and ``_x`` is private;
* duplicated definitions -- top-level functions or classes of the same name defined in
  more than one module;
* import cycles -- strongly connected groups in the graph of module-level imports;
* the ``.py`` files at the top of ``posheads/``.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"posheads": ROOT / "posheads", "posheads.models": ROOT / "models",
            "posheads.datasets": ROOT / "datasets"}
NAMES = {"poisson", "negative_binomial", "zero_inflated_poisson",
         "zero_inflated_negative_binomial", "hurdle_poisson", "hurdle_negative_binomial",
         "discretized_logistic", "log_gaussian", "geometric", "gamma", "tweedie",
         "generalized_poisson"}
NAMES |= {n.replace("_", "-") for n in NAMES}
PREFIXES = {"zero_inflated", "hurdle", "zero-inflated", "hurdle-"}
REGISTRY = ROOT / "posheads" / "families"


def modules():
    """``{dotted name: path}`` of every module of the installed packages."""
    out = {}
    for pkg, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            if "data" in path.relative_to(folder).parts[:-1] and pkg.endswith("datasets"):
                continue
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    # posheads.models / posheads.datasets live in their own folders, not under posheads/
    return {k: v for k, v in out.items()
            if not (k.startswith("posheads.") and v.is_relative_to(ROOT / "posheads")
                    and k.split(".")[1] in ("models", "datasets"))}


def _strings(node):
    return [e.value for e in node if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def family_lists(tree):
    hits = []
    for node in ast.walk(tree):
        elts = None
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            elts = node.elts
        elif isinstance(node, ast.Dict):
            elts = [k for k in node.keys if k is not None]
        if elts is not None and len(set(_strings(elts)) & NAMES) >= 2:
            hits.append(node.lineno)
    return hits


def _is_family_string(node):
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and (
        node.value in NAMES or any(node.value.startswith(p) and node.value != p
                                   for p in PREFIXES))


def family_comparisons(tree):
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_family_string(s) for s in sides):
                hits.append(node.lineno)
            elif any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and any(
                    isinstance(s, (ast.Tuple, ast.List, ast.Set))
                    and set(_strings(s.elts)) & NAMES for s in sides):
                hits.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("startswith", "endswith"):
            args = node.args[0] if node.args else None
            vals = _strings(args.elts) if isinstance(args, ast.Tuple) else (
                [args.value] if isinstance(args, ast.Constant) else [])
            if any(v in PREFIXES or v in NAMES for v in vals if isinstance(v, str)):
                hits.append(node.lineno)
    return hits


def _resolve(module, level, name, is_package):
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports(name, path, tree, known, top_only):
    """``[(target module, imported names, lineno)]`` of ``tree``."""
    out = []
    is_package = path.name == "__init__.py"
    body = tree.body if top_only else list(ast.walk(tree))
    for node in body:
        if isinstance(node, ast.ImportFrom):
            target = _resolve(name, node.level, node.module, is_package)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    out.append((sub, [], node.lineno))
                else:
                    out.append((target, [alias.name], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                out.append((alias.name, [], node.lineno))
    return [(t, n, ln) for t, n, ln in out if t.startswith("posheads")]


def private_imports(name, path, tree, known):
    hits = []
    for target, names, lineno in imports(name, path, tree, known, top_only=False):
        if target == name:
            continue
        for n in names:
            if n.startswith("_") and not n.startswith("__"):
                hits.append((lineno, f"{target}.{n}"))
    # attribute access on an imported posheads module: ops._check_args
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(name, node.level, node.module, path.name == "__init__.py")
            for a in node.names:
                if f"{target}.{a.name}" in known:
                    aliases[a.asname or a.name] = f"{target}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in known and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases and node.attr.startswith("_") \
                and not node.attr.startswith("__") and aliases[node.value.id] != name:
            hits.append((node.lineno, f"{aliases[node.value.id]}.{node.attr}"))
    return hits


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def report() -> dict:
    """Every count of the module docstring, with where each item is."""
    mods = modules()
    known = set(mods)
    lists, comps, privs, defs = {}, {}, {}, defaultdict(list)
    graph = defaultdict(set)
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        rel = str(path.relative_to(ROOT))
        if family_lists(tree):
            lists[rel] = family_lists(tree)
        if not path.is_relative_to(REGISTRY) and family_comparisons(tree):
            comps[rel] = family_comparisons(tree)
        if private_imports(name, path, tree, known):
            privs[rel] = private_imports(name, path, tree, known)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name not in (
                    "__getattr__", "__dir__"):
                defs[node.name].append(rel)
        for target, _, _ in imports(name, path, tree, known, top_only=True):
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return {
        "family name lists": lists,
        "family-string comparisons outside the registry": comps,
        "cross-module private imports": privs,
        "definitions repeated in several modules": {k: v for k, v in defs.items()
                                                    if len(v) > 1},
        "import cycles (module-level imports)": cycles(graph),
        "files at the top of posheads/": sorted(p.name for p in (ROOT / "posheads").glob("*.py")),
    }


def main():
    for title, found in report().items():
        if isinstance(found, dict):
            total = sum(len(v) for v in found.values()) if title != (
                "definitions repeated in several modules") else len(found)
            print(f"{title}: {total}")
            for k, v in sorted(found.items()):
                print(f"    {k}: {v}")
        else:
            print(f"{title}: {len(found)}")
            for item in found:
                print(f"    {item}")


if __name__ == "__main__":
    main()
