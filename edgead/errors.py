"""Errors a user can fix, as one tree.

    EdgeadError                  a problem the user can fix (CLI: one red line, exit 2)
    ├── ConfigError              unknown detector/option/key, bad value in a config or profile
    ├── DataError                missing folder, unreadable image, bad mask, NaN in a table, ...
    ├── BundleError              bad magic, hash mismatch, missing member, path traversal, schema
    ├── BackendUnavailableError  a backend/device is not installed or fails to initialise
    │   └── ReferenceMismatchError  a backend's outputs differ from the bundle's reference
    ├── BackendRuntimeError      a loaded graph failed while running (names backend and input)
    ├── ExportError              parity check failed, unsupported target for a detector
    └── NotFittedError           score/export called before fit

Anything else raised by edgead is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgeadError(Exception):
    """A problem the user can fix; the message says what happened and what to do."""


class ConfigError(EdgeadError):
    """An unknown name or an invalid value in a config, option or profile."""


class DataError(EdgeadError):
    """Input data that cannot be used (missing, unreadable, wrong shape, non-finite)."""


class BundleError(EdgeadError):
    """A bundle that is malformed, tampered with, or does not fit this runtime."""


class BackendUnavailableError(EdgeadError):
    """A requested backend or device is missing or failed to initialise."""


class ReferenceMismatchError(BackendUnavailableError):
    """A backend whose outputs on the bundle's reference inputs differ beyond tolerance."""


class BackendRuntimeError(EdgeadError):
    """A backend that loaded its graph but failed while running it (ONNX Runtime, OpenVINO or
    TensorRT's own exception, chained); the message names the backend and the graph input."""


class ExportError(EdgeadError):
    """An export that cannot be made or failed its parity check."""


class NotFittedError(EdgeadError):
    """A detector used before `fit`."""


def unknown_name_error(kind: str, name: str, known: Iterable[str]) -> ConfigError:
    """Build a ConfigError for an unknown name, with a difflib hint and the known names."""
    known_sorted = sorted(known)
    close = difflib.get_close_matches(name, known_sorted, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown {kind} '{name}'{hint} known: {', '.join(known_sorted)}")
