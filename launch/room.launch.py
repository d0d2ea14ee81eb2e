"""Ground-robot coverage: the built-in simulator's room and the graph of config/graphs/room.yaml.

    ros2 launch launch/room.launch.py [world:=room|PATH.yaml] [rviz:=true]
        [params_file:=config/room.yaml] [rate:=4.0] [use_sim_time:=true]

Run from the workspace root after `source install/setup.bash`. The same graph runs without
ROS 2 launch as `skyloc run room`.
"""

from skyloc_sim.launch_graph import graph_launch_description


def generate_launch_description():
    return graph_launch_description('room', __file__)
