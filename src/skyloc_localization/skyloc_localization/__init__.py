"""Tile database, retrieval, probability map, IMU/baro Kalman filter and the localizer node."""
