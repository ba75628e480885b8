#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

Usage: check-module-cycles.py CRATE_SRC_DIR [...]

Each .rs file is a module; an arrow A -> B is drawn for every `crate::` path (or
`super::` path) in A's non-test code that names B or something inside B. A circle of
arrows means the layers of the crate are not layered. Test modules (`#[cfg(test)]`
and below) are left out: a test may use anything.
"""
import re
import sys
from pathlib import Path


def modules(src: Path):
    out = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        out["::".join(parts)] = f
    return out


def code_of(f: Path) -> str:
    text = f.read_text()
    cut = text.find("#[cfg(test)]")
    text = text if cut < 0 else text[:cut]
    # Comments say what they like.
    return re.sub(r"//[^\n]*", "", text)


def resolve(path, mods):
    """The longest module prefix of a `a::b::c` path."""
    parts = path.split("::")
    for n in range(len(parts), 0, -1):
        cand = "::".join(parts[:n])
        if cand in mods:
            return cand
    return ""  # the crate root


def edges(mods):
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        code = code_of(f)
        # `use crate::{a, b::c}` groups are flattened to `crate::a`, `crate::b::c`.
        for group in re.finditer(r"crate::\{([^}]*)\}", code):
            for item in group.group(1).split(","):
                item = item.strip().split(" as ")[0]
                if item:
                    code += f"\ncrate::{item}"
        for p in re.findall(r"crate::((?:[a-z_][a-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)", code):
            target = resolve(p, mods)
            if target != m and not m.startswith(target + "::") and not (target == "" and m == ""):
                graph[m].add(target)
        parent = m.rsplit("::", 1)[0] if "::" in m else ""
        for p in re.findall(r"super::((?:[a-z_][a-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)", code):
            full = f"{parent}::{p}" if parent else p
            target = resolve(full, mods)
            if target != m and target != parent:
                graph[m].add(target)
    return graph


def cycles(graph):
    found, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for t in sorted(graph.get(n, ())):
            if state.get(t) == 1:
                found.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


bad = False
for src in sys.argv[1:]:
    mods = modules(Path(src))
    graph = edges(mods)
    # The crate root declares every module; arrows from it are the layering itself.
    graph[""] = set()
    for c in cycles(graph):
        bad = True
        print(f"{src}: modules import each other in a circle: " + " -> ".join(x or "(crate root)" for x in c))
    if not bad:
        print(f"{src}: {len(mods)} modules, no import circle")
sys.exit(1 if bad else 0)
