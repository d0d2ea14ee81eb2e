"""Start-up validation of every node's parameters (skyloc_sim.node_main.check_parameter): a
bad value is refused with a message that names the parameter, and the node exits 1."""
import math
import os

import pytest
from skyloc_sim.dds import configure_dds
from skyloc_sim.node_main import check_parameter
from skyloc_sim.testing import start_node

configure_dds(start=__file__)


@pytest.mark.parametrize('name,default,value,message', [
    ('speed', 1.0, math.nan, "'speed' must be a finite number"),
    ('speed', 1.0, 'fast', "'speed' must be a number"),
    ('speed', 1.0, True, "'speed' must be a number"),
    ('pose_timeout_s', 0.5, -1.0, "'pose_timeout_s' must not be negative"),
    ('camera_rate', 5.0, -5, "'camera_rate' must not be negative"),
    ('max_query_rate_hz', 2.0, -0.1, "'max_query_rate_hz' must not be negative"),
])
def test_bad_values_are_refused_naming_the_parameter(name, default, value, message):
    with pytest.raises(ValueError, match=message):
        check_parameter(name, default, value)


@pytest.mark.parametrize('name,default,value', [
    ('speed', 1.0, 3),                 # an int for a float: launch arguments type by text
    ('max_range', math.inf, math.inf),  # a default of inf may stay inf
    ('origin_x', 0.0, -12.5),          # coordinates may be negative
    ('rate', 1.0, 0.0),                # 0 is a valid "off" where a node allows it
    ('world', '', 'a.yaml'),
])
def test_good_values_pass(name, default, value):
    check_parameter(name, default, value)


def test_a_node_with_a_negative_rate_exits_1_naming_it(tmp_path):
    domain = 150 + os.getpid() % 4
    proc = start_node('skyloc_sim', 'sim', 'sim', {'rate': -2.0}, domain, tmp_path)
    out, _ = proc.communicate(timeout=60)
    text = out.decode(errors='replace')
    assert proc.returncode == 1, text
    assert "parameter 'rate' must not be negative, got -2.0" in text
    assert 'Traceback' not in text
