"""Declaring run options once, beside the component that owns them.

An *option group* is a frozen dataclass whose fields are declared with :func:`option`
and decorated with :func:`group`. From that one declaration come the run-config key
(the field name in kebab case), the CLI flag, the help text, the default, the type and
the check; ``fl_sim.options`` composes every group into the run's settings and
generates the flags and the configuration reference from them.

Components receive their group as a typed, validated object (``settings.get(DCGANOptions)``)
instead of reading ``config["gan-d-lr"]`` with a cast. A group validates each value
alone when it is built; :meth:`Options.validate` checks what involves other settings,
as pfl-research's option dataclasses do in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

Check = Callable[[Any], "str | None"]
"""Return why a value is invalid (naming what is allowed), or None."""

KINDS: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}
G = TypeVar("G", bound="Options")


class UsageError(ValueError):
    """Bad input from the user: ``str()`` is one line naming where (a flag) and why.

    Every error the CLI answers with exit code 2 derives from it, so the CLI catches
    this one type, once.

    Parameters
    ----------
    where : str
        The flag or argument at fault (``--lr``, ``RUN_DIR``), or "" for none.
    message : str
        What is wrong, with the allowed values where there is a list of them.
    """

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class OptionError(UsageError):
    """A setting is invalid; names the option's flag (or the key if it has none)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.flag = flag_of(key)
        super().__init__(self.flag, message)


@dataclass(frozen=True)
class Spec:
    """Everything declared about one option.

    Parameters
    ----------
    key : str
        Run-config key (kebab case), as Flower's ``context.run_config`` holds it.
    flag : str
        CLI flag.
    help : str
        One phrase for ``--help`` and the configuration reference.
    default : bool, int, float or str
        The default; its type is the option's type.
    check : callable, optional
        Validity of a value alone (see :data:`Check`).
    task_default : bool
        0 means "the selected task's own default" (``Task.defaults``).
    hidden : bool
        Set by the harness itself, never a flag (``run-dir``).
    """

    key: str
    flag: str
    help: str
    default: Any
    check: Check | None = None
    task_default: bool = False
    hidden: bool = False

    @property
    def kind(self) -> type:
        """The option's type: that of its default."""
        return type(self.default)

    @property
    def attribute(self) -> str:
        """The field name in its group."""
        return self.key.replace("-", "_")


_SPECS: dict[str, Spec] = {}
"""Every declared option by key, filled as groups are defined."""


def option(default: Any, help: str, *, flag: str | None = None, check: Check | None = None,
           task_default: bool = False, hidden: bool = False) -> Any:
    """Declare one field of an option group (see :class:`Spec` for the arguments)."""
    return dataclasses.field(default=default, metadata={"option": {
        "help": help, "flag": flag, "check": check, "task_default": task_default,
        "hidden": hidden}})


def group(title: str) -> Callable[[type[G]], type[G]]:
    """Class decorator: make an :class:`Options` subclass a frozen, declared group.

    Parameters
    ----------
    title : str
        Heading of the group in ``--help`` and in the configuration reference.
    """

    def decorate(cls: type[G]) -> type[G]:
        cls = dataclass(frozen=True, kw_only=True)(cls)
        specs = []
        for field in dataclasses.fields(cls):
            declared = field.metadata.get("option")
            if declared is None:
                raise TypeError(f"{cls.__name__}.{field.name} is not declared with option()")
            name = field.type if isinstance(field.type, str) else field.type.__name__
            kind = KINDS.get(name)
            if kind is None or (type(field.default) is not kind):
                raise TypeError(f"{cls.__name__}.{field.name}: type {field.type} and default "
                                f"{field.default!r} must agree (bool, int, float or str)")
            key = field.name.replace("_", "-")
            if key in _SPECS:
                raise ValueError(f"option {key!r} is declared twice")
            spec = Spec(key=key, flag=declared["flag"] or f"--{key}", help=declared["help"],
                        default=field.default, check=declared["check"],
                        task_default=declared["task_default"], hidden=declared["hidden"])
            _SPECS[key] = spec
            specs.append(spec)
        cls.title = title
        cls._specs = tuple(specs)
        return cls

    return decorate


class Settings(Protocol):
    """What a component sees of a run's settings: the selected names and every group."""

    @property
    def task(self) -> str:
        """The ``--task`` name."""

    @property
    def strategy(self) -> str:
        """The ``--strategy`` name."""

    def get(self, group: type[G]) -> G:
        """The validated values of ``group``."""


