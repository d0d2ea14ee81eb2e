"""The coverage nodes as real processes over DDS (each test on its own ROS domain)."""

import math
import os
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Odometry, OccupancyGrid, Path
import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data, ReliabilityPolicy
from sensor_msgs.msg import LaserScan
from skyloc_interfaces.msg import MapChange
from skyloc_sim.dds import configure_dds
from skyloc_sim.testing import start_node, stop_process, TestNode
from std_msgs.msg import Float32

from skyloc_coverage.ros_common import grid_from_msg, grid_to_msg

configure_dds(start=__file__)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
DOMAIN = 210 + os.getpid() % 10


class Listener(TestNode):
    def __init__(self, domain):
        super().__init__('coverage_test', domain)
        n = self.node
        self.got = {'map': [], 'changes': [], 'path': [], 'progress': [], 'diag': [],
                    'truth': [], 'grid': []}
        n.create_subscription(OccupancyGrid, '/map', lambda m: self.got['map'].append(m),
                              LATCHED)
        n.create_subscription(MapChange, '/map/changes',
                              lambda m: self.got['changes'].append(m), 10)
        n.create_subscription(Path, '/coverage/path', lambda m: self.got['path'].append(m),
                              LATCHED)
        n.create_subscription(OccupancyGrid, '/coverage/grid',
                              lambda m: self.got['grid'].append(m), LATCHED)
        n.create_subscription(Float32, '/coverage/progress',
                              lambda m: self.got['progress'].append(m.data), 10)
        n.create_subscription(DiagnosticArray, '/diagnostics',
                              lambda m: self.got['diag'].extend(m.status), 10)
        n.create_subscription(Odometry, '/sim/ground_truth',
                              lambda m: self.got['truth'].append(
                                  (m.pose.pose.position.x, m.pose.pose.position.y)), 200)

    def publish_until(self, pub, msg, predicate, timeout, period=0.5):
        """Publish `msg` every `period` s until predicate() holds (a single best-effort
        message can be lost while discovery is still matching the two ends)."""
        due = 0.0

        def published_and():
            nonlocal due
            if time.monotonic() >= due:
                pub.publish(msg)
                due = time.monotonic() + period
            return predicate()
        return self.wait_until(published_and, timeout)

    def diag(self, prefix, level=None):
        return [s for s in self.got['diag'] if s.name.startswith(prefix)
                and (level is None or s.level == level)]


def odom(x, y, yaw, t):
    msg = Odometry()
    msg.header.frame_id = 'map'
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
    msg.pose.pose.position.x, msg.pose.pose.position.y = float(x), float(y)
    msg.pose.pose.orientation.z = math.sin(yaw / 2)
    msg.pose.pose.orientation.w = math.cos(yaw / 2)
    return msg


def scan(t, wall_x=2.0, n=180, ranges=None):
    msg = LaserScan()
    msg.header.frame_id = 'base_link'
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
    msg.angle_min, msg.angle_increment = -math.pi, 2 * math.pi / n
    msg.angle_max = msg.angle_min + msg.angle_increment * (n - 1)
    msg.range_min, msg.range_max = 0.1, 5.0
    if ranges is None:
        a = msg.angle_min + msg.angle_increment * np.arange(n)
        ranges = np.where(np.abs(a) < 0.4, wall_x / np.cos(a), np.inf)
    msg.ranges = [float(r) for r in ranges]
    return msg


