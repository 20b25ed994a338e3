"""Keeps a CPU busy for SECONDS (an environment variable, 8 by default) and allocates some
memory, so the system monitor has something to see."""
import os
import time

seconds = float(os.environ.get("SECONDS_TO_RUN", "8"))
hold = bytearray(64 * 1024 * 1024)
end = time.time() + seconds
n = 0
while time.time() < end:
    n += sum(i * i for i in range(20000))
print("busy loop done", len(hold), n > 0, flush=True)
