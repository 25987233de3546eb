"""Apply Amazon Cognito login settings to many AWS Amplify apps (UpdateBackendConfig).

The public API: :func:`run_batch` (async) and :func:`run_batch_sync`, configured by
:class:`RunConfig` (its settings grouped in :class:`Rate`, :class:`Retries`,
:class:`StopRules`, :class:`Accounts` and :class:`Output`), returning a :class:`RunSummary`
of :class:`RowResult` records;
:class:`RunControl` stops a run from outside; :class:`Shard` splits a job over workers.
"""

from ._version import __version__
from .config import Accounts, Output, Rate, Retries, RunConfig, StopRules
from .control import RunControl, StopReason
from .errors import BatchUpdaterError, InputError, SetupError
from .progress import ProgressSnapshot
from .results import RowResult, RunSummary, Status
from .rows import LoginSettings
from .runner import run_batch, run_batch_sync
from .shard import Shard

__all__ = [
    "Accounts",
    "BatchUpdaterError",
    "InputError",
    "LoginSettings",
    "Output",
    "ProgressSnapshot",
    "Rate",
    "Retries",
    "RowResult",
    "RunConfig",
    "RunControl",
    "RunSummary",
    "SetupError",
    "Shard",
    "Status",
    "StopReason",
    "StopRules",
    "__version__",
    "run_batch",
    "run_batch_sync",
]
