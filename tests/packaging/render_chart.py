#!/usr/bin/env python3
"""Render the driftguard Helm chart without helm (not packaged by Debian).

A small interpreter for the subset of Go templates / Sprig the chart uses: actions with trim
markers, if/else/with/define/end, pipelines, .Values/.Release/.Chart/.Files/$.Template, and the
functions quote, toYaml, nindent, indent, include, print, sha256sum, dir, not, default.
Anything else is an error, so the chart cannot silently grow constructs this check ignores.

    render_chart.py CHART_DIR [--set key.path=yaml-value ...] [--namespace NS] [--release NAME]

Prints the rendered multi-document YAML (like `helm template`).
"""
import argparse
import hashlib
import os
import posixpath
import re
import sys

import yaml

ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


class TemplateError(Exception):
    pass


def lex(src):
    """Split into ('text', s) and ('action', s) with trim markers applied."""
    out, pos = [], 0
    for m in ACTION.finditer(src):
        text = src[pos:m.start()]
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        out.append(["text", text])
        out.append(["action", m.group(2), bool(m.group(3))])
        pos = m.end()
    out.append(["text", src[pos:]])
    # right trim markers strip leading whitespace of the following text
    for i, tok in enumerate(out):
        if tok[0] == "action" and tok[2] and i + 1 < len(out):
            out[i + 1][1] = out[i + 1][1].lstrip(" \t\r\n")
    return [(t[0], t[1]) for t in out]


def parse(tokens, defines):
    """Tree of nodes: ('text', s) | ('expr', s) | ('if', cond, body, else) | ('with', expr, body, else)."""
    pos = 0

    def block(stop):
        nonlocal pos
        nodes = []
        while pos < len(tokens):
            kind, s = tokens[pos]
            pos += 1
            if kind == "text":
                if s:
                    nodes.append(("text", s))
                continue
            if s.startswith("/*"):
                continue
            word = s.split(None, 1)[0] if s else ""
            if word in stop:
                return nodes, word, s
            if word in ("if", "with"):
                cond = s[len(word):].strip()
                body, end, _ = block(("else", "end"))
                other = []
                if end == "else":
                    other, end, _ = block(("end",))
                nodes.append((word, cond, body, other))
            elif word == "define":
                name = yaml.safe_load(s[len("define"):].strip())
                body, _, _ = block(("end",))
                defines[name] = body
            elif word in ("range", "template", "block", "tpl"):
                raise TemplateError(f"unsupported action {{{{ {s} }}}}")
            else:
                nodes.append(("expr", s))
        if stop:
            raise TemplateError(f"missing {{{{ end }}}} (expected one of {stop})")
        return nodes, None, None

    nodes, _, _ = block(())
    return nodes


TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(\()|(\))|(\|)|([^\s()|]+))')


