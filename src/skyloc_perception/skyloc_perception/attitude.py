"""Attitude and barometric altitude helpers (no ROS)."""

import math

SEA_LEVEL_PRESSURE = 101325.0


def attitude_from_quaternion(x, y, z, w):
    """(roll, pitch, yaw) in rad of a quaternion, ZYX (REP 103: yaw ENU, 0 = east, CCW)."""
    roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2.0 * (w * y - z * x))))
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return roll, pitch, yaw


def isa_altitude(pressure_pa, p0=SEA_LEVEL_PRESSURE):
    """ISA troposphere altitude (m) above the level where the pressure is p0."""
    return (1.0 - (pressure_pa / p0) ** (1.0 / 5.25588)) / 2.25577e-5


def baro_altitude(pressure_pa, reference_pa):
    """Height (m) above the point where the barometer read reference_pa (the take-off)."""
    return isa_altitude(pressure_pa, reference_pa)
