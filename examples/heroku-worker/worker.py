"""A queue worker stand-in: it wakes up, does a unit of work, and says so on stdout."""
import os
import time

print(f"worker starting in {os.getcwd()} (pid {os.getpid()})", flush=True)
tick = 0
while True:
    tick += 1
    print(f"worker tick {tick}", flush=True)
    time.sleep(0.5)
