"""Sensor, camera, vehicle and world models of the built-in simulator (no ROS)."""

import math

import cv2
import numpy as np
import pytest

from skyloc_sim.camera import OrthoRenderer, PinholeCamera
from skyloc_sim.geo import latlon_to_map, load_map_yaml, map_to_latlon, MapError, MapGrid
from skyloc_sim.sensors import (Barometer, BaroConfig, Battery, BatteryConfig, GRAVITY,
                                ImuConfig, ImuModel, isa_altitude, isa_pressure, Lidar,
                                LidarConfig, raycast, yaw_from_quaternion)
from skyloc_sim.simulation import parse_event_line, SimConfig, Simulation
from skyloc_sim.vehicle import GroundRobot, Limits, Multirotor, sanitize_command
from skyloc_sim.world import load_world, photometric_condition, room_world, save_world


# ---------------------------------------------------------------- barometer / ISA

def test_isa_pressure_known_values():
    assert isa_pressure(0.0) == pytest.approx(101325.0)
    assert isa_pressure(100.0) == pytest.approx(100129.4, abs=1.0)
    assert isa_pressure(1000.0) == pytest.approx(89874.6, abs=5.0)
    for h in (0.0, 70.0, 150.0, 2000.0):
        assert isa_altitude(isa_pressure(h)) == pytest.approx(h, abs=1e-6)


def test_barometer_noise_and_drift_statistics():
    baro = Barometer(BaroConfig(noise_pa=3.0, drift_walk_pa=0.0), np.random.default_rng(1))
    samples = np.array([baro.sample(100.0) for _ in range(20000)])
    assert samples.mean() == pytest.approx(isa_pressure(100.0), abs=0.1)
    assert samples.std() == pytest.approx(3.0, rel=0.05)
    drifting = Barometer(BaroConfig(noise_pa=0.0, drift_walk_pa=0.3), np.random.default_rng(2))
    ends = []
    for _ in range(200):  # 200 runs of 100 s: drift std = 0.3 * sqrt(100) = 3 Pa
        drifting.drift = 0.0
        for _ in range(2000):
            drifting.sample(0.0)
        ends.append(drifting.drift)
    assert np.std(ends) == pytest.approx(3.0, rel=0.15)


def test_barometer_step_event_shifts_altitude():
    baro = Barometer(BaroConfig(noise_pa=0.0, drift_walk_pa=0.0), np.random.default_rng(0))
    baro.step_m = 10.0
    assert isa_altitude(baro.sample(50.0)) == pytest.approx(60.0, abs=1e-3)


# ---------------------------------------------------------------- IMU

def test_imu_noise_density_bias_and_gravity():
    cfg = ImuConfig(rate=100.0, gyro_bias_walk=0.0, accel_bias_walk=0.0)
    imu = ImuModel(cfg, np.random.default_rng(3))
    samples = [imu.sample(np.zeros(3), np.zeros(3), 0.0, 0.0, 0.3) for _ in range(20000)]
    gyro = np.array([s[1] for s in samples])
    accel = np.array([s[2] for s in samples])
    assert gyro.std(axis=0) == pytest.approx([cfg.gyro_noise_density * 10.0] * 3, rel=0.05)
    assert accel.std(axis=0) == pytest.approx([cfg.accel_noise_density * 10.0] * 3, rel=0.05)
    # at rest and level the accelerometer reads +g on z (specific force), plus its bias
    assert accel.mean(axis=0) == pytest.approx(imu.accel_bias + [0, 0, GRAVITY], abs=1e-3)
    assert gyro.mean(axis=0) == pytest.approx(imu.gyro_bias, abs=1e-4)
    yaws = np.array([yaw_from_quaternion(*s[0]) for s in samples])
    assert np.degrees(yaws.mean() - 0.3) == pytest.approx(cfg.yaw_bias_deg, abs=0.05)
    assert np.degrees(yaws.std()) == pytest.approx(cfg.yaw_noise_deg, rel=0.05)


