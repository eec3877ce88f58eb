"""Test-only plugin: deliver a signal inside one atomic file write of octbench.

``OCTBENCH_FAULT="WHEN:FILE:N:SIGNAL"`` with WHEN one of

* ``mid-write``: the temp file holds half of the new content (as if the process died while
  writing it);
* ``before-replace``: the temp file is complete and synced, not yet renamed;
* ``after-replace``: the new file is in place, nothing after it has run;

FILE the target's name (``record.json``, ``resume.pt``, ``predictions.npz``, ``best.pt``), N the
N-th write of such a file in this process (1-based) and SIGNAL ``KILL``, ``INT`` or ``TERM``.
Writes go through ``octbench.fileio.atomic_write``, which ends in ``os.replace``; the hook wraps
``os.replace`` for those targets only.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

_spec = os.environ.get("OCTBENCH_FAULT", "")
if _spec:
    _when, _target, _nth, _signal = _spec.split(":")
    assert _when in ("mid-write", "before-replace", "after-replace"), _spec
    _nth, _signum = int(_nth), getattr(signal, f"SIG{_signal}")
    _seen = 0
    _replace = os.replace

    def _faulty_replace(src, dst, *args, **kwargs):
        global _seen
        if Path(dst).name != _target:
            return _replace(src, dst, *args, **kwargs)
        _seen += 1
        if _seen != _nth:
            return _replace(src, dst, *args, **kwargs)
        if _when == "mid-write":
            os.truncate(src, os.path.getsize(src) // 2)
        if _when == "after-replace":
            _replace(src, dst, *args, **kwargs)
        os.kill(os.getpid(), _signum)
        # INT and TERM raise KeyboardInterrupt in the line above; getting here is a test bug.
        raise AssertionError(f"signal {_signal} was not delivered at once")

    os.replace = _faulty_replace
