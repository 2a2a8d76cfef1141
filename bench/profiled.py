"""``python bench/profiled.py OUT -m MODULE [ARGS]`` or ``... OUT SCRIPT [ARGS]``: run a module or
script under cProfile counting CPU time (``time.process_time``, so time blocked in the event
loop's poll is not counted as it is with the default wall clock), and write the stats to OUT
when it exits (also on SIGINT's KeyboardInterrupt). Counting starts at SIGUSR1 (so that start-up and
warm-up are left out), or at once with ``PROFILE_NOW=1``."""

from __future__ import annotations

import cProfile
import os
import runpy
import signal
import sys
import time
from pathlib import Path


def main() -> None:
    out, *rest = sys.argv[1:]
    module = rest[0] == "-m"
    target = rest[1] if module else rest[0]
    sys.argv = [target, *rest[2 if module else 1:]]
    if not module:
        sys.path.insert(0, str(Path(target).resolve().parent))
    profile = cProfile.Profile(time.process_time)
    signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
    try:
        if os.environ.get("PROFILE_NOW"):
            profile.enable()
        if module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