def test_imu_bias_random_walk_grows_with_sqrt_time():
    cfg = ImuConfig(rate=100.0, gyro_bias_init=0.0, gyro_bias_walk=1e-3)
    finals = []
    for seed in range(100):
        imu = ImuModel(cfg, np.random.default_rng(seed))
        for _ in range(1000):  # 10 s -> std 1e-3 * sqrt(10)
            imu.sample(np.zeros(3), np.zeros(3), 0.0, 0.0, 0.0)
        finals.append(imu.gyro_bias[0])
    assert np.std(finals) == pytest.approx(1e-3 * math.sqrt(10.0), rel=0.2)


def test_imu_rotates_acceleration_into_base_link():
    cfg = ImuConfig(accel_noise_density=0.0, accel_bias_init=0.0, accel_bias_walk=0.0,
                    gyro_bias_init=0.0)
    imu = ImuModel(cfg, np.random.default_rng(0))
    # accelerating north at 2 m/s^2 while facing north (yaw 90 deg): +x forward in base_link
    _, _, accel = imu.sample([0.0, 2.0, 0.0], np.zeros(3), 0.0, 0.0, math.pi / 2)
    assert accel == pytest.approx([2.0, 0.0, GRAVITY], abs=1e-9)


# ---------------------------------------------------------------- LIDAR

def _wall_world(resolution=0.5, size=200):
    heights = np.zeros((size, size), np.float32)
    grid = MapGrid(size, size, resolution, -size * resolution / 2, -size * resolution / 2)
    u, _ = grid.map_to_pixel(20.0, 0.0)   # a wall at x = 20 m, 30 m tall
    heights[:, int(u):int(u) + 2] = 30.0
    return heights, grid


def test_raycast_hits_known_wall_at_known_range():
    heights, grid = _wall_world()
    ranges = raycast(heights, grid, 0.0, 0.0, 10.0, 0.0, [0.0, math.pi, math.pi / 4], 0.3,
                     40.0)
    assert ranges[0] == pytest.approx(20.0, abs=grid.resolution)
    assert math.isinf(ranges[1])                                    # nothing behind
    assert ranges[2] == pytest.approx(20.0 * math.sqrt(2), abs=2 * grid.resolution)
    # facing north (yaw 90 deg): the wall east is the beam at -90 deg (to the right)
    ranges = raycast(heights, grid, 0.0, 0.0, 10.0, math.pi / 2, [-math.pi / 2], 0.3, 40.0)
    assert ranges[0] == pytest.approx(20.0, abs=grid.resolution)
    # above the wall: no return
    assert math.isinf(raycast(heights, grid, 0.0, 0.0, 31.0, 0.0, [0.0], 0.3, 40.0)[0])


def test_lidar_noise_and_rep117_no_return():
    heights, grid = _wall_world()
    lidar = Lidar(LidarConfig(beams=360, range_max=40.0, noise_m=0.03),
                  np.random.default_rng(4))
    scans = np.array([lidar.scan(heights, grid, 0.0, 0.0, 10.0, 0.0) for _ in range(300)])
    forward = scans[:, 180]  # angles run -pi..pi: index 180 is 0 rad
    assert forward.std() == pytest.approx(0.03, rel=0.2)
    assert np.isinf(scans[:, 0]).all()  # backwards: +inf (REP 117: no return in range)


# ---------------------------------------------------------------- camera

def _dot_world(points_xy, size=400, resolution=0.5):
    grid = MapGrid(size, size, resolution, -size * resolution / 2, -size * resolution / 2)
    image = np.zeros((size, size, 3), np.uint8)
    for x, y in points_xy:
        u, v = grid.map_to_pixel(x, y)
        cv2.circle(image, (int(u), int(v)), 1, (255, 255, 255), -1)
    return image, grid


