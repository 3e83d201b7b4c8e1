#!/usr/bin/env python3
"""Fails when the modules (files) of a crate import each other in a cycle.

For every crate of the workspace (a folder with Cargo.toml and src/), each .rs file under
src/ is a module. A file depends on another when its code names something the other defines:
a path through `crate::`, `super::`, `self::` or a child module, in a `use` or in an
expression. Names re-exported with `use` are followed to the file that defines them, so a
facade (`pub use wal::Wal;` in lib.rs) is not a dependency of the files that import through
it. Test code (modules declared under `#[cfg(test)]`, files called tests.rs, test_util.rs) is
left out: a test may reach anywhere.

Usage: .ci/module-cycles.py [workspace root] [--graph CRATE]
Prints each cycle as the files in it and exits 1 if there is one; --graph prints a crate's
edges (file -> files it depends on).
"""

import os
import re
import sys
from collections import defaultdict

TEST_FILES = {"tests.rs", "test_util.rs"}


def strip(src):
    """The source with comments, string and char literals blanked (lengths kept)."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:i + 20]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', src[i:]).group(1)
            end = src.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", src[i:end]))
            i = end
        elif c == '"' or (c == "b" and src.startswith('b"', i)):
            j = i + (2 if c == "b" else 1)
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", src[i:j + 1]))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'])'", src[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def skip_test_blocks(code):
    """Blanks inline `#[cfg(test)] mod x { ... }` blocks; returns the code and the names of
    modules declared `#[cfg(test)] mod x;`."""
    test_mods = set()
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", code):
        test_mods.add(m.group(1))
    out = list(code)
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", code):
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        for k in range(m.start(), j):
            if out[k] != "\n":
                out[k] = " "
    return "".join(out), test_mods


def parse_use_tree(text, prefix, out):
    """Expands a use tree (`a::{b, c::d as e}`) into (name bound, full path) pairs."""
    text = text.strip()
    if not text:
        return
    depth, parts, start = 0, [], 0
    for i, c in enumerate(text):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    if len(parts) > 1:
        for p in parts:
            parse_use_tree(p, prefix, out)
        return
    m = re.match(r"^([\w:]*?)(::)?\{(.*)\}$", text, re.S)
    if m:
        path = prefix + [s for s in m.group(1).split("::") if s]
        parse_use_tree(m.group(3), path, out)
        return
    alias = None
    am = re.match(r"^(.*?)\s+as\s+(\w+)$", text, re.S)
    if am:
        text, alias = am.group(1), am.group(2)
    segs = prefix + [s.strip() for s in text.split("::") if s.strip()]
    if not segs:
        return
    if segs[-1] == "self":
        segs = segs[:-1]
    if not segs:
        return
    out.append((alias or segs[-1], segs))


class Crate:
    def __init__(self, root):
        self.root = root
        self.files = {}  # module path (tuple) -> file
        self.children = defaultdict(set)  # module -> child module names
        self.test = set()  # module paths that are test-only
        self.code = {}
        self.imports = {}  # module -> {name: absolute path list}
        src = os.path.join(root, "src")
        for top in ("lib.rs", "main.rs"):
            if os.path.exists(os.path.join(src, top)):
                self.load((), os.path.join(src, top), False)

    def load(self, module, path, is_test):
        self.files[module] = path
        if is_test or os.path.basename(path) in TEST_FILES:
            self.test.add(module)
            is_test = True
        with open(path, encoding="utf-8") as f:
            code = strip(f.read())
        code, test_mods = skip_test_blocks(code)
        self.code[module] = code
        base = os.path.dirname(path)
        name = os.path.basename(path)
        if name not in ("lib.rs", "main.rs", "mod.rs"):
            base = os.path.join(base, name[:-3])
        for m in re.finditer(r"(?:#\[path\s*=[^\]]*\]\s*)?(?:pub(?:\([^)]*\))?\s+)?\bmod\s+(\w+)\s*;", code):
            child = m.group(1)
            for cand in (os.path.join(base, child + ".rs"), os.path.join(base, child, "mod.rs")):
                if os.path.exists(cand):
                    self.children[module].add(child)
                    self.load(module + (child,), cand, is_test or child in test_mods)
                    break

    def absolute(self, module, segs):
        """The absolute module path of `segs` as written in `module`, or None if it is not
        a path into this crate."""
        first = segs[0]
        if first == "crate":
            return list(segs[1:])
        if first == "self":
            return list(module) + list(segs[1:])
        if first == "super":
            cur = list(module)
            i = 0
            while i < len(segs) and segs[i] == "super":
                cur = cur[:-1]
                i += 1
            return cur + list(segs[i:])
        if first in self.children[module]:
            return list(module) + list(segs)
        return None

    def parse_imports(self):
        for module, code in self.code.items():
            binds = {}
            for m in re.finditer(r"\buse\s+([^;]*);", code):
                pairs = []
                parse_use_tree(m.group(1), [], pairs)
                for name, segs in pairs:
                    if segs == ["*"] or segs[-1] == "*":
                        continue
                    a = self.absolute(module, segs)
                    if a is not None:
                        binds[name] = a
            self.imports[module] = binds

    def resolve(self, path, seen=None):
        """The file (module) defining the item at absolute `path`."""
        seen = seen or set()
        key = tuple(path)
        if key in seen:
            return None
        seen.add(key)
        i = len(path)
        while i > 0 and tuple(path[:i]) not in self.files:
            i -= 1
        module, rest = tuple(path[:i]), path[i:]
        if rest and rest[0] in self.imports.get(module, {}):
            target = self.imports[module][rest[0]] + rest[1:]
            found = self.resolve(target, seen)
            if found is not None:
                return found
        return module

    def edges(self):
        self.parse_imports()
        deps = defaultdict(set)
        for module, code in self.code.items():
            if module in self.test:
                continue
            refs = []
            for m in re.finditer(r"\buse\s+([^;]*);", code):
                pairs = []
                parse_use_tree(m.group(1), [], pairs)
                refs.extend(segs for _, segs in pairs)
            # paths in code outside `use` declarations (those were read whole above)
            body = re.sub(r"\buse\s+[^;]*;", lambda m: " " * len(m.group(0)), code)
            for m in re.finditer(r"(?<![\w:])((?:\w+::)+\w+)", body):
                refs.append(m.group(1).split("::"))
            for segs in refs:
                glob = segs[-1] == "*"
                if glob:
                    segs = segs[:-1]
                if not segs:
                    continue
                a = self.absolute(module, segs)
                if a is None:
                    continue
                target = tuple(a) if glob and tuple(a) in self.files else self.resolve(a)
                if target is not None and target != module and target not in self.test:
                    deps[module].add(target)
        return deps


def cycles(deps, nodes):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps.get(v, ()):
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
                out.append(comp)

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    args = sys.argv[1:]
    graph = None
    if "--graph" in args:
        i = args.index("--graph")
        graph = args[i + 1]
        del args[i:i + 2]
    root = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    crates = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("target", ".git", "node_modules")]
        if "Cargo.toml" in filenames and os.path.isdir(os.path.join(dirpath, "src")):
            crates.append(dirpath)
    found = False
    for c in sorted(crates):
        crate = Crate(c)
        deps = crate.edges()
        name = os.path.relpath(c, root)
        show = lambda m: os.path.relpath(crate.files[m], root)
        if graph is not None and os.path.normpath(name) == os.path.normpath(graph):
            for m in sorted(deps):
                print(f"{show(m)} -> {', '.join(sorted(show(d) for d in deps[m]))}")
        for comp in cycles(deps, crate.files.keys()):
            found = True
            files = sorted(show(m) for m in comp)
            print(f"{name}: a cycle between {len(files)} modules:")
            members = set(comp)
            for m in sorted(comp, key=show):
                inside = sorted(show(d) for d in deps[m] if d in members)
                print(f"  {show(m)} -> {', '.join(inside)}")
    if found:
        print("\nModules must depend on each other one way (see docs/ARCHITECTURE.md): move "
              "what both sides need into a module of its own below them.")
        sys.exit(1)
    print(f"no module cycle in {len(crates)} crates")


if __name__ == "__main__":
    main()
