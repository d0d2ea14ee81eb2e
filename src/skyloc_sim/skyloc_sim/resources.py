"""CPU time and memory of node processes, sampled from /proc (Linux) by the graph runner.

``ResourceSampler`` follows named processes and their descendants in a thread (every
``period_s``): CPU seconds from /proc/<pid>/stat (utime + stime), resident memory from
/proc/<pid>/status (VmRSS, and VmHWM, the kernel's own peak). ``summary()`` gives, per name::

    {'cpu_s', 'cpu_percent_mean', 'peak_rss_mb', 'rss_first_mb', 'rss_last_mb', 'samples'}

A process that exits (or cannot be read) simply stops contributing: its last figures stay.
No ROS imports: the runner, the report and the tests use it alike.
"""

import json
import os
import threading
import time

CLOCK_TICKS = os.sysconf('SC_CLK_TCK') if hasattr(os, 'sysconf') else 100
MB = 1024.0 * 1024.0


def read_stat(pid):
    """(parent pid, CPU seconds user + system) of a process, or None if it is gone."""
    try:
        with open(f'/proc/{pid}/stat', 'rb') as stream:
            text = stream.read().decode(errors='replace')
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    fields = text[text.rfind(')') + 2:].split()
    try:
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / float(CLOCK_TICKS)
    except (IndexError, ValueError):
        return None


def read_memory(pid):
    """(VmRSS, VmHWM) of a process in bytes; zeros for a zombie or a process that is gone."""
    rss = hwm = 0
    try:
        with open(f'/proc/{pid}/status') as stream:
            for line in stream:
                if line.startswith('VmRSS:'):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith('VmHWM:'):
                    hwm = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss, hwm


def process_tree(root_pids):
    """{root pid: [root pid and all its live descendants]} from one scan of /proc."""
    children = {}
    try:
        entries = os.listdir('/proc')
    except OSError:
        entries = []
    for entry in entries:
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry))
    trees = {}
    for root in root_pids:
        tree, todo = [], [root]
        while todo:
            pid = todo.pop()
            if pid not in tree:
                tree.append(pid)
                todo.extend(children.get(pid, ()))
        trees[root] = tree
    return trees


class ResourceSampler:
    """Samples CPU and RSS of named process trees; ``start()``, ``add()``, ``stop()``."""

    def __init__(self, period_s=2.0):
        self.period_s = float(period_s)
        self._procs = {}   # name -> state dict
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def add(self, name, pid):
        """Follow process ``pid`` (and its children) under ``name``, from now."""
        with self._lock:
            self._procs[name] = {'pid': int(pid), 'start': time.monotonic(), 'cpu': {},
                                 'rss': [], 'hwm': 0, 'last_t': None}

    def sample(self):
        """Take one sample of every followed process (also callable without the thread)."""
        with self._lock:
            procs = list(self._procs.values())
            trees = process_tree([p['pid'] for p in procs])
            now = time.monotonic()
            for proc in procs:
                rss_total, seen = 0, False
                for pid in trees.get(proc['pid'], [proc['pid']]):
                    stat = read_stat(pid)
                    if stat is None:
                        continue
                    seen = True
                    proc['cpu'][pid] = stat[1]   # cumulative: the last reading counts
                    rss, hwm = read_memory(pid)
                    rss_total += rss
                    proc['hwm'] = max(proc['hwm'], hwm)
                if seen and rss_total > 0:   # an exited (zombie) process has no RSS: no sample
                    proc['rss'].append(rss_total)
                    proc['last_t'] = now

    def _loop(self):
        while not self._stop.wait(self.period_s):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 (a sampler must never take the runner down)
                pass

    def start(self):
        """Sample every period_s in a daemon thread (the first one period_s from now: a
        process just started has not loaded anything yet)."""
        self._thread = threading.Thread(target=self._loop, name='resource-sampler',
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop the thread and take a last sample (call it before the processes are stopped)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.period_s + 1.0)
        try:
            self.sample()
        except Exception:  # noqa: BLE001
            pass
        return self.summary()

    def summary(self):
        """{name: {cpu_s, cpu_percent_mean, peak_rss_mb, rss_first_mb, rss_last_mb,
        rss_quarter_mb, samples}}.

        cpu_percent_mean is over the time from add() to the last sample (100 = one core);
        peak_rss_mb is the larger of the highest sampled RSS of the tree and the highest VmHWM
        of any one of its processes.
        """
        out = {}
        with self._lock:
            for name, proc in self._procs.items():
                cpu = sum(proc['cpu'].values())
                span = (proc['last_t'] - proc['start']) if proc['last_t'] else 0.0
                rss = proc['rss']
                out[name] = {
                    'pid': proc['pid'],
                    'cpu_s': round(cpu, 2),
                    'cpu_percent_mean': round(100.0 * cpu / span, 1) if span > 0 else None,
                    'peak_rss_mb': round(max(max(rss, default=0), proc['hwm']) / MB, 1),
                    'rss_first_mb': round(rss[0] / MB, 1) if rss else None,
                    'rss_last_mb': round(rss[-1] / MB, 1) if rss else None,
                    # a quarter into the run: the start-up is over (a soak's growth from here)
                    'rss_quarter_mb': round(rss[len(rss) // 4] / MB, 1) if rss else None,
                    'samples': len(rss),
                }
        return out

    def write(self, path):
        """summary() as JSON at ``path``; returns the summary."""
        summary = self.summary()
        with open(path, 'w') as stream:
            json.dump(summary, stream, indent=2)
        return summary
