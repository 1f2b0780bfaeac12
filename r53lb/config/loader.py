"""YAML in, a Config out: the safe loader's limits, and errors that name the key path and line."""

from __future__ import annotations

import gc
import os
import re
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .fields import ConfigError, show
from .model import Config


def _key(part: str) -> str:
    """One key of a path as written, or quoted and cut when it is odd (hostile input)."""
    return part if re.fullmatch(r"[\w.@-]{1,64}", part) else show(part)


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and "[" in part:  # pydantic's tagged-union labels
            continue
        else:
            out += ("." if out else "") + _key(str(part))
    return out


_PATTERNS = {  # a field's pattern, said in words (pydantic would quote the regular expression)
    r"^[a-z]{2}(-[a-z]+)+-[0-9]+$": "is not an AWS region name (like us-east-1)",
    r"^[A-Z]{1,16}$": "is not an HTTP method (like GET, HEAD)",
}


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    kind = err.get("type")
    ctx = err.get("ctx") or {}
    shown = show(err.get("input"))
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        return f"{shown} {_PATTERNS.get(str(ctx.get('pattern')), 'does not have the expected form')}"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"needs at least {n} item{'s' if n != 1 else ''}" if not isinstance(err.get("input"), str) \
            else f"{shown} is shorter than {n} character{'s' if n != 1 else ''}"
    if kind == "too_long":
        n = ctx.get("max_length")
        return f"{shown} is longer than {n}" + ("" if isinstance(err.get("input"), str) else " items")
    if kind == "greater_than_equal":
        return f"{shown} is below {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"{shown} is above {ctx.get('le')}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{shown} is not a whole number"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"{shown} is not a number"
    if kind in ("bool_parsing", "bool_type"):
        return f"{shown} is not true or false"
    if kind in ("string_type",):
        return f"{shown} is not a string"
    if kind in ("literal_error", "enum"):
        return f"{shown}: {msg[0].lower() + msg[1:]}".replace("input should be", "must be")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{shown} is not a mapping (key: value)"
    if kind in ("tuple_type", "list_type"):
        return f"{shown} is not a list"
    return msg.replace("Input should be", "must be").replace("input should be", "must be")


MAX_LINE = 400  # a backstop: every part of the line is cut already


def _one_line(text: str) -> str:
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


_SUBPATH = re.compile(r"^([A-Za-z_][\w]*(?:\[\d+\])?(?:\.[\w]+(?:\[\d+\])?)*): (.*)$")


def _steps(sub: str) -> list[Any]:
    """'nodes[2].id' -> ['nodes', 2, 'id']"""
    out: list[Any] = []
    for name, index in re.findall(r"([A-Za-z_]\w*)|\[(\d+)\]", sub):
        out.append(name if name else int(index))
    return out


def _field_names() -> frozenset[str]:
    """Every key the schema knows, for did-you-mean."""
    names: set[str] = set()
    seen: set[type] = set()
    todo: list[Any] = [Config]
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            if t in seen:
                continue
            seen.add(t)
            for name, f in t.model_fields.items():
                names.add(f.alias or name)
                todo.append(f.annotation)
        for arg in getattr(t, "__args__", ()) or ():
            todo.append(arg)
        origin = getattr(t, "__origin__", None)
        if origin is not None:
            todo.append(origin)
        for meta in getattr(t, "__metadata__", ()) or ():
            todo.append(meta)
    return frozenset(names)


def _errors(exc: ValidationError) -> list[tuple[list[Any], str]]:
    """Every error as (key path steps, message), the innermost only, in document order."""
    errors = exc.errors()
    # A failing element also fails its container's length check: report the element only.
    locs = [tuple(e["loc"]) for e in errors]
    errors = [
        e for e in errors
        if not any(len(o) > len(e["loc"]) and o[: len(e["loc"])] == tuple(e["loc"]) for o in locs)
    ] or errors
    out: list[tuple[list[Any], str]] = []
    for err in errors:
        steps = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]  # tagged-union labels
        msg = _message(err)
        # Errors raised by a model validator name their own sub-path ("nodes[2].id: ...").
        m = _SUBPATH.match(msg)
        if m and err["type"] == "value_error" and not msg.startswith("'"):
            sub, msg = m.groups()
            steps += _steps(sub)
        if err["type"] == "extra_forbidden" and steps and isinstance(steps[-1], str):
            import difflib

            near = difflib.get_close_matches(steps[-1], sorted(_field_names()), n=1, cutoff=0.75)
            if near:
                msg += f" (did you mean {near[0]}?)"
        if (steps, msg) not in out:
            out.append((steps, msg))
    return out


def _yaml_line(root: yaml.Node | None, steps: list[Any]) -> int | None:
    """The line of the deepest node of the composed document on this key path."""
    node, line = root, None
    for step in steps:
        if node is None:
            break
        line = _line(node)
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(step):
                    nxt, line = v, _line(k)
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            node = None
    if node is not None:
        line = _line(node)
    return line


def _format(exc: ValidationError, root: yaml.Node | None = None, source: str = "<config>") -> tuple[str, list[str]]:
    """The first error as one line (key path: message), and every error with its file and YAML line."""
    found = []
    for steps, msg in _errors(exc):
        text = _one_line(f"{_path(tuple(steps)) or 'config'}: {msg}")
        line = _yaml_line(root, steps) if root is not None else None
        found.append((line or 0, text, _one_line(f"{source}:{line}: {text}" if line else f"{source}: {text}")))
    found.sort(key=lambda f: f[0])  # in the order of the file
    return found[0][1], [f[2] for f in found]


