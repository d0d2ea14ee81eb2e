"""Simulator benchmarks: camera render time on one core, sensor rates at 1x real time."""

import tempfile
import time

import numpy as np

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
    from nav_msgs.msg import Odometry
    from rclpy.qos import qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import BatteryState, FluidPressure, Image, Imu, LaserScan
    from skyloc_sim.testing import start_node, stop_process, TestNode

    kinds = {'/camera/image_raw': Image, '/imu/data': Imu, '/baro': FluidPressure,
             '/scan': LaserScan, '/sim/ground_truth': Odometry, '/clock': Clock,
             '/battery': BatteryState}
    stamps = {t: [] for t in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_node('skyloc_sim', 'sim', 'sim',
                          {'world': world_yaml, 'start': [0.0, 0.0, 100.0, 0.0]}, domain, tmp)
        probe = TestNode('bench_probe', domain)
        for topic, kind in kinds.items():
            qos = 10 if topic in ('/sim/ground_truth', '/clock') else qos_profile_sensor_data
            probe.node.create_subscription(
                kind, topic, lambda m, t=topic: stamps[t].append(time.monotonic()), qos)
        try:
            probe.wait_until(lambda: bool(stamps['/camera/image_raw']), timeout=60)
            for v in stamps.values():
                v.clear()
            probe.spin(seconds)
        finally:
            probe.close()
            stop_process(proc)
    result = {}
    for topic, want in RATES.items():
        s = stamps[topic]
        got = (len(s) - 1) / (s[-1] - s[0]) if len(s) > 1 else 0.0
        result[topic] = {'hz': round(got, 2), 'goal_hz': want,
                         'error_percent': round(100 * (got - want) / want, 1),
                         'pass': abs(got - want) <= 0.1 * want}
    return result
