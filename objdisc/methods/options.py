"""Methods own their options: a method is a frozen dataclass whose fields are its options.

Each field is declared with :func:`option`: its default, a help text, a range check and,
optionally, the choices it takes and a short name for sweep folders. Everything else reads the
fields instead of repeating them: the CLI makes one flag per option name (``--k-patches``), the
sweep a grid axis, the table the "options that differ from the defaults", the journal and
``run.json`` the method's settings. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from objdisc.errors import OptionError

Check = Callable[[Any], str | None]  # a value -> why it is refused, or None


@dataclass(frozen=True)
class OptionInfo:
    """One option of a method, as declared.

    Attributes:
        name: the field name (``k_patches``); the CLI flag is ``--k-patches``.
        type: ``int``, ``float``, ``str`` or ``bool``.
        default: the method's default.
        help: one line for ``--help``, with the unit where there is one.
        checks: range checks, each returning why a value is refused (or ``None``).
        choices: the values a ``str`` option takes, or ``None``.
        short: short name for sweep folder names (``gb`` -> ``_gb0.1``), or ``None`` (the name).
        decides: whether the value decides the objects (the journal's settings hold it); ``False``
            for a choice of how to compute the same answer (an eigen-solver), kept in ``run.json``
            only, so that a run resumes whichever was taken.
    """

    name: str
    type: type
    default: Any
    help: str
    checks: tuple[Check, ...] = ()
    choices: tuple[str, ...] | None = None
    short: str | None = None
    decides: bool = True

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--k-patches``."""
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """The value converted to the option's type, or an :class:`OptionError` naming the flag.

        Raises:
            OptionError: a value of the wrong type, outside the option's range or choices.
        """
        try:
            if self.type is bool:
                if not isinstance(value, bool):
                    raise TypeError
                converted: Any = value
            elif self.type is int:
                if isinstance(value, bool) or not float(value).is_integer():
                    raise TypeError
                converted = int(value)
            elif self.type is float:
                if isinstance(value, bool):
                    raise TypeError
                converted = float(value)
            else:
                converted = str(value)
        except (TypeError, ValueError):
            raise OptionError(f"{self.flag} takes {self.type.__name__} values, got {value!r}") from None
        if self.choices is not None and converted not in self.choices:
            raise OptionError(f"{self.flag} takes one of {', '.join(self.choices)}, got {converted!r}")
        for check in self.checks:
            why = check(converted)
            if why is not None:
                raise OptionError(f"{self.flag} {why}, got {converted!r}")
        return converted


def option(
    default: Any,
    help: str,
    *,
    checks: Sequence[Check] = (),
    choices: Sequence[str] | None = None,
    short: str | None = None,
    decides: bool = True,
) -> Any:
    """Declare a method option: a dataclass field with its help text and checks.

    Args:
        default: the default value (its type is the option's type).
        help: one line: what it does, its unit, its source ("LOST's k").
        checks: e.g. ``[finite, at_least(1)]``.
        choices: the values a string option takes.
        short: short name in sweep folder names.
        decides: ``False`` for an option that only chooses how the same objects are computed
            (:class:`OptionInfo`).
    """
    meta = {"objdisc": {"help": help, "checks": tuple(checks), "choices": tuple(choices) if choices else None}}
    meta["objdisc"]["short"] = short
    meta["objdisc"]["decides"] = decides
    return dataclasses.field(default=default, metadata=meta)


def options_of(cls: type) -> list[OptionInfo]:
    """The options a method class declares, in field order."""
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("objdisc")
        if meta is None:
            continue
        kind = type(f.default)
        out.append(
            OptionInfo(
                f.name, kind, f.default, meta["help"], meta["checks"], meta["choices"], meta["short"], meta["decides"]
            )
        )
    return out


def check_options(instance: Any) -> None:
    """Check every option of a method instance (call from ``__post_init__``).

    Raises:
        OptionError: the first option whose value is refused, naming its flag.
    """
    for info in options_of(type(instance)):
        converted = info.check(getattr(instance, info.name))
        object.__setattr__(instance, info.name, converted)


def finite(value: float) -> str | None:
    """Refuse NaN and infinities."""
    return None if math.isfinite(value) else "must be a finite number"


def at_least(low: float) -> Check:
    """Refuse values below ``low``."""

    def check(value: float) -> str | None:
        return None if value >= low else f"must be at least {low:g}"

    return check


def positive(value: float) -> str | None:
    """Refuse values <= 0."""
    return None if value > 0 else "must be > 0"


def cosine(value: float) -> str | None:
    """Refuse a cosine-similarity threshold outside ``[-1, 1]`` (above 1 no pair is linked, below -1
    every pair is)."""
    return None if -1.0 <= value <= 1.0 else "is a cosine similarity: it must lie in [-1, 1]"


def below_one(value: float) -> str | None:
    """Refuse values of 1 or more (a weight that must stay below a linked pair's weight 1)."""
    return None if value < 1 else "must be below 1 (the weight of a linked pair)"


def unit_interval(value: float) -> str | None:
    """Refuse values outside ``[0, 1]`` (a share of an area)."""
    return None if 0 <= value <= 1 else "is a share: it must lie in [0, 1]"


def in_open_unit(value: float) -> str | None:
    """Refuse values outside ``(0, 1)``."""
    return None if 0 < value < 1 else "must lie strictly between 0 and 1"


__all__ = [
    "OptionInfo",
    "at_least",
    "below_one",
    "check_options",
    "cosine",
    "finite",
    "in_open_unit",
    "option",
    "options_of",
    "positive",
    "unit_interval",
]
