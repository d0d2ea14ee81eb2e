"""Raspberry Pi: the on-board skyloc graph of config/graphs/pi.yaml with real sensors.

    ros2 launch launch/pi.launch.py [params_file:=config/pi.yaml] [mavros:=true] [camera:=false]

Run from the workspace root after `source install/setup.bash`; camera, IMU, barometer and
LIDAR drivers are started separately (or by the system) and remapped to the topic contract.
The same graph runs without ROS 2 launch as `skyloc run pi --single-process`.
"""

from skyloc_sim.launch_graph import graph_launch_description


def generate_launch_description():
    return graph_launch_description('pi', __file__)
