"""Node `health`: the on-board computer's health on /diagnostics, and the thermal query cap.

What the seeds' PerformanceTracker and PiZeroHardwareTest measured, as a node: CPU temperature
(/sys/class/thermal), CPU frequency (cpufreq), the firmware's throttling flags (Raspberry Pi
kernels expose them as /sys/devices/platform/soc/soc:firmware/get_throttled), memory
(/proc/meminfo), load, and each node's per-query latency as it reports it on /diagnostics
(the localizer's query_ms_mean, the embedder's latency). All are published once per `period_s`
as one DiagnosticStatus `health: <host>`.

Thermal policy: at or above `throttle_temp_c` it publishes /skyloc/query_rate_cap (std_msgs/
Float32, latched) = `hot_rate_cap_hz`, so the localizer asks for fewer queries; below
`resume_temp_c` (hysteresis) it lifts the cap (publishes 0: no cap). WARN while hot or while
the firmware reports throttling or under-voltage now; ERROR at `critical_temp_c`. A sensor
file that does not exist (a PC, a container) is reported once and left out, never an error.
"""

import glob
import math
import os
import socket

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float32

from skyloc_sim.node_main import declare_parameters, run_node

PARAMETERS = [
    ('period_s', 2.0, 'Seconds between health reports (wall clock: also with sim time)'),
    ('thermal_zone', 'auto', "CPU temperature file (millidegrees C), or 'auto': the "
     "thermal zone whose type is cpu-thermal / x86_pkg_temp, else thermal_zone0"),
    ('cpufreq_file', '/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq',
     'Current CPU frequency file (kHz)'),
    ('throttled_file', '/sys/devices/platform/soc/soc:firmware/get_throttled',
     "Raspberry Pi firmware throttling flags (hex; vcgencmd get_throttled's bits)"),
    ('meminfo_file', '/proc/meminfo', 'Memory figures (MemTotal, MemAvailable)'),
    ('throttle_temp_c', 75.0, 'At or above this CPU temperature the query rate is capped, C '
     '(the Pi firmware itself throttles at 80-85 C)'),
    ('resume_temp_c', 70.0, 'Below this temperature the cap is lifted (hysteresis), C'),
    ('critical_temp_c', 82.0, 'ERROR on /diagnostics at or above this temperature, C'),
    ('hot_rate_cap_hz', 0.2, 'The query-rate cap sent to the localizer while hot, Hz'),
    ('min_available_mb', 50.0, 'WARN when the available memory is below this, MB'),
]

# vcgencmd get_throttled bits: now (0-3) and since boot (16-19)
THROTTLE_BITS = {0: 'under-voltage now', 1: 'frequency capped now', 2: 'throttled now',
                 3: 'soft temperature limit now', 16: 'under-voltage has occurred',
                 17: 'frequency capping has occurred', 18: 'throttling has occurred',
                 19: 'soft temperature limit has occurred'}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def find_thermal_zone(root='/sys/class/thermal'):
    """The CPU's temperature file: a zone typed like a CPU sensor, else the first, else ''."""
    zones = sorted(glob.glob(os.path.join(root, 'thermal_zone*')))
    for zone in zones:
        try:
            with open(os.path.join(zone, 'type')) as stream:
                kind = stream.read().strip().lower()
        except OSError:
            continue
        if kind in ('cpu-thermal', 'cpu_thermal', 'x86_pkg_temp', 'soc_thermal', 'cpu'):
            return os.path.join(zone, 'temp')
    return os.path.join(zones[0], 'temp') if zones else ''


def read_number(path, base=10):
    """The first token of a text file as a number, or None (missing, unreadable, not one)."""
    try:
        with open(path) as stream:
            token = stream.read().split()[0]
        return float(int(token, 16)) if base == 16 else float(token)
    except (OSError, IndexError, ValueError):
        return None


def read_meminfo(path):
    """{'total_mb', 'available_mb'} from /proc/meminfo, or {} when unreadable."""
    out = {}
    try:
        with open(path) as stream:
            for line in stream:
                key, _, rest = line.partition(':')
                if key in ('MemTotal', 'MemAvailable'):
                    out['total_mb' if key == 'MemTotal' else 'available_mb'] = \
                        float(rest.split()[0]) / 1024.0
    except (OSError, ValueError, IndexError):
        return {}
    return out


def throttle_flags(value):
    """The names of the set bits of a get_throttled value."""
    if value is None:
        return []
    bits = int(value)
    return [name for bit, name in sorted(THROTTLE_BITS.items()) if bits & (1 << bit)]


class ThermalGovernor:
    """Hysteresis between throttle_temp_c and resume_temp_c: hot -> cap, cool -> no cap."""

    def __init__(self, throttle_c, resume_c):
        if not resume_c < throttle_c:
            raise ValueError(f'resume_temp_c ({resume_c}) must be below throttle_temp_c '
                             f'({throttle_c})')
        self.throttle_c, self.resume_c = throttle_c, resume_c
        self.hot = False

    def update(self, temp_c):
        """New temperature (None: unknown, no change); True when the state changed."""
        if temp_c is None or not math.isfinite(temp_c):
            return False
        before = self.hot
        if temp_c >= self.throttle_c:
            self.hot = True
        elif temp_c < self.resume_c:
            self.hot = False
        return self.hot != before


