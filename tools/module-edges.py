#!/usr/bin/env python3
"""Module dependency edges of a crate's src/ (default crates/server/src), from `crate::` and `super::`
paths outside comments; an edge used only by test code is marked (t). `plugins/` submodules are
nodes of their own. Prints the edges, then any cycles (2-cycles and strongly connected groups),
without and with test-only edges. `-v` also prints where each edge comes from.

Run from the repository root: `python3 tools/module-edges.py [crates/<name>/src] [-v]`."""
import os, re, sys, itertools
args = [a for a in sys.argv[1:] if not a.startswith("-")]
root = args[0] if args else "crates/server/src"
SPLIT = {"plugins"}  # modules whose submodules are nodes of their own
def node_of(rel):
    parts = rel[:-3].split("/")
    if parts[-1] == "mod": parts = parts[:-1]
    if parts[0] in ("main", "lib", "cli"): return None
    if parts[0] in SPLIT and len(parts) > 1: return parts[0] + "::" + parts[1]
    return parts[0]
def target(path_parts, src_node):
    if not path_parts: return None
    top = path_parts[0]
    if top in SPLIT and len(path_parts) > 1 and (os.path.exists(os.path.join(root, top, path_parts[1] + ".rs")) or os.path.isdir(os.path.join(root, top, path_parts[1]))):
        return top + "::" + path_parts[1]
    return top
def expand(s):
    """'a::{b, c::{d}}' -> ['a::b','a::c::d']"""
    out = []
    s = s.strip()
    m = re.match(r"^([\w:]*?)\{(.*)\}$", s, re.S)
    if not m:
        return [s]
    prefix, inner = m.group(1), m.group(2)
    depth, cur, items = 0, "", []
    for ch in inner:
        if ch == "{": depth += 1
        if ch == "}": depth -= 1
        if ch == "," and depth == 0: items.append(cur); cur = ""
        else: cur += ch
    items.append(cur)
    for it in items:
        it = it.strip()
        if it: out += [prefix + x for x in expand(it)]
    return out
edges = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith(".rs"): continue
        p = os.path.join(dp, f); rel = os.path.relpath(p, root)
        src = node_of(rel)
        if src is None: continue
        text = open(p).read()
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        lines = text.split("\n")
        is_test_file = f == "tests.rs" or "/tests/" in rel
        in_test = is_test_file
        # module path of this file, for resolving super::
        parts = rel[:-3].split("/")
        if parts[-1] == "mod": parts = parts[:-1]
        for i, line in enumerate(lines):
            if re.match(r"\s*#\[cfg\(test\)\]", line) and i + 1 < len(lines) and re.match(r"\s*(pub\s+)?mod\s+\w+", lines[i+1]) and not lines[i+1].rstrip().endswith(";"):
                in_test = True
            code = re.sub(r'"(\\.|[^"\\])*"', '""', line)
            code = code.split("//")[0]
            # grouped use statements may span lines: collect `crate::...` with balanced braces
            for m in re.finditer(r"\b(crate|super)::", code):
                start = m.end()
                # gather text with balanced braces from this line onward
                buf = ""; depth = 0; j = i; pos = start; ln = code
                while True:
                    while pos < len(ln):
                        ch = ln[pos]
                        if ch == "{": depth += 1
                        elif ch == "}":
                            if depth == 0: break
                            depth -= 1
                        elif depth == 0 and not (ch.isalnum() or ch in "_:"): break
                        buf += ch; pos += 1
                    else:
                        if depth > 0 and j + 1 < len(lines):
                            j += 1; ln = lines[j].split("//")[0]; pos = 0; continue
                    break
                for path in expand(buf):
                    pp = [x for x in path.split("::") if x]
                    if m.group(1) == "super":
                        base = parts[:-1]
                        # nested super::super
                        while pp and pp[0] == "super":
                            base = base[:-1]; pp = pp[1:]
                        pp = base + pp
                        if not pp: continue
                    t = target(pp, src)
                    if t is None or t == src or t in ("self",): continue
                    # a child module reaching into its own parent module's items is not a cross edge
                    if "::" in src and t == src.split("::")[0]: pass
                    key = (src, t)
                    e = edges.setdefault(key, {"test": True, "where": set()})
                    if not in_test: e["test"] = False
                    e["where"].add(f"{rel}:{i+1}")
names = sorted({a for a, _ in edges} | {b for _, b in edges})
by_src = {}
for (a, b), e in sorted(edges.items()):
    by_src.setdefault(a, []).append(b + (" (t)" if e["test"] else ""))
for a in sorted(by_src):
    print(f"{a:18} -> {' '.join(by_src[a])}")
def cycles(include_tests):
    adj = {}
    for (a, b), e in edges.items():
        if e["test"] and not include_tests: continue
        adj.setdefault(a, set()).add(b)
    res = []
    for a, b in itertools.combinations(sorted(set(adj) | {y for s in adj.values() for y in s}), 2):
        if b in adj.get(a, ()) and a in adj.get(b, ()): res.append((a, b))
    # strongly connected components (Tarjan) for longer cycles
    index = {}; low = {}; stack = []; on = set(); sccs = []; c = [0]
    def strong(v):
        index[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
        for w in adj.get(v, ()):
            if w not in index: strong(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: sccs.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in sorted(set(adj) | {y for s in adj.values() for y in s}):
        if v not in index: strong(v)
    return res, sccs
for inc in (False, True):
    pairs, sccs = cycles(inc)
    label = "incl. test-only edges" if inc else "non-test edges"
    print(f"\n2-cycles ({label}): {pairs}")
    print(f"strongly connected groups ({label}): {sccs}")
if "-v" in sys.argv:
    for (a, b), e in sorted(edges.items()):
        print(a, "->", b, sorted(e["where"])[:4])
