"""Apply Amazon Cognito login settings to many AWS Amplify apps (UpdateBackendConfig).

The public API: :func:`run_batch` (async) and :func:`run_batch_sync`, configured by
:class:`RunConfig`, returning a :class:`RunSummary` of :class:`RowResult` records;
:class:`RunControl` stops a run from outside; :class:`Shard` splits a job over workers.
"""

from ._version import __version__
from .control import RunControl, StopReason
from .errors import BatchUpdaterError, InputError, SetupError
from .progress import ProgressSnapshot
from .results import RowResult, RunSummary, Status
from .rows import LoginSettings
from .runner import RunConfig, run_batch, run_batch_sync
from .shard import Shard

__all__ = [
    "BatchUpdaterError",
    "InputError",
    "LoginSettings",
    "ProgressSnapshot",
    "RowResult",
    "RunConfig",
    "RunControl",
    "RunSummary",
    "SetupError",
    "Shard",
    "Status",
    "StopReason",
    "__version__",
    "run_batch",
    "run_batch_sync",
]
