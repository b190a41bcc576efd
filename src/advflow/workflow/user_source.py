"""The light part of :mod:`advflow.models.user`, read while Snakemake parses the workflow (no torch): where a user's
model's factory module lives, and the error every check of a user's model raises."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class UserModelError(ValueError):
    """A model of the user's cannot be used; the message names the config key, the problem and the fix."""


@contextlib.contextmanager
def _working_directory_importable() -> Iterator[None]:
    """The run's working directory first on ``sys.path`` while importing (a module beside the config)."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def split_path(path: Any, where: str) -> tuple[str, str]:
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise UserModelError(f"{where}.module: {path!r} is not 'package.module:factory'; name the module to import "
                             "and, after a colon, the function or class in it that returns your nn.Module")
    module, attribute = path.split(":")
    return module, attribute


def source_file(path: str, where: str = "models.?") -> Path | None:
    """The file of the factory's module (its content is part of what a model depends on), found without importing
    the module itself; None for a module without a file."""
    module, _ = split_path(path, where)
    with _working_directory_importable():
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as err:
            raise UserModelError(f"{where}.module: cannot import {module!r} ({type(err).__name__}: {err}); it must be "
                                 f"importable from the run's working directory ({os.getcwd()}) or installed") from None
    if spec is None:
        raise UserModelError(f"{where}.module: no module named {module!r} (looked in the run's working directory "
                             f"{os.getcwd()} and the installed packages); put {module.replace('.', '/')}.py there or "
                             "install its package")
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and Path(origin).is_file() else None
