"""Build a ROS 2 LaunchDescription from a graph YAML (config/graphs/<name>.yaml).

Used by launch/*.launch.py on a machine with ROS 2 (`ros2 launch launch/sim.launch.py`):
every graph argument becomes a DeclareLaunchArgument, every node a launch_ros Node with the
params file, use_sim_time, argument parameters and remappings of the graph YAML. `launch`
and `launch_ros` are imported inside the function: this module imports without them.
"""

import os

from skyloc_sim.graph import load_graph


def graph_actions(graph_name, launch_file):
    """The launch actions of a graph: (graph, [DeclareLaunchArgument..., OpaqueFunction])."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    root = os.path.dirname(os.path.dirname(os.path.abspath(launch_file)))
    graph = load_graph(graph_name, root)
    actions = [DeclareLaunchArgument(name, default_value=str(spec['default']),
                                     description=spec['description'])
               for name, spec in graph.arguments.items()]
    # the nodes' Fast DDS transports (config/fastdds.xml: 8 MB shared-memory segment for the
    # camera frames), unless the user set a profile of their own
    profile = os.path.join(root, 'config', 'fastdds.xml')
    if not os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE') and os.path.isfile(profile):
        from launch.actions import SetEnvironmentVariable, UnsetEnvironmentVariable
        actions += [SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', profile),
                    UnsetEnvironmentVariable('FASTDDS_BUILTIN_TRANSPORTS')]

    def make_nodes(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in graph.arguments}
        nodes = []
        for spec in graph.active_nodes(values):
            parameters = [graph.node_parameters(spec, values)]
            params_file = graph.node_params_file(spec, values)
            if params_file:
                parameters.insert(0, params_file)
            nodes.append(Node(
                package=spec.package, executable=spec.executable, name=spec.name,
                output='screen', emulate_tty=True, parameters=parameters,
                remappings=spec.remap_pairs(values),
                arguments=[graph.resolve(a) if a.startswith('config/') else a
                           for a in spec.arguments]))
        return nodes

    actions.append(OpaqueFunction(function=make_nodes))
    return graph, actions


def graph_launch_description(graph_name, launch_file):
    """LaunchDescription with the graph's arguments and nodes."""
    from launch import LaunchDescription

    _, actions = graph_actions(graph_name, launch_file)
    return LaunchDescription(actions)
