#!/usr/bin/env python3
"""Fails when the modules of src/ import each other in a cycle (make lint runs it).

A module is one file (`src/app/mod.rs` is `app`, `src/app/scale.rs` is `app::scale`). An edge
A -> B is any path in A that names B: `crate::b::item`, `super::item`, a child's `child::item`,
or a name bound by `use` (`use crate::gear;` then `gear::spawn::x`). Binding a module with `use`
is not an edge by itself; naming something through it is. A `pub use` is a name, not a
dependency: a path through it leads to the module that defines the item. An inline module
(`mod tests { ... }`) is a module of its own: its `super` is the file, and as nothing imports
a test module, tests may use any module without making a cycle.

    scripts/cycles.py [--graph] [--allow-within PART ...]

--graph prints every edge; --allow-within PART tolerates (but still prints) cycles whose
modules all lie in PART (say which issue removes them, in the Makefile, next to the flag).
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
    # `x as y` becomes `x@y` before the blanks go, so a name containing "as" (`release`) stays whole.
    tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+", "@", tree))
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
            if "@" in p:
                p, alias = p.split("@", 1)
            path = prefix + [x for x in p.split("::") if x]
            if path and path[-1] == "self":
                path = path[:-1]
            if path and path[-1] != "*":
                res.append((path, alias or path[-1]))
            elif path:
                res.append((path[:-1], None))

    walk([], tree)
    return res


def inline_modules(text):
    """(name, start, end) of every inline `mod name { ... }` block, by brace matching."""
    out = []
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", text):
        depth, i = 0, m.end() - 1
        while i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        out.append((m.group(1), m.start(), i))
    return out


def load(mods):
    """Module path -> stripped text and the spans of its inline modules (as modules of their own)."""
    files = {}
    for mod, path in mods.items():
        text = strip(open(path, encoding="utf-8").read())
        files[mod] = (text, inline_modules(text))
    for mod, (_, inline) in list(files.items()):
        for name, _, _ in inline:
            mods.setdefault(mod + (name,), mods[mod])
    return files


def analyse(mods):
    files = load(mods)
    edges = {m: set() for m in mods}
    reexports = {m: {} for m in mods}
    for pass_ in (1, 2):
        for mod, (text, inline) in files.items():
            scan(mods, mod, text, inline, edges, reexports, pass_)
    return edges


def scan(mods, mod, text, inline, edges, reexports, pass_):
    """Pass 1 records the `pub use` names of `mod`; pass 2 its edges."""
    children = {c[-1] for c in mods if len(c) == len(mod) + 1 and c[: len(mod)] == mod}
    bound = {m: {c: m + (c,) for c in children} for m in [mod] + [mod + (n,) for n, _, _ in inline]}

    def here_at(pos):
        """The module a position is in: the innermost inline module around it, else the file's."""
        best = mod
        for name, s, e in inline:
            if s <= pos <= e:
                best = mod + (name,)
        return best

    def absolute(parts, here):
        """Resolves a path's leading crate/super/self/bound name to an absolute path."""
        if parts[0] == "crate":
            return list(parts[1:])
        if parts[0] == "self":
            return list(here) + parts[1:]
        if parts[0] == "super":
            base = here
            while parts and parts[0] == "super":
                base, parts = base[:-1], parts[1:]
            return list(base) + parts
        if parts[0] in bound[here]:
            return list(bound[here][parts[0]]) + parts[1:]
        return None

    def target(abs_path, hops=0):
        """The module that defines what `abs_path` names (through `pub use` names)."""
        for k in range(len(abs_path), -1, -1):
            m = tuple(abs_path[:k])
            if m in mods:
                rest = abs_path[k:]
                if rest and rest[0] in reexports[m] and hops < 20:
                    return target(reexports[m][rest[0]] + rest[1:], hops + 1)
                return m, k == len(abs_path)
        return None, False

    uses = []
    for m in re.finditer(r"(\bpub(?:\([a-z]+\))?\s+)?\buse\s+([^;]+);", text):
        uses.append((m.start(), m.end(), m.group(2), bool(m.group(1))))
    for start, _, tree, public in uses:
        here = here_at(start)
        for parts, alias in expand_use(tree):
            a = absolute(parts, here) if parts else None
            if a is None:
                continue
            if public:
                if alias and pass_ == 1 and here == mod:
                    reexports[mod][alias] = a
                continue
            if pass_ == 1:
                continue
            t, whole = target(a)
            if t is None:
                continue
            if whole and alias:
                bound[here][alias] = t  # binding a module: edges come from its uses
            elif t != here:
                edges[here].add(t)
    if pass_ == 1:
        return
    spans = [(s, e) for s, e, _, _ in uses]
    pat = re.compile(r"(?<![A-Za-z0-9_:])((?:" + IDENT + r"::)+" + IDENT + r")")
    for m in pat.finditer(text):
        if any(s <= m.start() < e for s, e in spans):
            continue
        here = here_at(m.start())
        a = absolute(m.group(1).split("::"), here)
        if a is None:
            continue
        t, _ = target(a)
        if t is not None and t != here:
            edges[here].add(t)


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
        if argv[i] == "--allow-within":
            allowed.append(argv[i + 1])
            i += 2
        elif argv[i] == "--graph":
            for m in sorted(edges):
                for t in sorted(edges[m]):
                    print(f"{name(m)} -> {name(t)}")
            i += 1
        else:
            sys.exit(f"usage: {sys.argv[0]} [--graph] [--allow-within PART ...]")
    bad = tolerated = 0
    for comp in cycles(edges):
        names = sorted(name(m) for m in comp)
        if any(all(n == p or n.startswith(p + "::") for n in names) for p in allowed):
            print(f"cycles: tolerated for now: {', '.join(names)}")
            tolerated += 1
            continue
        bad += 1
        inside = set(comp)
        print(f"cycles: these modules import each other: {', '.join(names)}")
        for m in sorted(comp):
            for t in sorted(edges[m] & inside):
                print(f"  {name(m)} -> {name(t)}")
    if bad:
        sys.exit(1)
    print(f"cycles: {'no other' if tolerated else 'none'} among {len(mods)} modules")


if __name__ == "__main__":
    main(sys.argv[1:])