def test_map_handler_maps_a_wall_reports_changes_and_survives_bad_scans(tmp_path):
    domain = DOMAIN
    proc = start_node('skyloc_coverage', 'map_handler', 'map_handler',
                      {'resolution': 0.1, 'size_m': [8.0, 6.0], 'origin': [-4.0, -3.0],
                       'pose_topic': '/odom', 'publish_rate': 5.0, 'radius': 0.2,
                       'max_scan_rate': 20.0}, domain, tmp_path)
    lis = Listener(domain)
    try:
        pose_pub = lis.node.create_publisher(Odometry, '/odom', qos_profile_sensor_data)
        scan_pub = lis.node.create_publisher(LaserScan, '/scan', qos_profile_sensor_data)
        assert lis.wait_until(lambda: pose_pub.get_subscription_count() > 0
                              and scan_pub.get_subscription_count() > 0, 20)
        bad = scan(0.05, ranges=[])
        for k in range(30):
            t = 1.0 + 0.1 * k
            pose_pub.publish(odom(0.0, 0.0, 0.0, t))
            scan_pub.publish(bad if k == 5 else scan(t - 0.05))
            pose_pub.publish(odom(0.0, 0.0, 0.0, t + 0.05))
            lis.spin(0.05)
        assert lis.wait_until(lambda: any(c.newly_occupied > 0 for c in lis.got['changes']), 10)

        def wall_seen():
            grid = grid_from_msg(lis.got['map'][-1])
            col, row = grid.cell_of(np.array([1.95, 2.05]), np.array([0.0, 0.0]))
            return (grid.data[row, col] == 100).any()
        assert lis.wait_until(wall_seen, 5)
        grid = grid_from_msg(lis.got['map'][-1])
        _, row = grid.cell_of(0.0, 0.0)
        c0, _ = grid.cell_of(1.0, 0.0)
        assert (grid.data[row, grid.cell_of(0.3, 0)[0]:c0] == 0).all()
        change = next(c for c in lis.got['changes'] if c.newly_occupied > 0)
        assert 1.8 <= change.min_x <= 2.1 and len(change.occupied_cells) == change.newly_occupied
        assert lis.wait_until(lambda: lis.diag('map_handler', DiagnosticStatus.WARN), 5)
        assert proc.poll() is None
    finally:
        lis.close()
        code, out = stop_process(proc)
    assert code == 0, out
    assert 'scan skipped: 0 ranges' in out


def free_map(width=60, height=40, res=0.1, blocked=False):
    data = np.full((height, width), 100 if blocked else 0, np.int8)
    data[0, :] = data[-1, :] = data[:, 0] = data[:, -1] = 100
    return grid_to_msg(data, res, (0.0, 0.0), odom(0, 0, 0, 1.0).header.stamp)


def test_coverage_node_errors_on_impossible_maps_then_plans(tmp_path):
    domain = DOMAIN
    proc = start_node('skyloc_coverage', 'coverage', 'coverage',
                      {'swath_width': 0.6, 'radius': 0.2, 'pose_topic': '/odom'}, domain,
                      tmp_path)
    lis = Listener(domain)
    try:
        map_pub = lis.node.create_publisher(OccupancyGrid, '/map', LATCHED)
        pose_pub = lis.node.create_publisher(Odometry, '/odom', qos_profile_sensor_data)
        assert lis.wait_until(lambda: pose_pub.get_subscription_count() > 0, 20)
        pose_pub.publish(odom(float('nan'), 0, 0, 1.0))
        map_pub.publish(free_map(blocked=True))
        assert lis.publish_until(pose_pub, odom(3.0, 2.0, 0, 1.0),
                                 lambda: lis.diag('coverage', DiagnosticStatus.ERROR), 10)
        assert 'no free cell' in lis.diag('coverage', DiagnosticStatus.ERROR)[0].message
        assert not lis.got['path']
        map_pub.publish(free_map())
        assert lis.publish_until(pose_pub, odom(3.0, 2.0, 0, 2.0), lambda: lis.got['path'], 10)
        path = np.array([(p.pose.position.x, p.pose.position.y)
                         for p in lis.got['path'][-1].poses])
        assert len(path) > 10
        assert path[:, 0].min() >= 0.3 - 1e-6 and path[:, 0].max() <= 5.7 + 1e-6
        assert lis.wait_until(lambda: lis.got['grid'], 5)
        assert proc.poll() is None
    finally:
        lis.close()
        code, out = stop_process(proc)
    assert code == 0, out
    assert 'cannot plan' in out and 'first plan' in out