# --- YAML ---------------------------------------------------------------------------------

MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a 10,000-node config is about 1 MB
MAX_DEPTH = 64  # the schema nests 8 deep; a deeper document is an attack on the recursion limit
# Aliases may repeat parts of the document (a shared `checks` list), but the expanded
# document may hold at most this many nodes beyond 10x the nodes written: a "billion laughs"
# of 600 bytes expands to 10^9 nodes and would take minutes and gigabytes to validate.
ALIAS_FLOOR = 100_000
ALIAS_RATIO = 10

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10,000 nodes in well under a second


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader, except that an impossible date (2026-13-45) stays a string, so
    that the schema reports it with its key path."""


def _timestamp(loader: Any, node: yaml.Node) -> Any:
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError):
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)

_MERGE = "tag:yaml.org,2002:merge"


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _inspect(root: yaml.Node, source: str) -> None:
    """Walk the composed document once, before anything is built from it: refuse duplicate
    keys (with their key path), nesting past MAX_DEPTH, an alias inside its own anchor, and
    aliases that expand the document past its budget. Iterative: no recursion to exhaust.
    Paths are linked lists (parent, step) turned into text only for an error line."""
    cap = 10**12
    size: dict[int, int] = {}  # id(node) -> nodes once every alias in it is expanded
    open_: set[int] = set()  # nodes whose children are being walked (for alias cycles)
    stack: list[tuple[yaml.Node, Any, int, bool]] = [(root, None, 0, False)]
    scalar, sequence = yaml.ScalarNode, yaml.SequenceNode
    while stack:
        node, trail, depth, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            if isinstance(node, sequence):
                total = 1 + sum(size[id(c)] for c in node.value)
            else:
                total = 1 + sum(size[id(k)] + size[id(v)] for k, v in node.value)
            size[key] = total if total < cap else cap
            continue
        if key in size:
            continue
        if isinstance(node, scalar):
            size[key] = 1
            continue
        if key in open_:
            raise ConfigError(_one_line(
                f"{source}: {_trail(trail)}: line {_line(node)}: an alias refers to a node that contains it"
            ))
        if depth > MAX_DEPTH:
            raise ConfigError(f"{source}: line {_line(node)}: nested more than {MAX_DEPTH} levels deep")
        open_.add(key)
        stack.append((node, trail, depth, True))
        if isinstance(node, sequence):
            for i in range(len(node.value) - 1, -1, -1):
                stack.append((node.value[i], (trail, i), depth + 1, False))
            continue
        seen: dict[tuple[str, str], yaml.Node] = {}
        for k, v in node.value:
            if isinstance(k, scalar):
                ident = (k.tag, k.value)
                if ident in seen and k.tag != _MERGE:
                    raise ConfigError(_one_line(
                        f"{source}: {_trail((trail, k.value))}: the key appears twice "
                        f"(lines {_line(seen[ident])} and {_line(k)})"
                    ))
                seen[ident] = k
                size[id(k)] = 1
                step = k.value
            else:
                stack.append((k, (trail, "?"), depth + 1, False))
                step = "?"
            stack.append((v, (trail, step), depth + 1, False))
    expanded, written = size[id(root)], len(size)
    if expanded > ALIAS_FLOOR + ALIAS_RATIO * written:
        raise ConfigError(
            f"{source}: YAML aliases expand {written} nodes to {'over 10^12' if expanded >= cap else expanded}: "
            f"refused (at most {ALIAS_RATIO}x the document plus {ALIAS_FLOOR:,})"
        )


def _trail(trail: Any) -> str:
    steps: list[Any] = []
    while trail is not None:
        trail, step = trail
        steps.append(step)
    out = ""
    for step in reversed(steps):
        out += f"[{step}]" if isinstance(step, int) else ("." if out else "") + _key(str(step))
    return out or "config"


def _parse(text: str, source: str) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _inspect(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def loads(text: str, source: str = "<config>") -> Config:
    # Building a config allocates hundreds of thousands of objects and frees none of them: the
    # cyclic collector's passes over them find nothing and cost 40% of the load (10,000 nodes).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _loads(text, source)
    finally:
        if collecting:
            gc.enable()


def _loads(text: str, source: str) -> Config:
    try:
        data = _parse(text, source)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(_one_line(f"{source}:{where}: not valid YAML: {problem}")) from None
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - PyYAML's constructors fail in many ways on odd scalars (!!int abc, !!int "")
        raise ConfigError(_one_line(f"{source}: not valid YAML: {type(e).__name__}: {e}")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with a `pools` list")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        try:
            root = yaml.compose(text, Loader=_Loader)  # only now: lines cost nothing on a good config
        except Exception:  # noqa: BLE001 - it parsed once; without lines the errors still name key paths
            root = None
        first, lines = _format(e, root, source)
        raise ConfigError(first, lines) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        # A validator that failed in a way pydantic does not wrap: still one line, never a traceback.
        raise ConfigError(_one_line(f"{source}: cannot use this config: {type(e).__name__}: {e}")) from None


def load(path: str | os.PathLike[str] | None) -> Config:
    path = path or os.environ.get("R53LB_CONFIG")
    if not path:
        raise ConfigError("no config file: pass -c/--config or set R53LB_CONFIG")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # bounded: `-c /dev/zero` must not eat the memory
    except OSError as e:
        raise ConfigError(_one_line(f"{path}: cannot read: {e.strerror or e}")) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB: not a config file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "save the file as UTF-8"
        ) from None
    return loads(text, str(path))
