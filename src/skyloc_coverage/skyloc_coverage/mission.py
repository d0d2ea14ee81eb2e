"""The mission state machine of a survey flight, without ROS (node: mission_node.py).

    WAITING -> TAKEOFF -> SURVEY -> RETURN -> LAND -> DONE
                            |  ^       |  ^     ^
                 LOST       v  |       v  |     |  LOST for `hold_timeout_s`, or a low battery
                          HOLD  <-----'  -'     |  while LOST: land where it is
                            '-------------------'
    HOLD: stop, climb `lost_climb_m`; back to the state it came from once the localizer has
    not been LOST for `recover_s`.

Low battery (at or below `low_battery_percent`) sends any flying state to RETURN, unless the
localizer is LOST: flying "home" on a pose known to be wrong goes anywhere, so it lands where
it is instead (as PX4's failsafe lands without a position estimate). The same goes for a LOST
that lasts `hold_timeout_s`. The survey ends at `coverage_goal_percent` or when the coverage
planner says it is complete. During the survey the path follower's command is passed through
(with the altitude held); in the other states the mission commands the vehicle itself. Every
command is a body-frame velocity (x forward, y left, z up, yaw rate), the multirotor /cmd_vel
of the simulator and of MAVROS' setpoint_velocity. Positions are in the map frame, altitude
above the take-off point. FLIGHT_MODES gives the /skyloc/flight_mode of each state.
"""

from dataclasses import dataclass
import math

STATES = ('WAITING', 'TAKEOFF', 'SURVEY', 'HOLD', 'RETURN', 'LAND', 'DONE')
FLYING = ('TAKEOFF', 'SURVEY', 'HOLD', 'RETURN')
# the localizer's /skyloc/flight_mode (its query rate; 'hold': it holds the velocity at zero)
FLIGHT_MODES = {'WAITING': 'takeoff', 'TAKEOFF': 'takeoff', 'SURVEY': 'survey',
                'HOLD': 'hold', 'RETURN': 'cruise', 'LAND': 'land', 'DONE': 'land'}


@dataclass
class MissionConfig:
    altitude: float = 100.0          # survey altitude above the take-off point, m
    climb_rate: float = 3.0          # m/s, take-off and failsafe climb
    descent_rate: float = 2.0        # m/s, landing (slower below `flare_altitude`)
    flare_altitude: float = 8.0      # m
    return_speed: float = 10.0       # m/s horizontal on the way home
    home_tolerance_m: float = 3.0    # over home: land
    altitude_gain: float = 0.8       # vertical speed per metre of altitude error, 1/s
    ground_wait_s: float = 2.0       # on the ground after the first pose, s
    coverage_goal_percent: float = 99.0
    low_battery_percent: float = 25.0
    lost_climb_m: float = 20.0       # LOST: climb this much above the survey altitude
    max_altitude: float = 150.0      # never above, m
    recover_s: float = 3.0           # localizer not LOST this long: resume the survey
    hold_timeout_s: float = 120.0    # LOST longer than this: land where it is
    landed_altitude: float = 0.5     # m above the take-off point counts as landed
    # or: descending for touchdown_s without the altitude dropping touchdown_drop_m (on the
    # ground with a barometer that drifted or stepped: its altitude never reaches 0.5 m)
    touchdown_s: float = 4.0
    touchdown_drop_m: float = 0.3

    def validate(self):
        for name in ('altitude', 'climb_rate', 'descent_rate', 'return_speed',
                     'home_tolerance_m', 'altitude_gain', 'max_altitude', 'hold_timeout_s'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"mission parameter '{name}' must be a positive number, "
                                 f'got {value!r}')
        if self.altitude > self.max_altitude:
            raise ValueError(f"mission parameter 'altitude' ({self.altitude} m) is above "
                             f"'max_altitude' ({self.max_altitude} m)")
        if not 0.0 <= self.low_battery_percent < 100.0:
            raise ValueError("mission parameter 'low_battery_percent' must be in [0, 100), "
                             f'got {self.low_battery_percent}')


@dataclass
class Command:
    vx: float = 0.0     # body frame, m/s
    vy: float = 0.0
    vz: float = 0.0
    wz: float = 0.0     # yaw rate, rad/s