def test_known_ground_point_lands_on_predicted_pixel():
    cam = PinholeCamera(640, 480, 90.0)
    point = (23.25, -11.75)
    image, grid = _dot_world([point])
    renderer = OrthoRenderer(image, grid)
    # 80 m and below: pyramid level 0; 400 m and 700 m: levels 1 and 2 (anti-aliasing)
    for pose in [(0.0, 0.0, 80.0, 0.0), (5.0, 3.0, 60.0, 0.7), (10.0, -20.0, 40.0, -2.5),
                 (0.0, 0.0, 400.0, 0.3), (-10.0, 5.0, 700.0, 1.1)]:
        frame = renderer.render(cam, *pose, border_rgb=(0, 0, 0))
        predicted = cam.project([point], *pose)[0]
        grey = frame[:, :, 0].astype(float)
        rows, cols = np.nonzero(grey > 0.5 * grey.max())
        weights = grey[rows, cols]
        centroid = (np.average(cols, weights=weights), np.average(rows, weights=weights))
        # tight at altitude: a pyramid-level offset of half a map pixel is 0.2 image px
        assert centroid == pytest.approx(tuple(predicted), abs=1.0 if pose[2] < 100 else 0.1), \
            pose


def test_image_up_is_vehicle_forward_and_right_is_vehicle_right():
    cam = PinholeCamera(640, 480, 90.0)
    cx, cy = 319.5, 239.5
    # facing north (REP 103 yaw 90 deg): north is up, east is right
    north, east = cam.project([(0.0, 10.0), (10.0, 0.0)], 0.0, 0.0, 50.0, math.pi / 2)
    assert north[1] < cy and north[0] == pytest.approx(cx)
    assert east[0] > cx and east[1] == pytest.approx(cy)
    # facing east (yaw 0): east is up, north is left
    east, north = cam.project([(10.0, 0.0), (0.0, 10.0)], 0.0, 0.0, 50.0, 0.0)
    assert east[1] < cy and north[0] < cx


def test_ground_sampling_distance_and_footprint():
    cam = PinholeCamera(640, 480, 90.0)
    assert cam.focal_px == pytest.approx(320.0)
    assert cam.ground_sampling_distance(100.0) * 640 == pytest.approx(200.0)
    corners = cam.project([(-100.0, 0.0), (100.0, 0.0)], 0.0, 0.0, 100.0, math.pi / 2)
    assert corners[0][0] == pytest.approx(-0.5, abs=1e-6)
    assert corners[1][0] == pytest.approx(639.5, abs=1e-6)


def test_fixed_mount_tilt_shifts_the_view_gimbal_cancels_it():
    cam = PinholeCamera(640, 480, 90.0)
    pitch = math.radians(10.0)  # nose down while accelerating forward
    level = cam.project([(0.0, 0.0)], 0.0, 0.0, 100.0, math.pi / 2)[0]
    tilted = cam.project([(0.0, 0.0)], 0.0, 0.0, 100.0, math.pi / 2, 0.0, pitch, gimbal=False)[0]
    gimbal = cam.project([(0.0, 0.0)], 0.0, 0.0, 100.0, math.pi / 2, 0.0, pitch, gimbal=True)[0]
    assert gimbal == pytest.approx(level)
    # nose down (REP 103 pitch > 0): the belly camera looks backwards, so the point below
    # the drone moves towards image up (forward)
    assert tilted[1] - level[1] == pytest.approx(-320.0 * math.tan(pitch), rel=1e-6)


# ---------------------------------------------------------------- vehicles

def test_commands_clamped_and_nan_ignored():
    limits = Limits(max_speed=10.0, max_vertical_speed=3.0, max_yaw_rate=0.5)
    cmd, clamped = sanitize_command((30.0, 40.0, -9.0, 2.0), limits)
    assert clamped and cmd == pytest.approx((6.0, 8.0, -3.0, 0.5))
    assert sanitize_command((math.nan, 0, 0, 0), limits) == (None, False)
    assert sanitize_command((0, 0, math.inf, 0), limits) == (None, False)
    assert sanitize_command((1.0, 0, 0, 0), limits) == ((1.0, 0.0, 0.0, 0.0), False)


