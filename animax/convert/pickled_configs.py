"""Inert stand-ins for the config objects that training frameworks pickle into checkpoints.

AniMer's Lightning checkpoints hold the hydra-composed omegaconf `DictConfig` under
`hyper_parameters.cfg`; older ones a yacs `CfgNode` or Lightning's `AttributeDict`. The
restricted unpickler maps those class names onto the plain containers below, so their content
loads as dicts, lists and scalars without importing omegaconf or yacs, and nothing a pickle
names outside the allow-list is ever called.

How omegaconf 2.x pickles (protocol 2): every node is `NEWOBJ` of its class, then `BUILD` with a
state dict; containers keep their children under `_content` (a dict for `DictConfig`, a list
for `ListConfig`), value nodes their value under `_val`, and all nodes a `_metadata` dataclass
(`ContainerMetadata` / `Metadata`, whose fields name `typing.Any`, builtin types and a
`collections.defaultdict`) and a `_parent` back-reference. Children are built before their
parent's `BUILD`, so a container can read its children's values when it is built.
Interpolations (`${a.b}`) stay strings; `resolve_interpolation` resolves the absolute ones.
"""

from __future__ import annotations

import re


class InertDict(dict):
    """What a pickled mapping config (yacs CfgNode, Lightning AttributeDict, omegaconf DictConfig)
    loads as: a dict of its content."""

    def __setstate__(self, state):
        # omegaconf: children under `_content` (None for a null node, a string for '???' or an
        # interpolation of the whole node). yacs flags (__immutable__, ...) are not config.
        content = state.get("_content") if isinstance(state, dict) else None
        if isinstance(content, dict):
            self.update({key: _value(node) for key, node in content.items()})


class InertList(list):
    """What an omegaconf ListConfig loads as: a list of its content."""

    def __setstate__(self, state):
        content = state.get("_content") if isinstance(state, dict) else None
        if isinstance(content, list):
            self.extend(_value(node) for node in content)


class InertValue:
    """An omegaconf value node (AnyNode, StringNode, ...): keeps only its value."""

    def __init__(self, value=None):
        self.value = value

    def __setstate__(self, state):
        self.value = state.get("_val") if isinstance(state, dict) else None


class InertMetadata:
    """omegaconf's node metadata (types, flags, resolver cache): not config, dropped."""

    def __setstate__(self, state):
        pass


def _value(node):
    return node.value if isinstance(node, InertValue) else node


# typing.Any appears only as a type annotation inside omegaconf metadata.
ANY_TYPE = object()

_OMEGACONF_VALUE_NODES = ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode")

PICKLED_CONFIG_GLOBALS = {
    **{(module, "CfgNode"): InertDict for module in ("yacs.config", "fvcore.common.config")},
    **{(module, "AttributeDict"): InertDict for module in (
        "pytorch_lightning.utilities.parsing", "lightning.fabric.utilities.data",
        "lightning_fabric.utilities.data")},
    ("omegaconf.dictconfig", "DictConfig"): InertDict,
    ("omegaconf.listconfig", "ListConfig"): InertList,
    **{("omegaconf.nodes", name): InertValue for name in _OMEGACONF_VALUE_NODES},
    ("omegaconf.base", "ContainerMetadata"): InertMetadata,
    ("omegaconf.base", "Metadata"): InertMetadata,
    ("typing", "Any"): ANY_TYPE,
}


def to_plain(tree):
    """The config as plain dicts, lists and scalars (the stand-in classes removed)."""
    if isinstance(tree, dict):
        return {key: to_plain(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [to_plain(value) for value in tree]
    return _value(tree)


_INTERPOLATION = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")


def resolve_interpolation(root, value, max_depth=16):
    """`${a.b.c}` -> root[a][b][c] (followed through chains); any other value is returned as is.

    Only absolute references resolve; resolver calls (`${oc.env:X}`, `${hydra:...}`) and
    relative ones stay strings, as they need the application that wrote them.
    """
    for _ in range(max_depth):
        match = _INTERPOLATION.match(value) if isinstance(value, str) else None
        if match is None:
            return value
        node = root
        for key in match.group(1).split("."):
            if not isinstance(node, dict) or key not in node:
                return value
            node = node[key]
        value = node
    raise ValueError(f"interpolation chain deeper than {max_depth} at {value!r}")


def find(tree, *keys):
    """tree[k1][k2]... (each key as given, lower- or upper-case) with interpolations resolved,
    or None where a key is absent."""
    node = tree
    for key in keys:
        node = resolve_interpolation(tree, node)
        if not isinstance(node, dict):
            return None
        key = next((k for k in (key, key.lower(), key.upper()) if k in node), None)
        if key is None:
            return None
        node = node[key]
    return resolve_interpolation(tree, node)

