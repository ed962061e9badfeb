"""Peak memory of a process tree, sampled while a benchmark phase runs (shared by the benchmarks)."""

from __future__ import annotations

import threading

import psutil


class PeakRss:
    """Samples every `every` seconds, in a thread, the resident memory of process `pid` and all its children (Spark's
    JVM, its Python workers) while the `with` block runs. Afterwards: `tree`, `own` (the process alone) and `jvm`
    (its Java children), each the peak in MiB."""

    def __init__(self, pid: int, every: float = 0.2):
        self.pid, self.every = pid, every
        self.tree = self.own = self.jvm = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        root = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                children = [child for child in root.children(recursive=True) if child.is_running()]
                # One reading per process per sample: a child is compared with its parent as both were then.
                memory = {process.pid: process.memory_info() for process in (root, *children)}
                own = memory[root.pid].rss
                sizes = [
                    (child.name(), memory[child.pid].rss) for child in children if not _shares_parent(child, memory)
                ]
                self.tree = max(self.tree, round((own + sum(rss for _, rss in sizes)) / 2**20))
                self.own = max(self.own, round(own / 2**20))
                self.jvm = max(self.jvm, round(sum(rss for name, rss in sizes if name == "java") / 2**20))
            except psutil.Error:
                pass  # the process or a child ended between listing and reading it
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _shares_parent(child: psutil.Process, memory: dict) -> bool:
    """Whether `child` still maps exactly its parent's memory (the same virtual size): a child between fork (or
    posix_spawn) and exec reports the parent's resident pages, which it shares, as its own, e.g. each of the `chmod`
    helpers Hadoop starts from Spark's JVM for every file it writes; summing it doubled the JVM in a sample (a 4.6 GB
    JVM showed as a 9.4 GB tree). A child that has mapped anything of its own (an exec, an import) is counted.
    `memory`: this sample's memory_info by pid."""
    parent = memory.get(child.ppid())  # every child's parent is in the sampled tree
    return parent is not None and memory[child.pid].vms == parent.vms
