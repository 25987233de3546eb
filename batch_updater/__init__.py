"""Apply Amazon Cognito login settings to many AWS Amplify apps (UpdateBackendConfig).

The public API: :func:`run_batch` (async) and :func:`run_batch_sync`, configured by
:class:`RunConfig`, returning a :class:`RunSummary` of :class:`RowResult` records.
"""

from ._version import __version__
from .errors import BatchUpdaterError, InputError, SetupError
from .results import RowResult, RunSummary, Status
from .rows import LoginSettings
from .runner import RunConfig, run_batch, run_batch_sync

__all__ = [
    "BatchUpdaterError",
    "InputError",
    "LoginSettings",
    "RowResult",
    "RunConfig",
    "RunSummary",
    "SetupError",
    "Status",
    "__version__",
    "run_batch",
    "run_batch_sync",
]
