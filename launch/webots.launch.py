"""Webots: the skyloc drone in Webots (webots_ros2) and the graph of config/graphs/webots.yaml.

    ros2 launch launch/webots.launch.py [world:=skyloc.wbt|PATH.wbt] [rviz:=true]
        [params_file:=config/webots.yaml] [use_sim_time:=true]

Run from the workspace root after `source install/setup.bash`, on a machine with Webots
R2025a and webots_ros2 (`ros-$ROS_DISTRO-webots-ros2`). The ground texture comes from
`make webots-world` (see worlds/skyloc.wbt). Starts Webots on the world, the drone's
WebotsController (devices and the skyloc_sim.webots_driver.SkylocDriver plugin, described by
urdf/skyloc_drone.urdf) and the graph's nodes; everything stops when Webots exits.
"""

import os

from ament_index_python.packages import get_package_share_directory, PackageNotFoundError
from launch import LaunchDescription
from launch.actions import EmitEvent, RegisterEventHandler, SetEnvironmentVariable
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from webots_ros2_driver.webots_controller import WebotsController
from webots_ros2_driver.webots_launcher import WebotsLauncher

from skyloc_sim.launch_graph import graph_actions
from skyloc_sim.webots_driver import PARAMS_ENV, ROOT_ENV, USE_SIM_TIME_ENV

ROBOT_NAME = 'skyloc_drone'


def skyloc_sim_share(root):
    """share/skyloc_sim of the install, else the source package (same worlds/ and urdf/)."""
    try:
        return get_package_share_directory('skyloc_sim')
    except (PackageNotFoundError, OSError):  # not built, or no ament environment
        return os.path.join(root, 'src', 'skyloc_sim')


def generate_launch_description():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _, actions = graph_actions('webots', __file__)
    share = skyloc_sim_share(root)
    use_sim_time = LaunchConfiguration('use_sim_time')

    webots = WebotsLauncher(
        world=PathJoinSubstitution([share, 'worlds', LaunchConfiguration('world')]))

    # The driver's Python plugin does not see the controller's ROS arguments: it reads its
    # parameter file and use_sim_time from these variables (skyloc_sim.webots_driver).
    driver_environment = [
        SetEnvironmentVariable(ROOT_ENV, root),
        SetEnvironmentVariable(PARAMS_ENV, LaunchConfiguration('params_file')),
        SetEnvironmentVariable(USE_SIM_TIME_ENV, use_sim_time),
    ]
    drone_driver = WebotsController(
        robot_name=ROBOT_NAME,
        parameters=[
            {'robot_description': os.path.join(share, 'urdf', ROBOT_NAME + '.urdf')},
            {'use_sim_time': use_sim_time},
        ],
        respawn=True,
    )

    shutdown_with_webots = RegisterEventHandler(
        event_handler=OnProcessExit(
            target_action=webots,
            on_exit=[EmitEvent(event=Shutdown())],
        ))

    return LaunchDescription(
        actions + driver_environment + [webots, drone_driver, shutdown_with_webots])
