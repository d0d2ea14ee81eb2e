"""Static check of launch/*.launch.py and config/graphs/*.yaml (no `launch` package here).

For each launch file: it parses; `generate_launch_description()` runs against recording
stand-ins of `launch`, `launch_ros` and `webots_ros2_driver`; it declares every argument of
its graph (params_file, use_sim_time, world, rviz at least), each with a description; the
Node actions it builds (with every boolean argument off and on) are exactly the graph's
nodes; each node names an existing package executable (a console script of a package under
src/ whose module defines `main` and `NODE_CLASS`) and an existing params file; file
arguments under config/ exist.
"""

import ast
import contextlib
import glob
import os
import sys
import types

from skyloc_sim.graph import GraphError, load_graph

REQUIRED = ('params_file', 'use_sim_time', 'world', 'rviz')
STUBBED = ('launch', 'launch.actions', 'launch.substitutions', 'launch.conditions',
           'launch.event_handlers', 'launch.events', 'launch.launch_description_sources',
           'launch_ros', 'launch_ros.actions', 'launch_ros.substitutions',
           'webots_ros2_driver', 'webots_ros2_driver.webots_launcher',
           'webots_ros2_driver.webots_controller', 'webots_ros2_driver.utils',
           'ament_index_python', 'ament_index_python.packages')


class Action:
    """A recorded launch action: its kind, positional and keyword arguments."""

    def __init__(self, kind, *args, **kwargs):
        self.kind, self.args, self.kwargs = kind, args, kwargs

    def __getattr__(self, name):
        return Action(f'{self.kind}.{name}')

    def __call__(self, *args, **kwargs):
        return Action(self.kind + '()', *args, **kwargs)

    def __repr__(self):
        return f'{self.kind}({self.kwargs})'


class LaunchConfiguration(Action):
    def __init__(self, name, default=None):
        super().__init__('LaunchConfiguration', name)
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


class StubModule(types.ModuleType):
    """A module whose every attribute is a recording action class."""

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        if name == 'LaunchConfiguration':
            return LaunchConfiguration
        if name == 'get_package_share_directory':
            return lambda pkg: os.path.join('/opt/ros/share', pkg)
        return lambda *a, **k: Action(name, *a, **k)


@contextlib.contextmanager
def stubbed_launch_modules():
    saved = {name: sys.modules.get(name) for name in STUBBED}
    for name in STUBBED:
        sys.modules[name] = StubModule(name)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def walk(actions):
    """All recorded actions, descending into LaunchDescription/Group lists."""
    for action in actions:
        if not isinstance(action, Action):
            continue
        yield action
        for value in list(action.args) + list(action.kwargs.values()):
            if isinstance(value, (list, tuple)):
                yield from walk(value)
            elif isinstance(value, Action):
                yield from walk([value])


def run_launch_file(path, values):
    """Execute generate_launch_description(); returns (declared args, node actions)."""
    source = open(path).read()
    ast.parse(source, filename=path)
    with stubbed_launch_modules():
        namespace = {'__file__': os.path.abspath(path), '__name__': 'launch_file'}
        exec(compile(source, path, 'exec'), namespace)
        if 'generate_launch_description' not in namespace:
            raise GraphError(f'{path}: defines no generate_launch_description()')
        description = namespace['generate_launch_description']()
        actions = list(walk([description]))
        declared = {a.args[0] if a.args else a.kwargs.get('name'): a for a in actions
                    if a.kind == 'DeclareLaunchArgument'}
        context = types.SimpleNamespace(launch_configurations=dict(values))
        nodes = [a for a in actions if a.kind == 'Node']
        for opaque in (a for a in actions if a.kind == 'OpaqueFunction'):
            produced = opaque.kwargs['function'](context) or []
            nodes += [a for a in walk(produced) if a.kind == 'Node']
    return declared, nodes