def test_multirotor_follows_body_frame_command_with_accel_limit():
    drone = Multirotor(Limits(max_accel=4.0), yaw=math.pi / 2)
    drone.command = (0.0, 0.0, 3.0, 0.0)
    for _ in range(1000):  # 10 s climb
        drone.step(0.01)
    assert drone.position[2] == pytest.approx(30.0 - 3.0 * 3.0 / 8.0, abs=0.1)
    drone.command = (0.0, 0.0, 0.0, 0.0)
    for _ in range(200):  # stop climbing
        drone.step(0.01)
    drone.command = (10.0, 0.0, 0.0, 0.0)  # forward while facing north -> +y
    drone.step(0.01)
    assert np.linalg.norm(drone.acceleration[:2]) == pytest.approx(4.0, rel=1e-6)
    for _ in range(500):
        drone.step(0.01)
    assert drone.velocity[:2] == pytest.approx([0.0, 10.0], abs=1e-6)
    drone.command = (0.0, 0.0, 0.0, 0.5)
    yaw0 = drone.yaw
    for _ in range(100):
        drone.step(0.01)
    assert drone.yaw - yaw0 == pytest.approx(0.5, abs=1e-9)


def test_wind_pushes_the_drone():
    drone = Multirotor(Limits(), z=50.0, wind=(3.0, 0.0))
    for _ in range(1000):
        drone.step(0.01)
    assert drone.velocity[0] == pytest.approx(3.0, abs=1e-6)


def test_ground_robot_wheel_odometry_drifts_and_walls_stop_it():
    robot = GroundRobot(Limits(max_speed=1.0), rng=np.random.default_rng(5),
                        odom_scale_error=0.02)
    robot.command = (0.5, 0.0, 0.0, 0.0)
    for _ in range(2000):  # 20 s at 0.5 m/s, minus the acceleration phase
        robot.step(0.01)
    true_x = robot.position[0]
    assert true_x == pytest.approx(10.0, abs=0.1)
    assert robot.odom_pose[0] - true_x == pytest.approx(0.02 * true_x, abs=0.05)
    stopped = GroundRobot(Limits(), rng=np.random.default_rng(6))
    stopped.command = (0.5, 0.0, 0.0, 0.0)
    for _ in range(500):
        stopped.step(0.01, is_free=lambda x, y, r: x < 1.0)
    assert stopped.position[0] < 1.0 and stopped.bumped


def test_battery_drains_with_power():
    battery = Battery(BatteryConfig(capacity_wh=100.0, hover_power_w=200.0,
                                    power_per_speed_w=0.0))
    for _ in range(600):
        battery.step(1.0, 0.0, 0.0)
    assert battery.percentage == pytest.approx(1.0 - 200.0 * 600 / 3600 / 100.0)
    assert battery.cfg.empty_voltage < battery.voltage < battery.cfg.full_voltage


# ---------------------------------------------------------------- maps and worlds

def test_latlon_round_trip_and_scale():
    datum = (55.54, 38.24)
    x, y = latlon_to_map(55.549, 38.2546, datum)
    assert map_to_latlon(x, y, datum) == pytest.approx((55.549, 38.2546), abs=1e-9)
    assert y == pytest.approx(0.009 * 111_340, rel=0.003)  # ~1001.9 m per 0.009 deg


def test_pixel_map_round_trip():
    grid = MapGrid(400, 300, 0.5, -100.0, -75.0)
    assert grid.map_to_pixel(-100.0, -75.0) == (0.0, 300.0)   # lower-left corner
    assert grid.pixel_to_map(0.0, 0.0) == (-100.0, 75.0)      # upper-left corner
    m = np.array(grid.map_to_pixel_matrix())
    assert m @ [10.0, 20.0, 1.0] == pytest.approx([*grid.map_to_pixel(10.0, 20.0), 1.0])


