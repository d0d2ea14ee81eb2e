"""The `main()` of every skyloc node: init, spin, and a clean exit on Ctrl-C or SIGINT.

Also what every node needs for its parameters: `declare_parameters` and `workspace_path`.
"""

import os
import sys

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def run_node(node_class, args=None, executor_class=SingleThreadedExecutor,
             startup_errors=(ValueError,), **executor_kwargs):
    """Create `node_class()`, spin it, shut down cleanly (the Jazzy form of ros2/demos).

    A start-up error of the kinds in `startup_errors` (bad parameters, unreadable files) is
    printed as one line and exits 1. An exception raised while the context is already shut
    down (rclpy can raise RuntimeError from a wait set torn down by SIGINT) is a clean exit.
    """
    rclpy.init(args=args)
    node = None
    try:
        node = node_class()
        executor = executor_class(**executor_kwargs)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except startup_errors as exc:
        if node is not None and rclpy.ok():
            raise
        name = getattr(node_class, '__name__', 'node')
        print(f'[{name}] error: {exc}', file=sys.stderr, flush=True)
        raise SystemExit(1)
    except Exception:
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


# durations, rates and frequencies: never negative (0 is "off" where a node allows it)
NON_NEGATIVE_SUFFIXES = ('_s', '_hz', 'rate')


def declare_parameters(node, table):
    """Declare (name, default, description) parameters; returns {name: value}.

    Numbers accept 4 as well as 4.0 (launch arguments and CLI overrides type them by text).
    Validated at start-up (``check_parameter``): a ValueError names the parameter, and
    ``run_node`` prints it as one line and exits 1.
    """
    from rcl_interfaces.msg import ParameterDescriptor
    for name, default, description in table:
        node.declare_parameter(name, default, ParameterDescriptor(
            description=description, dynamic_typing=isinstance(default, float)))
    values = {name: node.get_parameter(name).value for name, _, _ in table}
    for name, default, _ in table:
        check_parameter(name, default, values[name])
    return values


def check_parameter(name, default, value):
    """The checks every node's parameters get: a float parameter holds a finite number where
    its default is finite (a number, not text or a bool); durations, rates and frequencies
    (names ending in _s, _hz, rate) are not negative. ValueError naming the parameter."""
    import math
    if isinstance(default, float) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"parameter '{name}' must be a number, got {value!r}")
        if math.isfinite(default) and not math.isfinite(value):
            raise ValueError(f"parameter '{name}' must be a finite number, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and \
            name.endswith(NON_NEGATIVE_SUFFIXES) and value < 0:
        raise ValueError(f"parameter '{name}' must not be negative, got {value!r}")


def workspace_path(path):
    """A path parameter as a file path: relative paths are from the workspace root
    ($SKYLOC_ROOT, else the current directory); absolute and empty paths are unchanged."""
    if not path or os.path.isabs(path):
        return path
    return os.path.join(os.environ.get('SKYLOC_ROOT') or os.getcwd(), path)


def rss_mb():
    """Resident set size of this process, MB (Linux /proc)."""
    try:
        with open('/proc/self/status') as stream:
            for line in stream:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float('nan')