def package_executables(root, package):
    """{console script name: module} of a workspace package, from its setup.py."""
    setup_py = os.path.join(root, 'src', package, 'setup.py')
    if not os.path.isfile(setup_py):
        return None
    tree = ast.parse(open(setup_py).read(), filename=setup_py)
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == 'console_scripts':
                    for item in value.elts:
                        name, _, target = item.value.partition('=')
                        scripts[name.strip()] = target.strip().split(':')[0]
    return scripts


def check_node_executable(root, spec):
    """Problems with a node's package/executable (empty list when fine)."""
    if spec.external:
        return []
    scripts = package_executables(root, spec.package)
    if scripts is None:
        return [f"node '{spec.name}': package '{spec.package}' is not under src/"]
    if spec.executable not in scripts:
        return [f"node '{spec.name}': package '{spec.package}' has no executable "
                f"'{spec.executable}' (console_scripts: {', '.join(sorted(scripts))})"]
    module_file = os.path.join(root, 'src', spec.package, *scripts[spec.executable].split('.'))
    module_file += '.py'
    if not os.path.isfile(module_file):
        return [f"node '{spec.name}': module file {module_file} is missing"]
    tree = ast.parse(open(module_file).read(), filename=module_file)
    names = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
             if isinstance(t, ast.Name)}
    names |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    missing = [n for n in ('main', 'NODE_CLASS') if n not in names]
    return [f"node '{spec.name}': {module_file} defines no {', '.join(missing)}"] if missing \
        else []


def check_launch_file(path, root):
    """All problems found in one launch file and its graph (empty list when fine)."""
    name = os.path.basename(path).replace('.launch.py', '')
    try:
        graph = load_graph(name, root)
    except GraphError as exc:
        return [str(exc)]
    problems = []
    for arg in REQUIRED:
        if arg not in graph.arguments:
            problems.append(f"{graph.path}: argument '{arg}' is not declared")
    booleans = [a for a, s in graph.arguments.items()
                if str(s['default']).lower() in ('true', 'false')]
    for flip in [None] + booleans:
        values = graph.defaults()
        if flip:
            values[flip] = 'false' if values[flip].lower() == 'true' else 'true'
        try:
            declared, nodes = run_launch_file(path, values)
        except Exception as exc:  # anything the launch file raises is a finding
            return problems + [f'{path}: generate_launch_description() failed: '
                               f'{type(exc).__name__}: {exc}']
        if flip is None:
            for arg in graph.arguments:
                if arg not in declared:
                    problems.append(f"{path}: does not declare argument '{arg}'")
                elif not declared[arg].kwargs.get('description'):
                    problems.append(f"{path}: argument '{arg}' has no description")
        want = sorted((n.package, n.executable, n.name) for n in graph.active_nodes(values))
        got = sorted((n.kwargs.get('package'), n.kwargs.get('executable'),
                      n.kwargs.get('name')) for n in nodes)
        extra = [g for g in got if g not in want]
        missing = [w for w in want if w not in got]
        if missing or extra:
            problems.append(f'{path} ({flip or "defaults"}): nodes differ from {graph.path}: '
                            f'missing {missing}, not in the graph {extra}')
    for spec in graph.nodes:
        problems += check_node_executable(root, spec)
        params = graph.node_params_file(spec, graph.defaults())
        if params and not os.path.isfile(params):
            problems.append(f"node '{spec.name}': params file {params} does not exist")
        for arg in spec.arguments:
            if arg.startswith('config/') and not os.path.exists(graph.resolve(arg)):
                problems.append(f"node '{spec.name}': argument file {arg} does not exist")
    return problems


def check_main(files, root):
    """Check launch files (default: all of launch/); print findings; 0 when all pass."""
    files = files or sorted(glob.glob(os.path.join(root, 'launch', '*.launch.py')))
    if not files:
        print(f'check-launch: no launch files under {root}/launch')
        return 1
    failed = 0
    for path in files:
        problems = check_launch_file(path, root)
        rel = os.path.relpath(path, root)
        if problems:
            failed += 1
            print(f'FAIL {rel}')
            for problem in problems:
                print(f'  - {problem}')
        else:
            print(f'ok   {rel}')
    print(f'check-launch: {len(files) - failed} passed, {failed} failed')
    return 1 if failed else 0