def _write_world(tmp_path, **fields):
    cv2.imwrite(str(tmp_path / 'ortho.png'), np.full((40, 60, 3), 128, np.uint8))
    doc = {'image': 'ortho.png', 'resolution': 0.5, 'origin': [0.0, 0.0, 0.0],
           'datum': [47.0, 8.0]}
    doc.update(fields)
    doc = {k: v for k, v in doc.items() if v is not None}
    import yaml
    path = tmp_path / 'world.yaml'
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize('fields, message', [
    ({'resolution': None}, "required field 'resolution' is missing"),
    ({'image': None}, "required field 'image' is missing"),
    ({'resolution': 0.0}, "field 'resolution' must be positive"),
    ({'resolution': -1}, "field 'resolution' must be positive"),
    ({'image': 'nope.png'}, "field 'image' names a file that does not exist"),
    ({'datum': [91.0, 0.0]}, "field 'datum' out of range"),
])
def test_bad_map_yaml_names_file_and_field(tmp_path, fields, message):
    path = _write_world(tmp_path, **fields)
    with pytest.raises(MapError) as err:
        load_world(path)
    assert message in str(err.value) and 'world.yaml' in str(err.value)


def test_unreadable_world_image_is_a_clear_error(tmp_path):
    path = _write_world(tmp_path)
    (tmp_path / 'ortho.png').write_bytes(b'not a png')
    with pytest.raises(MapError, match='cannot read image .*ortho.png'):
        load_world(path)
    with pytest.raises(MapError, match='map YAML not found'):
        load_map_yaml(str(tmp_path / 'missing.yaml'))


