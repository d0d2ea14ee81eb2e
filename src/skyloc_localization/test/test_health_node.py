"""The health node: its sysfs readers on this machine's real files, the thermal hysteresis,
and the node as a real process over DDS, with the temperature file it reads under the test's
control (the Pi's thermal zone is a one-line text file of millidegrees)."""

import os

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import pytest
from skyloc_sim.dds import configure_dds
from skyloc_sim.testing import start_node, stop_process, TestNode
from std_msgs.msg import Float32

from skyloc_localization.health_node import (LATCHED, read_meminfo, read_number,
                                             ThermalGovernor, throttle_flags)

configure_dds(start=__file__)
DOMAIN = 230 + os.getpid() % 3


def test_readers_on_this_machine_and_on_bad_files(tmp_path):
    mem = read_meminfo('/proc/meminfo')
    assert mem['total_mb'] > 100 and 0 < mem['available_mb'] <= mem['total_mb']
    assert read_meminfo(str(tmp_path / 'none')) == {}
    bad = tmp_path / 'bad'
    bad.write_text('hot\n')
    assert read_number(str(bad)) is None and read_number(str(tmp_path / 'none')) is None
    good = tmp_path / 'temp'
    good.write_text('48312\n')
    assert read_number(str(good)) == 48312.0
    flags = tmp_path / 'get_throttled'
    flags.write_text('0x50005\n')
    assert read_number(str(flags), base=16) == 0x50005
    assert throttle_flags(0x50005) == ['under-voltage now', 'throttled now',
                                       'under-voltage has occurred',
                                       'throttling has occurred']
    assert throttle_flags(None) == [] and throttle_flags(0) == []


def test_thermal_hysteresis():
    g = ThermalGovernor(75.0, 70.0)
    assert not g.update(60.0) and not g.hot
    assert g.update(75.0) and g.hot
    assert not g.update(72.0) and g.hot        # between the two: stays hot
    assert not g.update(None) and g.hot        # unknown: no change
    assert g.update(69.9) and not g.hot
    with pytest.raises(ValueError):
        ThermalGovernor(70.0, 75.0)


def _health(msgs):
    return [s for m in msgs for s in m.status if s.name.startswith('health')]


def test_health_node_caps_the_query_rate_when_hot(tmp_path):
    temp = tmp_path / 'temp'
    temp.write_text('55000\n')
    proc = start_node('skyloc_localization', 'health', 'health',
                      {'period_s': 0.3, 'thermal_zone': str(temp),
                       'throttled_file': str(tmp_path / 'no_such_file'),
                       'throttle_temp_c': 75.0, 'resume_temp_c': 70.0,
                       'critical_temp_c': 85.0, 'hot_rate_cap_hz': 0.2},
                      DOMAIN, tmp_path)
    t = TestNode('health_test', DOMAIN)
    caps, diags = [], []
    try:
        t.node.create_subscription(Float32, '/skyloc/query_rate_cap',
                                   lambda m: caps.append(m.data), LATCHED)
        t.node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 10)
        pub = t.node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        assert t.wait_until(lambda: caps and _health(diags), 30.0), 'no cap / health report'
        assert caps[-1] == 0.0
        status = _health(diags)[-1]
        values = {kv.key: kv.value for kv in status.values}
        assert status.level == DiagnosticStatus.OK
        assert float(values['cpu_temp_c']) == pytest.approx(55.0)
        assert values['query_rate_cap_hz'] == 'none'
        assert 'throttled' not in values           # no firmware file here: left out
        assert float(values['mem_total_mb']) > 100
        # a localizer's latency is picked up from its diagnostics
        loc = DiagnosticStatus(name='localizer: pose', level=DiagnosticStatus.OK)
        loc.values = [KeyValue(key='query_ms_mean', value='123.4')]
        for _ in range(5):
            pub.publish(DiagnosticArray(status=[loc]))
            t.spin(0.2)
        assert t.wait_until(lambda: any(
            kv.key == 'localizer_query_ms_mean' and kv.value == '123.4'
            for kv in _health(diags)[-1].values), 10.0)
        # hot: the cap goes out and the report warns
        temp.write_text('78500\n')
        assert t.wait_until(lambda: caps[-1] == pytest.approx(0.2), 10.0)
        assert t.wait_until(lambda: _health(diags)[-1].level == DiagnosticStatus.WARN, 5.0)
        assert 'hot: 78.5 C' in _health(diags)[-1].message
        # still hot between the thresholds, then cooled: the cap is lifted
        temp.write_text('72000\n')
        t.spin(1.0)
        assert caps[-1] == pytest.approx(0.2)
        temp.write_text('65000\n')
        assert t.wait_until(lambda: caps[-1] == 0.0, 10.0)
        assert t.wait_until(lambda: _health(diags)[-1].level == DiagnosticStatus.OK, 5.0)
        # an unreadable temperature: no crash, the cap stays as it was
        temp.write_text('garbage\n')
        n = len(_health(diags))
        assert t.wait_until(lambda: len(_health(diags)) >= n + 3, 10.0)
        assert proc.poll() is None
    finally:
        t.close()
        code, out = stop_process(proc)
    assert code == 0, out
    assert 'query rate capped at 0.2 Hz' in out and 'cap lifted' in out
