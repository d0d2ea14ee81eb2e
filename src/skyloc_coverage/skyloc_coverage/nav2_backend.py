"""Nav2 execution backend: hand a coverage path to Nav2's controller server.

Thin on purpose: nav2_simple_commander's BasicNavigator.followPath does the work (it sends
nav2_msgs/action/FollowPath to the controller server). Nav2 is not installed where the tests
run; importing this module there is fine, constructing Nav2Backend raises Nav2Unavailable.
"""


class Nav2Unavailable(RuntimeError):
    """nav2_simple_commander cannot be imported (Nav2 is not installed)."""


class Nav2Backend:
    def __init__(self, node, controller_id='FollowPath'):
        try:
            from nav2_simple_commander.robot_navigator import BasicNavigator
        except ImportError as exc:
            raise Nav2Unavailable(f'Nav2 backend requested but nav2_simple_commander is not '
                                  f'installed ({exc})') from exc
        self.node = node
        self.controller_id = controller_id
        self.navigator = BasicNavigator(node_name=f'{node.get_name()}_nav2')
        node.get_logger().info('Nav2 backend: paths go to the controller server '
                               f"('{controller_id}') via followPath")

    def follow(self, path_msg):
        """Replace the path Nav2 follows (a new goal pre-empts the previous one)."""
        self.navigator.followPath(path_msg, controller_id=self.controller_id)
        self.node.get_logger().info(f'Nav2 followPath: {len(path_msg.poses)} poses')
