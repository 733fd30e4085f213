"""minigpt: from raw text to a GPT you can chat with, on a laptop, showing every stage."""
import os as _os
import time as _time


def _others_running() -> float:
    """How many other threads want a CPU right now: the fewest runnable tasks in /proc/loadavg over three reads
    a millisecond apart, less this one (an instantaneous count: the load average lags a minute behind, so it
    would still report the benchmark that just finished). Elsewhere: the 1-minute load average."""
    try:
        counts = []
        for _ in range(3):
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
            _time.sleep(0.001)
        return min(counts) - 1
    except (OSError, ValueError, IndexError):
        try:
            return _os.getloadavg()[0]
        except OSError:  # no load figure on this platform: assume the worst
            return float(_os.cpu_count() or 1)


def _choose_wait_policy() -> str:
    """How OpenMP's threads wait between torch's parallel ops, decided once, before torch loads its OpenMP runtime.

    Measured with the nanoGPT CPU recipe on 2 cores (ms/iter): idle machine, spinning (libgomp's default) 30.5,
    PASSIVE (sleeping) 46; with one other busy process, PASSIVE 59, spinning 182 to more than 500 (a spinning
    thread waits for a peer the OS has descheduled). So: spin when no other program is running, sleep otherwise.
    A setting of the user's wins."""
    if "OMP_WAIT_POLICY" in _os.environ or "GOMP_SPINCOUNT" in _os.environ:
        return "user"
    if _others_running() >= 0.5:
        _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return "passive"
    return "spin"


OMP_WAIT = _choose_wait_policy()

__version__ = "0.1.0"
