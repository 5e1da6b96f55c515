"""User-facing errors.

A `CytorayError` is a problem with the user's input (a file, a folder, a config key) that
the command line reports as one line, without a traceback. Its message names the thing
that is wrong and says what to do about it.
"""

from __future__ import annotations


class CytorayError(Exception):
    """An input problem the user can fix; printed as one line by the CLI."""


class ConfigError(CytorayError):
    """A configuration file or key is wrong (unknown key, bad value, incompatible options)."""


class DataError(CytorayError):
    """A dataset folder or file is unusable (missing, corrupt, too small, leaking across splits)."""


class TrainingError(CytorayError):
    """A training run failed in a way the user can act on (no optimiser step, a diverged loss)."""
