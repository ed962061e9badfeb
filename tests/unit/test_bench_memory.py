"""The benchmarks' peak-memory sampler counts each address space once."""

import subprocess
import sys
import time

from bench.memory import PeakRss

# Allocates and touches ~300 MiB, then forks a child that sleeps without exec'ing anything (it shares the parent's
# pages, and reports their resident size as its own) and a child that execs a fresh interpreter (memory of its own).
PARENT = """
import os, subprocess, sys, time
block = bytearray(300 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
fresh = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
if os.fork() == 0:
    time.sleep(3)
    os._exit(0)
print("ready", flush=True)
time.sleep(3)
fresh.wait()
"""


def test_a_forked_child_that_shares_its_parents_memory_is_not_counted_twice():
    process = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    with PeakRss(process.pid, every=0.05) as peak:
        assert process.stdout.readline().strip() == "ready"
        time.sleep(1)
        process.wait()
    assert peak.own >= 300
    # the exec'ed interpreter adds its own few MiB; the fork, sharing the parent's 300 MiB, adds nothing
    assert peak.own < peak.tree < peak.own + 150, (peak.own, peak.tree)
