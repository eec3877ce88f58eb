"""Test-only plugin: this process plays a tuning worker on another host.

``OCTBENCH_TEST_HOST=NAME`` makes ``socket.gethostname()`` answer NAME, so the trials this worker
starts name another machine and only their heartbeat can tell that it died.
``OCTBENCH_TEST_HEARTBEAT=INTERVAL:GRACE`` shortens the heartbeat (seconds) so a test need not
wait a minute for a trial to turn stale.
"""

from __future__ import annotations

import os
import socket

from octbench.tuning import storage

if os.environ.get("OCTBENCH_TEST_HOST"):
    socket.gethostname = lambda: os.environ["OCTBENCH_TEST_HOST"]
if os.environ.get("OCTBENCH_TEST_HEARTBEAT"):
    interval, grace = os.environ["OCTBENCH_TEST_HEARTBEAT"].split(":")
    storage.HEARTBEAT_INTERVAL_S, storage.HEARTBEAT_GRACE_S = int(interval), int(grace)
