"""LIDAR occupancy mapping, boustrophedon coverage planning, replanning and path following."""