class Options:
    """Base of an option group; declare fields with :func:`option`, decorate with :func:`group`."""

    title: ClassVar[str] = ""
    _specs: ClassVar[tuple[Spec, ...]] = ()

    @classmethod
    def specs(cls) -> tuple[Spec, ...]:
        """The group's options in declaration order."""
        return cls._specs

    @classmethod
    def from_values(cls: type[G], values: Mapping[str, Any]) -> G:
        """Build the group from kebab-case ``values`` (missing keys: defaults), checked.

        Raises
        ------
        OptionError
            For the first value of the wrong type or outside what its check allows.
        """
        kwargs = {}
        for spec in cls._specs:
            value = coerce(spec.key, values.get(spec.key, spec.default), spec.kind)
            problem = None
            if spec.check is not None and not (spec.task_default and value == 0):
                problem = spec.check(value)
            if problem:
                raise OptionError(spec.key, problem)
            kwargs[spec.attribute] = value
        return cls(**kwargs)

    def values(self) -> dict[str, Any]:
        """The group as kebab-case run-config entries."""
        return {spec.key: getattr(self, spec.attribute) for spec in self._specs}

    def validate(self, settings: Settings) -> None:
        """Check what involves other settings; raise :class:`OptionError`. Default: nothing."""

    def preflight(self, settings: Settings) -> None:
        """Check the files a run will read, once, before its folder is claimed.

        Unlike :meth:`validate` (run wherever settings are built, in every process), this
        may read whole data sets; the CLI calls it for the groups the selected task
        reads. Raise :class:`OptionError`. Default: nothing.
        """


def spec_of(key: str) -> Spec | None:
    """The declaration of ``key``, if any group declares it."""
    return _SPECS.get(key)


def flag_of(key: str) -> str:
    """The CLI flag of a run-config key (the key itself if no group declares it)."""
    spec = _SPECS.get(key)
    return spec.flag if spec else key


def coerce(key: str, value: Any, kind: type) -> Any:
    """Convert ``value`` to ``kind`` (strings come from flags, TOML and Flower configs).

    Raises
    ------
    OptionError
        If the value cannot be read as ``kind``.
    """
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return _finite(key, value)
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            raise ValueError
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        converted = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise OptionError(key, f"expected {kind.__name__}, got {value!r}") from None
    return _finite(key, converted)


def _finite(key: str, value: Any) -> Any:
    """Refuse inf and nan: every numeric option means a finite quantity."""
    if isinstance(value, float) and not math.isfinite(value):
        raise OptionError(key, f"must be a finite number, got {value!r}")
    return value


# --- checks ---------------------------------------------------------------------------
def at_least(low: float) -> Check:
    """Values >= ``low``."""
    return lambda v: None if v >= low else f"must be >= {low:g} (got {v})"


def positive(v: Any) -> str | None:
    """Values > 0."""
    return None if v > 0 else f"must be > 0 (got {v})"


def fraction(v: Any) -> str | None:
    """Values in (0, 1]."""
    return None if 0 < v <= 1 else f"must be in (0, 1] (got {v})"


def unit_interval(v: Any) -> str | None:
    """Values in [0, 1] (a probability, a decay)."""
    return None if 0 <= v <= 1 else f"must be in [0, 1] (got {v})"


def open_unit_interval(v: Any) -> str | None:
    """Values in (0, 1) (delta)."""
    return None if 0 < v < 1 else f"must be in (0, 1) (got {v})"


def below_one(v: Any) -> str | None:
    """Values in [0, 1) (an EMA decay, Adam's beta1)."""
    return None if 0 <= v < 1 else f"must be in [0, 1) (got {v})"


def one_of(names: Sequence[str] | Callable[[], Sequence[str]]) -> Check:
    """Values among ``names`` (a sequence, or a callable returning one)."""

    def check(v: Any) -> str | None:
        allowed = list(names() if callable(names) else names)
        return None if v in allowed else f"unknown value {v!r}; allowed: {', '.join(allowed)}"

    check.allowed = names  # type: ignore[attr-defined]  # for the configuration reference
    return check


def folder_name(v: Any) -> str | None:
    """A plain folder name (no path), or empty."""
    if v == "" or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
        return None
    return f"must be a plain folder name (letters, digits, '.', '_', '-'), got {v!r}"


def allowed_values(spec: Spec) -> list[str] | None:
    """The allowed values of a ``one_of`` option, for docs and help; None otherwise."""
    names = getattr(spec.check, "allowed", None)
    if names is None:
        return None
    return [str(n) for n in (names() if callable(names) else names)]
