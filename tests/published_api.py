"""The public API of a published module, read from its source text (never imported).

Used to hold this project's drop-in names (``TileCache``, ``Mef3Client``) to the
published mef3io-server 3.1.0: :func:`published_class` reads a class's public
methods (name, kind, parameters with their defaults) and the keys of the
dicts each method returns; :func:`api_mismatches` compares it with our class
(imported, read by ``inspect``).
"""
from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field
from pathlib import Path

_NO_DEFAULT = object()


@dataclass
class Method:
    name: str
    kind: str                       # "method", "property", "staticmethod", "classmethod"
    params: list                    # [(name, default or _NO_DEFAULT)], self/cls excluded
    returned_keys: set = field(default_factory=set)


def _public(name: str) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def _kind(node: ast.FunctionDef) -> str:
    for d in node.decorator_list:
        if isinstance(d, ast.Name) and d.id in ("property", "staticmethod", "classmethod"):
            return d.id
    return "method"


def _default(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)     # e.g. np.float32: compared as text


def _params(node: ast.FunctionDef, kind: str) -> list:
    a = node.args
    positional = a.posonlyargs + a.args
    defaults = [_NO_DEFAULT] * (len(positional) - len(a.defaults)) + [_default(d)
                                                                        for d in a.defaults]
    out = list(zip([p.arg for p in positional], defaults))
    out += [(p.arg, _NO_DEFAULT if d is None else _default(d))
            for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    return out[1:] if kind in ("method", "property", "classmethod") else out


def _dict_keys(node: ast.FunctionDef, methods: dict) -> set:
    keys: set = set()
    for ret in ast.walk(node):
        if not isinstance(ret, ast.Return) or ret.value is None:
            continue
        v = ret.value
        if isinstance(v, ast.Dict):
            keys |= {k.value for k in v.keys if isinstance(k, ast.Constant)}
        elif isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute) \
                and v.func.attr in methods:             # return self._helper(...)
            keys |= _dict_keys(methods[v.func.attr], methods)
    return keys


def published_class(source: Path, class_name: str) -> dict[str, Method]:
    """Public methods of ``class_name`` in the module at ``source``."""
    tree = ast.parse(Path(source).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    funcs = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    out = {}
    for name, node in funcs.items():
        if _public(name):
            kind = _kind(node)
            out[name] = Method(name, kind, _params(node, kind), _dict_keys(node, funcs))
    return out


def published_constants(source: Path) -> dict[str, str]:
    """Public module-level names assigned in ``source``, with the assigned expression's text."""
    tree = ast.parse(Path(source).read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name) and not t.id.startswith("_"):
                    out[t.id] = ast.unparse(node.value)
    return out


def _our_kind(cls, name: str) -> str:
    raw = inspect.getattr_static(cls, name)
    for kind in (property, staticmethod, classmethod):
        if isinstance(raw, kind):
            return kind.__name__
    return "method"


def _our_params(cls, name: str, kind: str) -> list:
    obj = inspect.getattr_static(cls, name)
    func = obj.fget if kind == "property" else getattr(obj, "__func__", obj)
    params = list(inspect.signature(func).parameters.values())
    if kind in ("method", "property", "classmethod"):
        params = params[1:]
    return [(p.name, _NO_DEFAULT if p.default is inspect.Parameter.empty else p.default,
             p.kind) for p in params]


def api_mismatches(published: dict[str, Method], ours: type, allowed_defaults=()) -> list[str]:
    """How ``ours`` fails to offer every published method as the published code calls it.

    Each published method must exist with the same kind; its parameters must
    be ours, in the same positions, with equal defaults (``allowed_defaults``:
    ``(method, parameter)`` pairs whose default differs on purpose). Ours may
    add optional parameters after them, or keyword-only ones.
    """
    problems = []
    for name, m in published.items():
        if not hasattr(ours, name):
            problems.append(f"{name}: missing")
            continue
        kind = _our_kind(ours, name)
        if kind != m.kind:
            problems.append(f"{name}: a {kind} here, a {m.kind} in the published release")
            continue
        theirs = _our_params(ours, name, kind)
        for i, (pname, default) in enumerate(m.params):
            if i >= len(theirs) or theirs[i][0] != pname:
                problems.append(f"{name}: parameter {i} is {pname!r} in the published release, "
                                f"{theirs[i][0] if i < len(theirs) else 'absent'!r} here")
                break
            if (name, pname) in allowed_defaults:
                continue
            if (default is _NO_DEFAULT) != (theirs[i][1] is _NO_DEFAULT) or (
                    default is not _NO_DEFAULT and default != theirs[i][1]):
                problems.append(f"{name}({pname}): default {default!r} in the published "
                                f"release, {theirs[i][1]!r} here")
        for extra in theirs[len(m.params):]:
            if extra[1] is _NO_DEFAULT and extra[2] not in (inspect.Parameter.VAR_POSITIONAL,
                                                            inspect.Parameter.VAR_KEYWORD):
                problems.append(f"{name}: our extra parameter {extra[0]!r} is required")
    return problems
