"""Simulator benchmarks: camera render time on one core, sensor rates at 1x real time."""

import os
import subprocess
import tempfile
import time

import numpy as np
import yaml

RATES = {'/camera/image_raw': 5.0, '/imu/data': 100.0, '/baro': 20.0, '/scan': 10.0,
         '/sim/ground_truth': 100.0, '/clock': 100.0, '/battery': 1.0}


def bench_camera_render(world_yaml, frames=200):
    """Median / p95 ms of one 640x480 render (+ noise) at survey poses, one OpenCV thread."""
    import cv2
    from skyloc_sim.simulation import SimConfig, Simulation
    from skyloc_sim.world import load_world
    cv2.setNumThreads(1)
    world = load_world(world_yaml)
    sim = Simulation(world, world.camera_image('summer'), SimConfig(start=(0, 0, 100.0, 0.3)))
    rng = np.random.default_rng(0)
    times = []
    for _ in range(frames):
        v = sim.vehicle
        v.position[:] = [rng.uniform(-400, 400), rng.uniform(-400, 400), rng.uniform(70, 150)]
        v.yaw = rng.uniform(-np.pi, np.pi)
        t0 = time.perf_counter()
        sim.render_camera()
        times.append((time.perf_counter() - t0) * 1e3)
    times = np.array(times)
    return {'frames': frames, 'median_ms': round(float(np.median(times)), 2),
            'p95_ms': round(float(np.percentile(times, 95)), 2),
            'goal_ms': 20.0, 'pass': bool(np.percentile(times, 95) <= 20.0)}


def bench_sensor_rates(world_yaml, seconds=10.0, domain=150):
    """Received rate of every sensor topic over `seconds` at rate 1x (multi-process, DDS)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import BatteryState, FluidPressure, Image, Imu, LaserScan
    from ament_index_python.packages import get_package_prefix

    kinds = {'/camera/image_raw': Image, '/imu/data': Imu, '/baro': FluidPressure,
             '/scan': LaserScan, '/sim/ground_truth': Odometry, '/clock': Clock,
             '/battery': BatteryState}
    with tempfile.TemporaryDirectory() as tmp:
        params = os.path.join(tmp, 'p.yaml')
        with open(params, 'w') as stream:
            yaml.safe_dump({'sim': {'ros__parameters': {
                'world': world_yaml, 'start': [0.0, 0.0, 100.0, 0.0]}}}, stream)
        exe = os.path.join(get_package_prefix('skyloc_sim'), 'lib', 'skyloc_sim', 'sim')
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
        proc = subprocess.Popen([exe, '--ros-args', '--params-file', params], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=domain)
        node = rclpy.create_node('bench_probe', context=ctx)
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        stamps = {t: [] for t in kinds}
        for topic, kind in kinds.items():
            qos = 10 if topic in ('/sim/ground_truth', '/clock') else qos_profile_sensor_data
            node.create_subscription(kind, topic,
                                     lambda m, t=topic: stamps[t].append(time.monotonic()), qos)
        try:
            end = time.monotonic() + 60
            while not stamps['/camera/image_raw'] and time.monotonic() < end:
                ex.spin_once(timeout_sec=0.05)
            for v in stamps.values():
                v.clear()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                ex.spin_once(timeout_sec=0.01)
        finally:
            ex.shutdown()
            node.destroy_node()
            rclpy.shutdown(context=ctx)
            proc.send_signal(2)
            proc.wait(10)
    result = {}
    for topic, want in RATES.items():
        s = stamps[topic]
        got = (len(s) - 1) / (s[-1] - s[0]) if len(s) > 1 else 0.0
        result[topic] = {'hz': round(got, 2), 'goal_hz': want,
                         'error_percent': round(100 * (got - want) / want, 1),
                         'pass': abs(got - want) <= 0.1 * want}
    return result
