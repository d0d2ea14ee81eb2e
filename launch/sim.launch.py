"""Simulation: the built-in simulator and the skyloc graph of config/graphs/sim.yaml.

    ros2 launch launch/sim.launch.py [world:=procedural|room|PATH.yaml] [rviz:=true]
        [params_file:=config/sim.yaml] [use_sim_time:=true]
        [bundle:=.cache/bundles/default] [database:=.cache/databases/default]

Run from the workspace root after `source install/setup.bash`. The same graph runs without
ROS 2 launch as `skyloc run sim`.
"""

from skyloc_sim.launch_graph import graph_launch_description


def generate_launch_description():
    return graph_launch_description('sim', __file__)
