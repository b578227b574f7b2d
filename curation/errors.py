"""Every error the pipeline reports to a user, defined once.

The CLI turns a :class:`CurateError` into one line (``curate: error: ...``, exit 2):
each names the key, path or model at fault and the fix. This module imports nothing
from the project, so any layer (config, stages, models, the CLI) can raise these
without importing another layer.
"""
from __future__ import annotations


class CurateError(Exception):
    """Base of the errors the CLI reports as one line instead of a traceback."""


class ConfigError(CurateError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class InputError(CurateError, ValueError):
    """The input specification names nothing readable, or an input stage is missing or broken."""


class ModelLoadError(CurateError, RuntimeError):
    """A model could not be built or its weights could not be found."""


class StageError(CurateError, RuntimeError):
    """A stage failed; its directory stays without a completion marker."""


class ReportError(CurateError, RuntimeError):
    """The run directory cannot be reported on (nothing there, or a broken metric file)."""