def test_world_save_load_round_trip_and_obstacles(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (100, 120, 3), dtype=np.uint8)
    heights = np.zeros((100, 120), np.float32)
    heights[10, 20] = 42.0
    path = save_world(str(tmp_path / 'w'), image, heights, 0.5, (-30.0, -25.0, 0.0),
                      (47.0, 8.0), condition_images={'winter': image // 2})
    world = load_world(path)
    assert (world.map_image == image).all() and world.heights[10, 20] == 42.0
    assert (world.camera_image('winter') == image // 2).all()
    assert world.grid.size_m == (60.0, 50.0)
    world.add_obstacle(0.0, 0.0, 150.0, 4.0)
    u, v = world.grid.map_to_pixel(0.0, 0.0)
    assert world.heights[int(v), int(u)] == 150.0
    assert not world.is_free(0.0, 0.0, 1.0) and world.is_free(-20.0, -20.0, 1.0)
    meta = load_map_yaml(path, require_datum=True)
    assert meta.datum == (47.0, 8.0) and meta.extra['heights'] == 'heights.npy'


def test_room_world_has_walls_furniture_and_free_start(tmp_path):
    world = load_world(room_world(str(tmp_path), seed=3))
    assert world.kind == 'room'
    assert world.grid.size_m == pytest.approx((12.0, 9.0))
    assert (world.heights[0, :] >= 2.5).all() and (world.heights[:, -1] >= 2.5).all()
    furniture = world.heights[5:-5, 5:-5]
    assert ((furniture > 0.3) & (furniture < 2.5)).mean() > 0.02
    assert world.is_free(0.0, 0.0, 0.3)


def test_real_satellite_world_from_corners(tmp_path, real_satellite):
    from skyloc_sim.world import image_world_from_corners
    images, corners = real_satellite
    world = load_world(image_world_from_corners(images, corners, str(tmp_path / 'real')))
    w, h = world.grid.size_m
    assert w == pytest.approx(866.0, rel=0.01) and h == pytest.approx(415.0, rel=0.01)
    assert world.grid.resolution == pytest.approx(0.338, abs=0.003)
    x0, y0 = world.grid.origin_x, world.grid.origin_y
    assert (x0 + w / 2, y0 + h / 2) == pytest.approx((0.0, 0.0), abs=1.0)  # centred frame
    lat, lon = map_to_latlon(x0 + w, y0 + h, world.meta.datum)   # upper-right corner
    assert (lat, lon) == pytest.approx((corners[0][0], corners[1][3]), abs=2e-5)
    lat, lon = map_to_latlon(x0, y0, world.meta.datum)           # lower-left corner
    assert (lat, lon) == pytest.approx((corners[0][2], corners[0][1]), abs=2e-5)


def test_photometric_condition_changes_appearance_deterministically():
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    winter = photometric_condition(image, 'winter', seed=3)
    assert (winter == photometric_condition(image, 'winter', seed=3)).all()
    assert winter.mean() > image.mean() + 10  # snow is brighter
    with pytest.raises(ValueError, match='unknown condition'):
        photometric_condition(image, 'monsoon')


# ---------------------------------------------------------------- simulation + events

def _sim(tmp_path, **cfg):
    heights, grid = _wall_world()
    image = np.random.default_rng(2).integers(0, 255, (grid.height, grid.width, 3), np.uint8)
    path = save_world(str(tmp_path / 'sim'), image, heights, grid.resolution,
                      (grid.origin_x, grid.origin_y, 0.0), (47.0, 8.0))
    world = load_world(path)
    return Simulation(world, world.map_image, SimConfig(**cfg))


def test_simulation_rates_and_events(tmp_path):
    sim = _sim(tmp_path, start=(0.0, 0.0, 40.0, 0.0))
    counts = {'imu': 0, 'baro': 0, 'scan': 0, 'image': 0}
    for _ in range(200):  # 2 s
        s = sim.step()
        for key in counts:
            counts[key] += getattr(s, key) is not None
    assert counts == {'imu': 200, 'baro': 40, 'scan': 20, 'image': 10}
    ok, _ = sim.apply_event('add_obstacle', [-15.0, 0.0, 100.0, 2.0])
    assert ok
    scan = sim.lidar.scan(sim.world.heights, sim.world.grid, 0.0, 0.0, 40.0, 0.0)
    assert scan[0] == pytest.approx(13.0, abs=1.0)  # the mast west of the drone
    assert sim.apply_event('camera_blackout', [1.0])[0]
    assert sim.render_camera() == 'blackout'
    assert sim.apply_event('imu_nan_burst', [0.5])[0] and sim.step().imu == 'nan'
    assert sim.apply_event('teleport', [30.0, -10.0])[0]
    assert tuple(sim.vehicle.position[:2]) == (30.0, -10.0)
    assert not sim.apply_event('explode', [])[0]
    assert not sim.apply_event('add_obstacle', [1.0])[0]
    assert sim.apply_event('remove_obstacles')[0]
    assert sim.world.heights.max() == 30.0


def test_parse_event_line():
    assert parse_event_line('120 add_obstacle 150 40 160 4') == (
        120.0, 'add_obstacle', [150.0, 40.0, 160.0, 4.0])
    with pytest.raises(ValueError, match='unknown event'):
        parse_event_line('5 explode')
    with pytest.raises(ValueError, match='takes 1-1 arguments'):
        parse_event_line('5 camera_blackout')


def test_demo_lawnmower_plan_durations():
    from skyloc_sim.demo_pilot import lawnmower_plan
    plan = lawnmower_plan(altitude=90.0, climb_rate=3.0, leg_length=300.0, leg_spacing=80.0,
                          legs=3, speed=10.0, yaw_rate=0.5)
    labels = [s.label for s in plan]
    assert labels[:2] == ['takeoff', 'hover'] and labels[-1] == 'hover'
    assert plan[0].duration == pytest.approx(30.0) and plan[0].vz == 3.0
    legs = [s for s in plan if s.label.startswith('leg')]
    assert len(legs) == 3 and all(s.duration == pytest.approx(30.0) for s in legs)
    turns = [s.wz * s.duration for s in plan if s.label == 'turn']
    assert turns == pytest.approx([math.pi / 2] * 2 + [-math.pi / 2] * 2)  # a lawnmower
