"""Helpers for tests that run real nodes as processes and talk to them over DDS.

`start_node` launches an installed executable with a params file on its own ROS_DOMAIN_ID;
`TestNode` is a test-side node in its own Context on that domain; `stop_process` stops a node
with SIGINT and returns its exit code and output.
"""

import os
import signal
import subprocess
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
import yaml


def start_node(package, executable, node_name, params, domain_id, folder):
    """Start an installed node named `node_name` with `params` (a dict) in a params file under
    `folder`."""
    from ament_index_python.packages import get_package_prefix
    path = os.path.join(str(folder), f'{node_name}_{domain_id}.yaml')
    with open(path, 'w') as stream:
        yaml.safe_dump({node_name: {'ros__parameters': params}}, stream)
    exe = os.path.join(get_package_prefix(package), 'lib', package, executable)
    # the node is named node_name (its params file section): two of a kind can run side by side
    return subprocess.Popen([exe, '--ros-args', '-r', f'__node:={node_name}', '--params-file',
                             path],
                            env=dict(os.environ, ROS_DOMAIN_ID=str(domain_id)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop_process(proc, timeout=10.0):
    """SIGINT, then kill after `timeout`; returns (exit code, decoded output)."""
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, (out or b'').decode(errors='replace')


class TestNode:
    """A node in its own Context on `domain_id`, spun by hand from the test."""

    __test__ = False  # not a pytest test class

    def __init__(self, name, domain_id):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def wait_until(self, predicate, timeout=20.0):
        """Spin until predicate() is true or the timeout passes; returns predicate()."""
        end = time.monotonic() + timeout
        while not predicate() and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def call(self, client, request, timeout=10.0):
        """Call a service and wait for the answer (None on timeout)."""
        assert client.wait_for_service(timeout_sec=timeout), client.srv_name
        future = client.call_async(request)
        self.wait_until(future.done, timeout)
        return future.result()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