class Mission:
    """Feed it poses, localizer states, battery, coverage progress and the follower's command;
    `step(t)` returns the command to send and the state changes are in `events`."""

    def __init__(self, config=None):
        self.cfg = config or MissionConfig()
        self.cfg.validate()
        self.state = 'WAITING'
        self.since = None            # time the current state began, s
        self.reason = 'waiting for the pose'
        self.pose = None             # (t, x, y, z, yaw)
        self.home = None             # (x, y): where the pose first was
        self.localizer = 'UNKNOWN'
        self.not_lost_since = None
        self.battery = None
        self.progress = 0.0
        self.land_z = []         # (t, z) while landing: touchdown detection
        self.survey_complete = False
        self.follower = Command()
        self.follower_t = None
        self.events = []             # (t, from, to, reason)
        self.first_pose_t = None
        self.resume = 'SURVEY'       # where HOLD goes back to

    # ---------------------------------------------------------------------------- inputs
    def on_pose(self, t, x, y, z, yaw):
        values = (t, x, y, z, yaw)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f'pose with a non-finite value: {values}')
        self.pose = values
        if self.home is None:
            self.home = (x, y)
            self.first_pose_t = t

    def on_localizer_state(self, t, state):
        state = str(state).upper()
        if state != 'LOST' and (self.localizer == 'LOST' or self.not_lost_since is None):
            self.not_lost_since = t
        self.localizer = state

    def on_battery(self, percent):
        if math.isfinite(percent):
            self.battery = float(percent)

    def on_progress(self, percent):
        """Coverage progress, %: the largest reported (coverage only grows; it arrives on two
        paths, /coverage/progress and the planner's /diagnostics)."""
        if math.isfinite(percent):
            self.progress = max(self.progress, float(percent))

    def on_survey_complete(self):
        self.survey_complete = True

    def on_follower(self, t, command):
        self.follower = command
        self.follower_t = t

    # ---------------------------------------------------------------------------- logic
    def _go(self, t, state, reason):
        self.land_z = []
        self.events.append((t, self.state, state, reason))
        self.state, self.since, self.reason = state, t, reason

    def _hold_altitude(self, target):
        z = self.pose[3]
        cfg = self.cfg
        limit = cfg.climb_rate if target > z else cfg.descent_rate
        return max(-limit, min(limit, cfg.altitude_gain * (target - z)))

    def _transitions(self, t):
        cfg = self.cfg
        s = self.state
        if s == 'WAITING':
            if self.pose is not None and t - self.first_pose_t >= cfg.ground_wait_s:
                self._go(t, 'TAKEOFF', f'pose available, climbing to {cfg.altitude:g} m')
            return
        low = self.battery is not None and self.battery <= cfg.low_battery_percent
        if s in FLYING and low and self.localizer == 'LOST':
            self._go(t, 'LAND', f'low battery ({self.battery:.0f}% <= '
                                f'{cfg.low_battery_percent:g}%) while the localizer is LOST: '
                                'position unknown, landing here')
            return
        if s in FLYING and low and s not in ('RETURN', 'HOLD'):
            self._go(t, 'RETURN', f'low battery ({self.battery:.0f}% <= '
                                  f'{cfg.low_battery_percent:g}%)')
            return
        if s == 'TAKEOFF' and self.pose[3] >= cfg.altitude - min(2.0, 0.1 * cfg.altitude):
            self._go(t, 'SURVEY', f'at {self.pose[3]:.0f} m: surveying')
        elif s in ('SURVEY', 'RETURN') and self.localizer == 'LOST':
            self.resume = s
            self._go(t, 'HOLD', 'localizer LOST: holding position and climbing')
        elif s == 'SURVEY':
            if self.progress >= cfg.coverage_goal_percent or self.survey_complete:
                self._go(t, 'RETURN', f'survey complete ({self.progress:.1f}% covered)')
        elif s == 'HOLD':
            if self.localizer != 'LOST' and self.not_lost_since is not None and \
                    t - self.not_lost_since >= cfg.recover_s:
                if low:
                    self._go(t, 'RETURN', f'localizer {self.localizer} again, low battery '
                                          f'({self.battery:.0f}%): returning home')
                elif self.resume == 'RETURN':
                    self._go(t, 'RETURN', f'localizer {self.localizer} again: returning home')
                else:
                    self._go(t, 'SURVEY', f'localizer {self.localizer} again: resuming the '
                                          'survey')
            elif t - self.since >= cfg.hold_timeout_s:
                self._go(t, 'LAND', f'localizer LOST for {cfg.hold_timeout_s:g} s: position '
                                    'unknown, landing here')
        elif s == 'RETURN' and self._home_distance() <= cfg.home_tolerance_m:
            self._go(t, 'LAND', 'over home: landing')
        elif s == 'LAND':
            z = self.pose[3]
            self.land_z.append((t, z))
            while len(self.land_z) > 2 and self.land_z[1][0] <= t - cfg.touchdown_s:
                self.land_z.pop(0)
            t_old, z_old = self.land_z[0]
            if z <= cfg.landed_altitude:
                self._go(t, 'DONE', f'landed {self._home_distance():.1f} m from home')
            elif t - self.since >= cfg.touchdown_s and t - t_old >= cfg.touchdown_s and \
                    z_old - z < cfg.touchdown_drop_m:
                self._go(t, 'DONE', f'touchdown {self._home_distance():.1f} m from home: no '
                                    f'descent for {cfg.touchdown_s:g} s at an estimated '
                                    f'{z:.1f} m (barometer offset?)')

    def _home_distance(self):
        return math.hypot(self.pose[1] - self.home[0], self.pose[2] - self.home[1])

    def step(self, t):
        """The command at time t (s); Command() (zero) when there is nothing to do."""
        if self.since is None:
            self.since = t
        self._transitions(t)
        cfg, s = self.cfg, self.state
        if s in ('WAITING', 'DONE') or self.pose is None:
            return Command()
        if s == 'TAKEOFF':
            return Command(vz=min(cfg.climb_rate, self._hold_altitude(cfg.altitude) + 0.5))
        if s == 'SURVEY':
            f = self.follower
            return Command(f.vx, f.vy, self._hold_altitude(cfg.altitude), f.wz)
        if s == 'HOLD':
            return Command(vz=self._hold_altitude(min(cfg.altitude + cfg.lost_climb_m,
                                                      cfg.max_altitude)))
        if s == 'RETURN':
            _, x, y, _, yaw = self.pose
            dx, dy = self.home[0] - x, self.home[1] - y
            dist = math.hypot(dx, dy)
            speed = min(cfg.return_speed, 0.5 * dist)      # slow down over the last metres
            ex, ey = (dx / dist * speed, dy / dist * speed) if dist > 1e-6 else (0.0, 0.0)
            c, s_ = math.cos(yaw), math.sin(yaw)         # world -> body
            return Command(c * ex + s_ * ey, -s_ * ex + c * ey,
                           self._hold_altitude(cfg.altitude))
        # LAND
        z = self.pose[3]
        rate = cfg.descent_rate if z > cfg.flare_altitude else max(0.3, cfg.descent_rate / 4)
        return Command(vz=-rate)
