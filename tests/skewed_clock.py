"""`python -m tests.skewed_clock OFFSET_S ARGS...`: the `taskq` command in a process
whose wall clock (`time.time`) is OFFSET_S seconds off, as on a machine whose NTP has
drifted or a VM that paused; its monotonic clock is untouched.

(Debian's faketime would do it for the whole process, but with Python 3.11 its
`clock_nanosleep` and timed condition waits hang or fail with EINVAL.)"""

from __future__ import annotations

import sys
import time


def main() -> None:
    offset_s = float(sys.argv[1])
    real_time, real_time_ns = time.time, time.time_ns
    time.time = lambda: real_time() + offset_s  # type: ignore[assignment]
    time.time_ns = lambda: real_time_ns() + int(offset_s * 1e9)  # type: ignore[assignment]
    from taskq.cli import main as taskq

    sys.argv = ["taskq", *sys.argv[2:]]
    taskq()


if __name__ == "__main__":
    main()
