"""Reading back files that may come from someone else, without running their code.

A run folder, a checkpoint or a data set may have been sent by a colleague or an
attacker. Python's pickle runs whatever a file asks it to, so nothing here lets a file
name arbitrary code: tensor files load with ``torch.load(weights_only=True)`` (tensors,
numbers, strings, containers), and the one pickle format the harness must read (CIFAR-10's
python batches) goes through :class:`RestrictedUnpickler`, which admits only the builtin
containers, bytes, strings, numbers and NumPy arrays. Every refusal is a one-line
:class:`DamagedFile` naming the file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, BinaryIO

from fl_core.options import UsageError


class DamagedFile(UsageError):
    """A file that is damaged, of the wrong kind, or asks to run code; names the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        super().__init__("", f"{path}: {problem}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def load_tensors(path: str | Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure is a :class:`DamagedFile`.

    Parameters
    ----------
    what : str
        What the file should be, for the message ("a checkpoint", "round weights").
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DamagedFile(path, "no such file") from None
    except Exception as error:  # noqa: BLE001 - truncated, foreign or hostile: refuse
        if "weights only load failed" in str(error).lower():
            raise DamagedFile(path, f"refused to load: not {what} (it asks to run code or "
                                    f"build objects: {_unsupported(error)})") from None
        raise DamagedFile(path, f"cannot be read as {what} ({_first_line(error)})") from None


def _unsupported(error: BaseException) -> str:
    for line in str(error).splitlines():
        if "global" in line.lower() and ("unsupported" in line.lower() or "blocked" in line):
            return line.strip().rstrip(".")[:160]
    return _first_line(error)


ARRAY_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),
})
"""What a pickled NumPy array needs, and the text encoder Python 3 uses for bytes in
protocol-2 pickles; none of them can run code."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only containers, bytes, strings, numbers and NumPy arrays.

    Builtin containers and scalars need no global lookup in the pickle protocol, so the
    only globals admitted are the NumPy reconstructors in :data:`ARRAY_GLOBALS`; any other
    (``os.system``, ``builtins.eval``, a class) is refused before it is resolved.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}")


def load_restricted_pickle(handle: BinaryIO, path: str | Path, what: str) -> Any:
    """Unpickle ``handle`` with :class:`RestrictedUnpickler` (bytes keys, as Python 2 wrote).

    Raises
    ------
    DamagedFile
        If the file is truncated, not a pickle, or asks for anything outside
        :data:`ARRAY_GLOBALS`.
    """
    try:
        return RestrictedUnpickler(handle, encoding="bytes").load()
    except pickle.UnpicklingError as error:
        text = _first_line(error)
        if text.startswith("it asks for"):
            raise DamagedFile(path, f"refused to load: {text}, which {what} never "
                                    "contains") from None
        raise DamagedFile(path, f"not {what} ({text})") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as error:
        raise DamagedFile(path, f"not {what} (truncated or malformed: "
                                f"{_first_line(error)})") from None