class HealthNode(Node):
    def __init__(self, **kwargs):
        super().__init__('health', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.cfg = p
        if float(p['period_s']) <= 0:
            raise ValueError(f"period_s must be positive, got {p['period_s']}")
        self.governor = ThermalGovernor(float(p['throttle_temp_c']), float(p['resume_temp_c']))
        self.thermal = find_thermal_zone() if p['thermal_zone'] == 'auto' else p['thermal_zone']
        self.host = socket.gethostname()
        self.latency = {}        # node status name -> (key, value text)
        self.missing = set()
        self.cap_pub = self.create_publisher(Float32, '/skyloc/query_rate_cap', LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.cap_pub.publish(Float32(data=0.0))     # no cap until it is hot
        self.create_timer(float(p['period_s']), self._report,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.temps = []
        self.get_logger().info(
            f"health of {self.host}: temperature {self.thermal or 'not available'}, cap "
            f"{p['hot_rate_cap_hz']:g} Hz at >= {p['throttle_temp_c']:g} C (lifted below "
            f"{p['resume_temp_c']:g} C)")

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.startswith('health'):
                continue
            for kv in status.values:
                if kv.key in ('query_ms_mean', 'latency_ms_mean', 'latency_ms_median'):
                    self.latency[status.name.split(':')[0]] = (kv.key, kv.value)

    def _missing_once(self, what, path):
        if what not in self.missing:
            self.missing.add(what)
            self.get_logger().info(f'{what}: {path or "no file"} not available here: left out')

    def _report(self):
        p = self.cfg
        values = {}
        level, problems = DiagnosticStatus.OK, []
        temp = read_number(self.thermal) if self.thermal else None
        if temp is None:
            self._missing_once('CPU temperature', self.thermal)
        else:
            temp /= 1000.0
            values['cpu_temp_c'] = f'{temp:.1f}'
            self.temps = (self.temps + [temp])[-30:]
            values['cpu_temp_max_recent_c'] = f'{max(self.temps):.1f}'
        if self.governor.update(temp):
            cap = float(p['hot_rate_cap_hz']) if self.governor.hot else 0.0
            self.cap_pub.publish(Float32(data=cap))
            if self.governor.hot:
                self.get_logger().warning(f'CPU at {temp:.1f} C (>= {p["throttle_temp_c"]:g} C)'
                                          f': query rate capped at {cap:g} Hz')
            else:
                self.get_logger().info(f'CPU at {temp:.1f} C (< {p["resume_temp_c"]:g} C): '
                                       'query rate cap lifted')
        values['query_rate_cap_hz'] = f"{p['hot_rate_cap_hz']:g}" if self.governor.hot \
            else 'none'
        if self.governor.hot:
            level = DiagnosticStatus.WARN
            problems.append(f'hot: {temp:.1f} C, queries capped at {p["hot_rate_cap_hz"]:g} Hz')
        if temp is not None and temp >= float(p['critical_temp_c']):
            level = DiagnosticStatus.ERROR
            problems.insert(0, f'critical CPU temperature {temp:.1f} C')
        freq = read_number(p['cpufreq_file'])
        if freq is None:
            self._missing_once('CPU frequency', p['cpufreq_file'])
        else:
            values['cpu_freq_mhz'] = f'{freq / 1000.0:.0f}'
        flags = throttle_flags(read_number(p['throttled_file'], base=16))
        if os.path.exists(p['throttled_file']):
            values['throttled'] = ', '.join(flags) or 'no'
            now = [f for f in flags if f.endswith('now')]
            if now:
                level = max(level, DiagnosticStatus.WARN)
                problems.append('firmware: ' + ', '.join(now))
        else:
            self._missing_once('firmware throttling flags', p['throttled_file'])
        mem = read_meminfo(p['meminfo_file'])
        if mem:
            values['mem_total_mb'] = f"{mem.get('total_mb', 0):.0f}"
            values['mem_available_mb'] = f"{mem.get('available_mb', 0):.0f}"
            if mem.get('available_mb', math.inf) < float(p['min_available_mb']):
                level = max(level, DiagnosticStatus.WARN)
                problems.append(f"low memory: {mem['available_mb']:.0f} MB available")
        try:
            values['load_1min'] = f'{os.getloadavg()[0]:.2f}'
        except OSError:
            pass
        values['cpu_count'] = str(os.cpu_count())
        for node, (key, value) in sorted(self.latency.items()):
            values[f'{node}_{key}'] = value
        status = DiagnosticStatus(name=f'health: {self.host}', hardware_id=self.host,
                                  level=level)
        status.message = '; '.join(problems) if problems else (
            f"CPU {values.get('cpu_temp_c', '?')} C, {values.get('cpu_freq_mhz', '?')} MHz, "
            f"{values.get('mem_available_mb', '?')} MB free")
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)


NODE_CLASS = HealthNode


def main(args=None):
    run_node(HealthNode, args)


if __name__ == '__main__':
    main()