def _room_run(tmp_path, domain):
    """One run of the room graph; (reached, progress, diagnostics, truth, node outputs)."""
    from skyloc_sim.world import room_world
    cache = str(tmp_path / 'worlds')
    world = room_world(cache, seed=5, width_m=6.0, depth_m=5.0)
    occupancy = os.path.join(os.path.dirname(world), 'occupancy.yaml')
    procs = [
        start_node('skyloc_sim', 'sim', 'sim', {
            'world': world, 'vehicle': 'ground', 'rate': 1.0, 'start': [0.0, 0.0, 0.0, 0.0],
            'max_speed': 0.6, 'max_accel': 1.0, 'max_yaw_rate': 2.0, 'camera_rate': 0.5,
            'scan_rate': 5.0}, domain, tmp_path),
        start_node('skyloc_coverage', 'map_handler', 'map_handler', {
            'static_map': occupancy, 'pose_topic': '/odom', 'radius': 0.35,
            'use_sim_time': True, 'max_scan_rate': 2.0, 'obstacle_max_range_m': 3.0,
            'raytrace_max_range_m': 3.5}, domain, tmp_path),
        start_node('skyloc_coverage', 'coverage', 'coverage', {
            'swath_width': 0.5, 'radius': 0.35, 'pose_topic': '/odom',
            'unknown_is_free': False, 'coverage_goal_percent': 90.0, 'use_sim_time': True},
            domain, tmp_path),
        start_node('skyloc_coverage', 'follower', 'follower', {
            'vehicle': 'ground', 'pose_topic': '/odom', 'speed': 0.5, 'max_yaw_rate': 2.0,
            'lookahead_m': 0.3, 'goal_tolerance_m': 0.05, 'use_sim_time': True},
            domain, tmp_path),
    ]
    lis = Listener(domain)
    try:
        # no path in 60 s: the nodes did not discover each other (seen once in CI, the
        # coverage node still 'waiting for /map and /odom'); a failed attempt, not the test
        reached = bool(lis.wait_until(lambda: lis.got['path'], 60)) and lis.wait_until(
            lambda: lis.got['progress'] and lis.got['progress'][-1] >= 90.0, 420)
        progress = lis.got['progress'][-1] if lis.got['progress'] else None
        assert all(p.poll() is None for p in procs), 'a node died'
        states = {name: {v.key: v.value for v in lis.diag(name)[-1].values}
                  for name in ('sim', 'coverage', 'follower') if lis.diag(name)}
        truth = np.array(lis.got['truth'])
    finally:
        lis.close()
        outs = [stop_process(p) for p in procs]
        for name, (_, out) in zip(('sim', 'map_handler', 'coverage', 'follower'), outs):
            print(f'----- {name} (domain {domain})\n{out[-3000:]}')   # shown on failure
    return reached, progress, states, truth, outs


def test_ground_robot_covers_a_room_on_its_own_odometry(tmp_path):
    """sim + map_handler + coverage + follower: the room is covered, on /odom only.

    The simulator runs in real time (at 4x the nodes' callbacks lagged the poses on a loaded
    machine and the robot ran into furniture; at 2x a fresh-clone CI run on the shared machine,
    load average ~15, stopped at 88.6% and 60.8% after 53-73 backups); the planning radius has
    the margin for wheel-odometry drift that config/room.yaml has (robot 0.2 m + 0.15 m); the
    end of the path is followed by mop-up passes over what was missed.

    Two attempts: the drifting odometry sometimes wedges the robot against furniture for
    minutes on the shared 2-core CI machine (one CI run stopped at 71.6% after 121 backups,
    alone it passes in about 2 min), and once in CI the four processes never discovered each
    other (no path after 60 s); a second, fresh run must then reach the goal.
    """
    attempts = []
    for attempt in range(2):
        run_dir = tmp_path / f'attempt{attempt}'
        run_dir.mkdir()
        reached, progress, states, truth, outs = _room_run(run_dir, DOMAIN + 3 * attempt)
        attempts.append((progress, states))
        if reached:
            break
    assert reached, f'coverage stopped at {[a[0] for a in attempts]}%; diagnostics {attempts}'
    if len(attempts) > 1:
        print(f'first attempt stopped at {attempts[0][0]}%: {attempts[0][1]}')
    # the truth says the robot really moved over the room (odometry drifts, it is not the pose
    # source of this check)
    assert np.ptp(truth[:, 0]) > 3.0 and np.ptp(truth[:, 1]) > 2.5
    for code, out in outs:
        assert code == 0, out[-2000:]
    assert 'coverage goal reached' in outs[2][1]


