"""The mission state machine (no ROS): a simulated point-mass flies it through every state."""
import math

import pytest

from skyloc_coverage.mission import Command, Mission, MissionConfig
from skyloc_coverage.mission_node import mission_progress, point_ahead


class PointMass:
    """Integrates body-frame velocity commands (the simulator's multirotor, without lag)."""

    def __init__(self, x=0.0, y=0.0, z=0.0, yaw=0.3):
        self.x, self.y, self.z, self.yaw = x, y, z, yaw

    def apply(self, cmd, dt):
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        self.x += (c * cmd.vx - s * cmd.vy) * dt
        self.y += (s * cmd.vx + c * cmd.vy) * dt
        self.z = max(0.0, self.z + cmd.vz * dt)
        self.yaw += cmd.wz * dt


def fly(mission, body, t0, seconds, dt=0.1, follower=None, each=None):
    t = t0
    while t < t0 + seconds:
        mission.on_pose(t, body.x, body.y, body.z, body.yaw)
        if follower is not None:
            mission.on_follower(t, follower)
        if each is not None:
            each(t)
        body.apply(mission.step(t), dt)
        t += dt
    return t


def states(mission):
    return [e[2] for e in mission.events]


def test_full_mission_takeoff_survey_return_land():
    m = Mission(MissionConfig(altitude=50.0, climb_rate=5.0, return_speed=8.0))
    body = PointMass()
    t = fly(m, body, 0.0, 1.0)
    assert m.state == 'WAITING'                        # ground_wait_s = 2
    t = fly(m, body, t, 15.0)
    assert m.state == 'SURVEY' and body.z == pytest.approx(50.0, abs=3.0)
    # the follower flies east at 10 m/s; the mission holds the altitude meanwhile
    m.on_localizer_state(t, 'OK')
    t = fly(m, body, t, 20.0, follower=Command(vx=10.0))
    assert body.x > 150.0 and abs(body.z - 50.0) < 1.0
    m.on_progress(99.2)
    t = fly(m, body, t, 60.0)
    assert m.state in ('LAND', 'DONE')
    t = fly(m, body, t, 60.0)
    assert m.state == 'DONE'
    assert math.hypot(body.x, body.y) < 3.0 and body.z <= 0.5
    assert states(m) == ['TAKEOFF', 'SURVEY', 'RETURN', 'LAND', 'DONE']
    assert 'survey complete (99.2% covered)' in m.events[2][3]
    assert m.step(t) == Command()                      # done: nothing commanded
    assert mission_progress(m) == 100.0


def test_touchdown_with_a_barometer_offset_ends_the_mission():
    """On the ground the pose says 12 m (a barometer step): no descent for 4 s is touchdown."""
    m = Mission(MissionConfig(altitude=30.0, climb_rate=5.0))
    body = PointMass()
    t = fly(m, body, 0.0, 12.0)
    m.on_localizer_state(t, 'OK')
    m.on_progress(100.0)
    offset = 12.0
    t0 = t
    while t < t0 + 60.0 and m.state != 'DONE':
        m.on_pose(t, body.x, body.y, body.z + offset, body.yaw)   # altitude 12 m too high
        body.apply(m.step(t), 0.1)
        t += 0.1
    assert m.state == 'DONE' and body.z == 0.0
    assert 'touchdown' in m.events[-1][3] and 'barometer' in m.events[-1][3]
    # a normal landing still ends on the altitude, not on the touchdown rule
    m2 = Mission(MissionConfig(altitude=30.0, climb_rate=5.0))
    body2 = PointMass()
    t = fly(m2, body2, 0.0, 12.0)
    m2.on_progress(100.0)
    t = fly(m2, body2, t, 60.0)
    assert m2.state == 'DONE' and m2.events[-1][3].startswith('landed')


