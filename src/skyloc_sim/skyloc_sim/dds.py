"""The project's Fast DDS configuration: config/fastdds.xml as the default profiles file.

`configure_dds()` sets FASTDDS_DEFAULT_PROFILES_FILE (when not set already) before the first
participant of a process is created; the runner, the tests and the launch files call it, and
child processes inherit it. A user's own FASTDDS_DEFAULT_PROFILES_FILE is left alone.
"""

import os

from skyloc_sim.graph import GraphError, workspace_root

PROFILES_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'


def profiles_file(start=None):
    """config/fastdds.xml of the workspace above `start` (default: cwd, SKYLOC_ROOT), or None
    when the workspace has none."""
    path = os.path.join(workspace_root(start), 'config', 'fastdds.xml')
    return path if os.path.isfile(path) else None


def configure_dds(env=None, start=None):
    """Point Fast DDS at the profile of the workspace above `start` (a path in it; default:
    cwd, SKYLOC_ROOT) in `env` (default os.environ); returns the profile file in effect (None
    when neither is there)."""
    env = os.environ if env is None else env
    if not env.get(PROFILES_ENV):
        try:
            path = profiles_file(start)
        except GraphError:      # not run from a workspace: Fast DDS's own defaults
            return None
        if path:
            env[PROFILES_ENV] = path
            # the profile chooses the transports: a builtin-transport choice would fight it
            env.pop('FASTDDS_BUILTIN_TRANSPORTS', None)
    return env.get(PROFILES_ENV)