def test_survey_area_in_latlon_with_a_no_fly_zone(tmp_path):
    """area_latlon + map_yaml datum -> map frame; the plan stays in the area, out of no_fly."""
    from skyloc_sim.geo import map_to_latlon, write_map_yaml
    datum = (47.3769, 8.5417)
    (tmp_path / 'img.png').write_bytes(b'')            # the map YAML's image must exist
    map_yaml = write_map_yaml(str(tmp_path / 'geo.yaml'), 'img.png', 0.5, (0, 0, 0), datum)
    corners = [(5.0, 5.0), (25.0, 5.0), (25.0, 15.0), (5.0, 15.0)]
    latlon = [v for x, y in corners for v in map_to_latlon(x, y, datum)]
    domain = DOMAIN
    proc = start_node('skyloc_coverage', 'coverage', 'coverage', {
        'swath_width': 2.0, 'radius': 0.0, 'pose_topic': '/odom', 'map_yaml': map_yaml,
        'area_latlon': latlon, 'no_fly': ['12,8,18,8,18,12,12,12']}, domain, tmp_path)
    lis = Listener(domain)
    try:
        map_pub = lis.node.create_publisher(OccupancyGrid, '/map', LATCHED)
        pose_pub = lis.node.create_publisher(Odometry, '/odom', qos_profile_sensor_data)
        assert lis.wait_until(lambda: pose_pub.get_subscription_count() > 0, 20)
        data = np.zeros((60, 80), np.int8)
        map_pub.publish(grid_to_msg(data, 0.5, (0.0, 0.0), odom(0, 0, 0, 1.0).header.stamp))
        assert lis.publish_until(pose_pub, odom(6.0, 6.0, 0, 1.0), lambda: lis.got['path'], 10)
        path = np.array([(p.pose.position.x, p.pose.position.y)
                         for p in lis.got['path'][-1].poses])
        assert path[:, 0].min() >= 4.5 and path[:, 0].max() <= 25.5
        assert path[:, 1].min() >= 4.5 and path[:, 1].max() <= 15.5
        # no waypoint and no lane inside the no-fly box (shrunk by a cell for the raster)
        inside = [(12.5 < x < 17.5 and 8.5 < y < 11.5) for x, y in path]
        assert not any(inside)
        for a, b in zip(path[:-1], path[1:]):
            t = np.linspace(0, 1, 50)[:, None]
            pts = a + t * (b - a)
            assert not ((pts[:, 0] > 12.5) & (pts[:, 0] < 17.5)
                        & (pts[:, 1] > 8.5) & (pts[:, 1] < 11.5)).any()
        assert proc.poll() is None
    finally:
        lis.close()
        code, out = stop_process(proc)
    assert code == 0, out
    assert '4-point polygon, 1 no-fly polygon(s)' in out


def test_map_handler_survives_a_broken_static_map(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('image: nothere.pgm\norigin: [0, 0, 0]\n')
    domain = DOMAIN
    proc = start_node('skyloc_coverage', 'map_handler', 'map_handler', {
        'static_map': str(bad), 'resolution': 0.5, 'size_m': [10.0, 10.0],
        'origin': [0.0, 0.0]}, domain, tmp_path)
    lis = Listener(domain)
    try:
        assert lis.wait_until(lambda: lis.got['map'], 20)
        assert lis.wait_until(lambda: lis.diag('map_handler', DiagnosticStatus.ERROR), 10)
        errors = lis.diag('map_handler', DiagnosticStatus.ERROR)
        assert "'resolution' is missing" in errors[0].message
        grid = grid_from_msg(lis.got['map'][-1])
        assert grid.data.shape == (20, 20) and (grid.data == -1).all()
        assert proc.poll() is None
    finally:
        lis.close()
        code, out = stop_process(proc)
    assert code == 0, out
