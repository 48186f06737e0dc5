#!/usr/bin/env python3
"""Fails when the modules of src/ import each other in a cycle (make lint runs it).

A module is one file (`src/app/mod.rs` is `app`, `src/app/scale.rs` is `app::scale`). An edge
A -> B is any path in A that names B: `crate::b::item`, `super::item`, a child's `child::item`,
or a name bound by `use` (`use crate::gear;` then `gear::spawn::x`). Binding a module with `use`
is not an edge by itself; naming something through it is. `#[cfg(test)] mod tests` blocks count
like the code around them: a test that needs a module higher up is a cycle too.

    scripts/cycles.py [--graph] [--allow a::b,c::d ...]

--graph prints every edge; --allow MODS accepts one known cycle made of exactly MODS (say
which issue removes it, in the Makefile, next to the flag).
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def modules():
    """Maps module path (tuple) -> file, for every .rs file under src/."""
    mods = {}
    for dirpath, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), SRC)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "main", "lib"):
                parts = parts[:-1]
            mods[tuple(parts)] = os.path.join(dirpath, f)
    return mods


def strip(text):
    """Removes comments, string and char literals (keeping line structure)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif text.startswith('r"', i) or text.startswith('r#"', i):
            hashes = 0 if text[i + 1] == '"' else text[i + 1 :].index('"')
            end = '"' + "#" * hashes
            j = text.find(end, i + 2 + hashes)
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i : i + 4]) or text.startswith("'\\", i):
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\x..|\\.|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{d as e}}` -> [(['a','b'], 'b'), (['a','c','d'], 'e')]."""
    tree = re.sub(r"\s+", "", tree)
    res = []

    def walk(prefix, s):
        depth, parts, cur = 0, [], ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        for p in parts:
            m = re.match(r"^((?:" + IDENT + r"::)*)\{(.*)\}$", p)
            if m:
                walk(prefix + [x for x in m.group(1).split("::") if x], m.group(2))
                continue
            alias = None
            if "as" in p and re.search(r"(?<=[A-Za-z0-9_])as(?=[A-Za-z_])", p):
                p, alias = re.split(r"(?<=[A-Za-z0-9_])as(?=[A-Za-z_])", p, maxsplit=1)
            path = prefix + [x for x in p.split("::") if x]
            if path and path[-1] == "self":
                path = path[:-1]
            if path and path[-1] != "*":
                res.append((path, alias or path[-1]))
            elif path:
                res.append((path[:-1], None))

    walk([], tree)
    return res


def analyse(mods):
    edges = {m: set() for m in mods}
    for mod, path in mods.items():
        text = strip(open(path, encoding="utf-8").read())
        is_dir = os.path.basename(path) in ("mod.rs", "main.rs", "lib.rs")
        children = {c[-1] for c in mods if len(c) == len(mod) + 1 and c[: len(mod)] == mod}
        bound = {c: mod + (c,) for c in children}

        def absolute(parts, here):
            """Resolves a path's leading crate/super/self/bound name to an absolute path."""
            parts = list(parts)
            base = here
            if parts and parts[0] == "crate":
                return list(parts[1:])
            if parts and parts[0] == "self":
                parts = parts[1:]
                return list(base) + parts
            if parts and parts[0] == "super":
                while parts and parts[0] == "super":
                    base = base[:-1]
                    parts = parts[1:]
                return list(base) + parts
            if parts and parts[0] in bound:
                return list(bound[parts[0]]) + parts[1:]
            return None

        def target(abs_path):
            for k in range(len(abs_path), -1, -1):
                if tuple(abs_path[:k]) in mods:
                    return tuple(abs_path[:k]), k == len(abs_path)
            return None, False

        # inline `mod name {` blocks (tests): their `super` is this file's module
        inline_at = [m.start() for m in re.finditer(r"\bmod\s+" + IDENT + r"\s*\{", text)]

        def here_at(pos):
            return mod + ("<inline>",) if any(s < pos for s in inline_at) else mod

        uses = []
        for m in re.finditer(r"\buse\s+([^;]+);", text):
            uses.append((m.start(), m.end(), m.group(1)))
        for start, _, tree in uses:
            here = here_at(start)
            for parts, alias in expand_use(tree):
                a = absolute(parts, here)
                if a is None:
                    continue
                t, whole = target(a)
                if t is None:
                    continue
                if whole and alias:
                    bound[alias] = t  # binding a module: edges come from its uses
                elif t != mod:
                    edges[mod].add(t)
        spans = [(s, e) for s, e, _ in uses]
        pat = re.compile(r"(?<![A-Za-z0-9_:])((?:" + IDENT + r"::)+" + IDENT + r")")
        for m in pat.finditer(text):
            if any(s <= m.start() < e for s, e in spans):
                continue
            parts = m.group(1).split("::")
            a = absolute(parts, here_at(m.start()))
            if a is None:
                continue
            t, _ = target(a)
            if t is not None and t != mod:
                edges[mod].add(t)
        _ = is_dir
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def name(m):
    return "::".join(m) or "crate"


def main(argv):
    mods = modules()
    edges = analyse(mods)
    allowed = []
    i = 0
    while i < len(argv):
        if argv[i] == "--allow":
            allowed.append(sorted(argv[i + 1].split(",")))
            i += 2
        elif argv[i] == "--graph":
            for m in sorted(edges):
                for t in sorted(edges[m]):
                    print(f"{name(m)} -> {name(t)}")
            i += 1
        else:
            sys.exit(f"usage: {sys.argv[0]} [--graph] [--allow a::b,c::d ...]")
    bad = 0
    for comp in cycles(edges):
        names = sorted(name(m) for m in comp)
        if names in allowed:
            print(f"cycles: allowed for now: {' <-> '.join(names)}")
            continue
        bad += 1
        inside = set(comp)
        print(f"cycles: these modules import each other: {', '.join(names)}")
        for m in sorted(comp):
            for t in sorted(edges[m] & inside):
                print(f"  {name(m)} -> {name(t)}")
    if bad:
        sys.exit(1)
    print(f"cycles: none among {len(mods)} modules")


if __name__ == "__main__":
    main(sys.argv[1:])
