"""Replay: a recorded flight (rosbag2) through the pipeline, graph config/graphs/replay.yaml.

    ros2 launch launch/replay.launch.py bag:=runs/<timestamp>/bag [rate:=2.0] [rviz:=true]

Run from the workspace root after `source install/setup.bash`. The same graph runs without
ROS 2 launch, recorded and with its report, as `skyloc run replay --bag DIR`.
"""

from skyloc_sim.launch_graph import graph_launch_description


def generate_launch_description():
    return graph_launch_description('replay', __file__)