def test_lost_holds_and_climbs_then_resumes_and_low_battery_returns():
    m = Mission(MissionConfig(altitude=40.0, climb_rate=5.0, lost_climb_m=20.0,
                              max_altitude=55.0, recover_s=2.0))
    body = PointMass()
    t = fly(m, body, 0.0, 15.0)
    assert m.state == 'SURVEY'
    m.on_localizer_state(t, 'LOST')
    t = fly(m, body, t, 10.0, follower=Command(vx=10.0))
    assert m.state == 'HOLD'
    x_hold = body.x
    t = fly(m, body, t, 10.0, follower=Command(vx=10.0))
    assert body.x == pytest.approx(x_hold, abs=1e-6)   # no horizontal motion while LOST
    assert body.z == pytest.approx(55.0, abs=1.0)      # climbed, capped by max_altitude
    m.on_localizer_state(t, 'DEGRADED')
    t = fly(m, body, t, 1.0)
    assert m.state == 'HOLD'                           # not yet recover_s
    t = fly(m, body, t, 2.0)
    assert m.state == 'SURVEY'
    m.on_battery(20.0)
    fly(m, body, t, 1.0)
    assert m.state == 'RETURN' and 'low battery (20% <= 25%)' in m.reason
    assert states(m) == ['TAKEOFF', 'SURVEY', 'HOLD', 'SURVEY', 'RETURN']


def surveying(config):
    """A mission that took off and has surveyed 5 s east at 10 m/s: (mission, body, t)."""
    m, body = Mission(config), PointMass()
    t = fly(m, body, 0.0, 10.0)
    m.on_localizer_state(t, 'OK')
    return m, body, fly(m, body, t, 5.0, follower=Command(vx=10.0))


def test_lost_for_too_long_lands_where_it_is():
    """A pose known to be wrong cannot lead home: after hold_timeout_s it lands in place."""
    m, body, t = surveying(MissionConfig(altitude=20.0, climb_rate=5.0, hold_timeout_s=5.0))
    x_lost = body.x
    assert x_lost > 40.0
    m.on_localizer_state(t, 'LOST')
    t = fly(m, body, t, 60.0, follower=Command(vx=10.0))
    assert states(m)[2:] == ['HOLD', 'LAND', 'DONE']
    assert 'LOST for 5 s' in m.events[3][3] and 'landing here' in m.events[3][3]
    assert body.x == pytest.approx(x_lost, abs=1e-6) and body.z <= 0.5   # never flew home


def test_low_battery_while_lost_lands_and_lost_on_the_way_home_holds():
    m, body, t = surveying(MissionConfig(altitude=20.0, climb_rate=5.0, recover_s=1.0))
    # the survey ends; on the way home the localizer is LOST: hold, then home again
    m.on_progress(100.0)
    t = fly(m, body, t, 1.0)
    assert m.state == 'RETURN'
    m.on_localizer_state(t, 'LOST')
    t = fly(m, body, t, 3.0)
    assert m.state == 'HOLD'
    m.on_localizer_state(t, 'OK')
    t = fly(m, body, t, 2.0)
    assert m.state == 'RETURN' and 'returning home' in m.reason
    # LOST again, and the battery runs low while LOST: land where it is, do not fly home
    m.on_localizer_state(t, 'LOST')
    t = fly(m, body, t, 2.0)
    x_lost = body.x
    m.on_battery(20.0)
    t = fly(m, body, t, 60.0)
    assert states(m)[-2:] == ['LAND', 'DONE']
    assert 'while the localizer is LOST' in m.events[-2][3]
    assert body.x == pytest.approx(x_lost, abs=1e-6) and body.x > 20.0


def test_flight_modes_name_every_state():
    from skyloc_coverage.mission import FLIGHT_MODES, STATES
    from skyloc_localization.rate import MODES
    assert set(FLIGHT_MODES) == set(STATES)
    assert set(FLIGHT_MODES.values()) <= set(MODES)     # modes the localizer knows


def test_bad_configuration_and_input_are_refused():
    with pytest.raises(ValueError, match="'altitude' \\(200.0 m\\) is above 'max_altitude'"):
        Mission(MissionConfig(altitude=200.0))
    with pytest.raises(ValueError, match="'climb_rate' must be a positive number"):
        Mission(MissionConfig(climb_rate=0.0))
    m = Mission()
    with pytest.raises(ValueError, match='non-finite'):
        m.on_pose(0.0, float('nan'), 0.0, 0.0, 0.0)
    m.on_battery(float('nan'))
    assert m.battery is None


def test_point_ahead_along_a_path():
    path = [(0.0, 0.0), (100.0, 0.0), (100.0, 100.0)]
    assert point_ahead(path, (10.0, 5.0), 50.0) == pytest.approx((60.0, 0.0))
    assert point_ahead(path, (90.0, 0.0), 50.0) == pytest.approx((100.0, 40.0))
    assert point_ahead(path, (0.0, 0.0), 1000.0) == pytest.approx((100.0, 100.0))
    assert point_ahead([], (0.0, 0.0), 10.0) is None
