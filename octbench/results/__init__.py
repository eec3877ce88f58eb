"""Run records and the results store.

One immutable :class:`RunRecord` per run (:mod:`~octbench.results.record`), written once as JSON,
atomically, beside its artifacts by :class:`ResultsStore` (:mod:`~octbench.results.store`: the
run's folder, its files and its lock); checkpoints are read without ever running their code
(:mod:`~octbench.results.checkpoint`), and :func:`load_results` gives every record below a folder
as a DataFrame (:mod:`~octbench.results.frame`).

Must not import: config, the runner, engine, report or tuning: a record is plain data (torch only
inside checkpoint functions).
"""

from octbench.results.checkpoint import UnsafeCheckpoint, load_checkpoint, read_state
from octbench.results.frame import load_results
from octbench.results.record import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    MAX_HISTORY,
    SCHEMA_VERSION,
    SKIPPED,
    STATUSES,
    RunRecord,
    nan_to_none,
    read_record,
)
from octbench.results.store import (
    LOW_DISK_BYTES,
    ResultsStore,
    RunLocked,
    StorageError,
    check_writable,
    robustness_member,
    unwritable,
)

__all__ = ["COMPLETE", "FAILED", "INTERRUPTED", "SKIPPED", "STATUSES", "SCHEMA_VERSION"]
__all__ += ["MAX_HISTORY", "RunRecord", "nan_to_none", "read_record"]
__all__ += ["LOW_DISK_BYTES", "ResultsStore", "RunLocked", "StorageError", "check_writable"]
__all__ += ["robustness_member", "unwritable"]
__all__ += ["UnsafeCheckpoint", "load_checkpoint", "read_state", "load_results"]
