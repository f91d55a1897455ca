"""Object-discovery methods: patch features of a batch -> ``K`` objects per image.

:data:`METHODS` maps names to method classes, each one file here: a frozen dataclass whose
fields are its options (:mod:`objdisc.methods.options`), called as
``method(feats, grid_hw, patch_size, image_hws) -> ObjectsBatch`` (:mod:`objdisc.methods.base`).
Adding a method is that file plus one entry below; the CLI, ``sweep``, ``table``, ``visualize``,
the journal and ``run.json`` read everything else from the class (the key is the class's
``name``). Nothing here imports torch until a method runs.
"""

from __future__ import annotations

from typing import Any

from objdisc.errors import OptionError
from objdisc.methods.base import Method
from objdisc.methods.dinoseg import DinoSeg
from objdisc.methods.found import Found
from objdisc.methods.lost import Lost
from objdisc.methods.maskcut import MaskCut
from objdisc.methods.options import OptionInfo, options_of
from objdisc.methods.promerge import ProMerge
from objdisc.methods.tokencut import TokenCut

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (Lost, TokenCut, DinoSeg, MaskCut, ProMerge, Found)}


def method_class(name: str) -> type[Method]:
    """The class registered under ``name``.

    Raises:
        OptionError: unknown name, listing the known ones.
    """
    if name not in METHODS:
        raise OptionError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def owners(option_name: str) -> list[str]:
    """The registered methods that have an option of this name."""
    return [name for name, cls in METHODS.items() if any(o.name == option_name for o in options_of(cls))]


def check_method_options(name: str, **options: Any) -> None:
    """Check a method's options as :func:`make_method` would, without building the method.

    Raises:
        OptionError: unknown method, an option the method does not have (naming the methods
            that have it), or a value the option refuses.
    """
    declared = {o.name: o for o in options_of(method_class(name))}
    for key, value in options.items():
        if key not in declared:
            flag = "--" + key.replace("_", "-")
            having = owners(key)
            where = f"an option of {', '.join(having)}" if having else "no method's option"
            raise OptionError(f"{flag} is {where}; {name} does not take it")
        declared[key].check(value)


def make_method(name: str, **options: Any) -> Method:
    """Build a method from its name and the options given (the others keep their defaults).

    Raises:
        OptionError: unknown method, an option the method does not have (naming the methods
            that have it), or a value the option refuses.
    """
    check_method_options(name, **options)
    return method_class(name)(**options)


def all_options() -> dict[str, list[tuple[str, OptionInfo]]]:
    """Every option name of every registered method -> ``[(method, info), ...]``, in registry order.

    Raises:
        OptionError: two methods declare one option name with different types (one flag must
            parse for both).
    """
    out: dict[str, list[tuple[str, OptionInfo]]] = {}
    for name, cls in METHODS.items():
        for info in options_of(cls):
            out.setdefault(info.name, []).append((name, info))
    for key, items in out.items():
        if len({info.type for _, info in items}) > 1:
            raise OptionError(f"methods {', '.join(n for n, _ in items)} declare --{key} with different types")
    return out


__all__ = [
    "METHODS",
    "DinoSeg",
    "Lost",
    "MaskCut",
    "Method",
    "TokenCut",
    "all_options",
    "check_method_options",
    "make_method",
    "method_class",
    "owners",
]
