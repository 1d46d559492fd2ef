"""YAML reading and writing for configs.

PyYAML follows YAML 1.1, which reads ``1e-5`` as a string; configs are full of
learning rates written that way, so the loader resolves them as floats (YAML 1.2).
PyYAML also keeps the last of two equal keys in a mapping and drops the first
without a word; a config with two ``optimizer:`` sections is an error here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from kubetune.errors import ConfigError

_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    pass


def _check_duplicate_keys(node: yaml.Node | None, source: str, path: str = "") -> None:
    """Refuse a mapping that names a key twice, naming the dotted key and both lines."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            dotted = f"{path}.{key.value}" if path else str(key.value)
            line = key.start_mark.line + 1
            first = seen.get((key.tag, key.value))
            if first is not None:
                raise ConfigError(
                    f"{source}:{line}: duplicate key `{dotted}` (first on line {first}); "
                    "keep one of them: YAML would silently drop the first",
                    path=dotted,
                )
            seen[(key.tag, key.value)] = line
            _check_duplicate_keys(value, source, dotted)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(item, source, f"{path}[{index}]")


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text; a syntax error or a duplicate key becomes a ConfigError naming ``source``."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        _check_duplicate_keys(node, source)
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}", path=source) from None
    finally:
        loader.dispose()


def read_yaml_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", path=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}", path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8", path=str(path)) from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a mapping of sections, but got {type(data).__name__}", path=str(path)
        )
    return data


def dump_yaml(data: Any) -> str:
    """Serialise plain data as block-style YAML, keys in their given order."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