def tokenize_expr(s):
    toks, pos = [], 0
    s = s.strip()
    while pos < len(s):
        m = TOKEN.match(s, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot tokenize {s!r}")
        pos = m.end()
        if m.group(1):
            toks.append(("str", yaml.safe_load(m.group(1))))
        elif m.group(2):
            toks.append(("(", None))
        elif m.group(3):
            toks.append((")", None))
        elif m.group(4):
            toks.append(("|", None))
        else:
            toks.append(("word", m.group(5)))
    return toks


class Renderer:
    def __init__(self, chart_dir, values, namespace, release):
        self.chart_dir = chart_dir
        chart = yaml.safe_load(open(os.path.join(chart_dir, "Chart.yaml")))
        self.root = {
            "Values": values,
            "Release": {"Namespace": namespace, "Name": release, "Service": "Helm"},
            "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart.get("appVersion", "")},
            "Template": {"BasePath": posixpath.join(chart["name"], "templates")},
        }
        self.defines = {}
        self.templates = {}
        tdir = os.path.join(chart_dir, "templates")
        for f in sorted(os.listdir(tdir)):
            src = open(os.path.join(tdir, f)).read()
            tree = parse(lex(src), self.defines)
            self.templates[posixpath.join(self.root["Template"]["BasePath"], f)] = tree

    # ---- evaluation
    def field(self, path, dot):
        if path == ".":
            return dot
        if path == "$":
            return self.root
        if path in (".Files.Get", "$.Files.Get"):
            return ("Files.Get",)
        if path.startswith("$."):
            cur, parts = self.root, path[2:].split(".")
        elif path.startswith("."):
            cur, parts = dot, path[1:].split(".")
        else:
            raise TemplateError(f"unknown identifier {path!r}")
        for p in parts:
            if p == "Files":
                raise TemplateError(f"{path}: only .Files.Get is supported")
            if not isinstance(cur, dict):
                raise TemplateError(f"{path}: {p} of a non-map")
            if p not in cur:
                raise TemplateError(f"{path}: no key {p!r} (values.yaml must define every key the templates use)")
            cur = cur[p]
        return cur

    def eval_pipeline(self, toks, dot):
        # split at top-level '|'
        cmds, cur, depth = [], [], 0
        for t in toks:
            if t[0] == "(":
                depth += 1
            elif t[0] == ")":
                depth -= 1
            if t[0] == "|" and depth == 0:
                cmds.append(cur)
                cur = []
            else:
                cur.append(t)
        cmds.append(cur)
        val, have = None, False
        for cmd in cmds:
            val = self.eval_command(cmd, dot, val if have else None, have)
            have = True
        return val

    def eval_terms(self, toks, dot):
        terms, i = [], 0
        while i < len(toks):
            kind, v = toks[i]
            if kind == "(":
                depth, j = 1, i + 1
                while depth:
                    if toks[j][0] == "(":
                        depth += 1
                    elif toks[j][0] == ")":
                        depth -= 1
                    j += 1
                terms.append(("val", self.eval_pipeline(toks[i + 1:j - 1], dot)))
                i = j
                continue
            if kind == "str":
                terms.append(("val", v))
            elif re.fullmatch(r"-?\d+", v):
                terms.append(("val", int(v)))
            elif v in ("true", "false"):
                terms.append(("val", v == "true"))
            elif v.startswith(".") or v.startswith("$"):
                f = self.field(v, dot)
                terms.append(("fn", "Files.Get") if f == ("Files.Get",) else ("val", f))
            else:
                terms.append(("fn", v))
            i += 1
        return terms

    def eval_command(self, toks, dot, piped, have_piped):
        terms = self.eval_terms(toks, dot)
        if not terms:
            raise TemplateError("empty command")
        if terms[0][0] == "val":
            if len(terms) > 1 or have_piped:
                raise TemplateError(f"cannot call a value: {toks}")
            return terms[0][1]
        name = terms[0][1]
        args = [t[1] for t in terms[1:]]
        if any(t[0] == "fn" for t in terms[1:]):
            raise TemplateError(f"nested call without parentheses: {toks}")
        if have_piped:
            args.append(piped)
        return self.call(name, args)

    def call(self, name, args):
        if name == "quote":
            return '"' + gostr(args[0]).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if name == "toYaml":
            v = args[0]
            return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n") if v not in (None, {}, []) else ""
        if name in ("nindent", "indent"):
            n, s = args
            pad = " " * n
            s = "\n".join(pad + line for line in gostr(s).split("\n"))
            return ("\n" + s) if name == "nindent" else s
        if name == "include":
            tname, ctx = args
            if tname in self.defines:
                return self.render_nodes(self.defines[tname], ctx)
            if tname in self.templates:
                return self.render_nodes(self.templates[tname], ctx)
            raise TemplateError(f"include: no template {tname!r}")
        if name == "print":
            return "".join(gostr(a) for a in args)
        if name == "sha256sum":
            return hashlib.sha256(gostr(args[0]).encode()).hexdigest()
        if name == "dir":
            return posixpath.dirname(gostr(args[0]))
        if name == "not":
            return not truthy(args[0])
        if name == "default":
            d, v = args
            return v if truthy(v) else d
        if name == "Files.Get":
            p = os.path.join(self.chart_dir, args[0])
            return open(p).read() if os.path.exists(p) else ""
        raise TemplateError(f"unsupported function {name!r}")

    def render_nodes(self, nodes, dot):
        out = []
        for n in nodes:
            if n[0] == "text":
                out.append(n[1])
            elif n[0] == "expr":
                v = self.eval_pipeline(tokenize_expr(n[1]), dot)
                out.append(gostr(v))
            elif n[0] == "if":
                c = self.eval_pipeline(tokenize_expr(n[1]), dot)
                out.append(self.render_nodes(n[2] if truthy(c) else n[3], dot))
            elif n[0] == "with":
                c = self.eval_pipeline(tokenize_expr(n[1]), dot)
                out.append(self.render_nodes(n[2], c) if truthy(c) else self.render_nodes(n[3], dot))
        return "".join(out)

    def render_all(self):
        docs = []
        for name, tree in self.templates.items():
            if os.path.basename(name).startswith("_") or not name.endswith((".yaml", ".yml")):
                continue
            text = self.render_nodes(tree, self.root)
            if text.strip():
                docs.append(f"---\n# Source: {name}\n{text.strip()}\n")
        return "".join(docs)


def gostr(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def truthy(v):
    return not (v is None or v is False or v == 0 and not isinstance(v, bool) or v in ("", [], {}))


def set_path(d, path, value):
    parts = path.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("chart")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--namespace", default="driftguard-system")
    ap.add_argument("--release", default="driftguard")
    a = ap.parse_args()
    values = yaml.safe_load(open(os.path.join(a.chart, "values.yaml"))) or {}
    for s in a.set:
        k, v = s.split("=", 1)
        set_path(values, k, yaml.safe_load(v))
    try:
        sys.stdout.write(Renderer(a.chart, values, a.namespace, a.release).render_all())
    except TemplateError as e:
        print(f"render_chart.py: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
