"""Graph descriptions (config/graphs/*.yaml): the nodes of one deployment.

One file is read by both ``launch/<graph>.launch.py`` (on a machine with ROS 2) and by
``skyloc run <graph>`` (the project's own runner), so the two never drift. Format::

    graph: sim
    description: one line
    arguments:                 # launch arguments / runner options, with defaults and help
      params_file: {default: config/sim.yaml, description: ...}
      world: {default: procedural, description: ...}
    nodes:
      - package: skyloc_sim
        executable: sim
        name: sim
        params_file: config/sim.yaml       # optional; default: the params_file argument
        arg_parameters: [world]            # launch arguments passed as same-named parameters
        remappings: ['/a:=/b', '/imu/data:=${imu_topic}']  # optional; ${arg}: its value
        condition: rviz                    # optional: only when this boolean argument is true
        arguments: ['-d', config/skyloc.rviz]  # optional command-line arguments
        external: true                     # optional: a package outside this workspace (rviz2)

Relative paths are relative to the workspace root (the folder holding config/ and launch/).
This module imports nothing from ROS or launch.
"""

from dataclasses import dataclass, field
import os

import yaml

REQUIRED_ARGUMENTS = ('params_file', 'use_sim_time')


class GraphError(ValueError):
    """A graph YAML is missing, malformed or names something that does not exist."""


@dataclass
class NodeSpec:
    package: str
    executable: str
    name: str
    params_file: str = None
    arg_parameters: list = field(default_factory=list)
    remappings: list = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    arguments: list = field(default_factory=list)
    condition: str = None
    external: bool = False

    def remap_pairs(self, values=None):
        """Remappings as (from, to) tuples; '${arg}' is replaced by that argument's value."""
        pairs = []
        for item in self.remappings:
            text = str(item)
            for name, value in (values or {}).items():
                text = text.replace('${' + name + '}', str(value))
            if '${' in text:
                raise GraphError(f"node '{self.name}': remapping '{item}' names an argument "
                                 'the graph does not declare')
            src, _, dst = text.partition(':=')
            pairs.append((src, dst))
        return pairs


@dataclass
class Graph:
    name: str
    description: str
    arguments: dict
    nodes: list
    path: str
    root: str

    def defaults(self):
        """{argument: default value as a string}."""
        return {k: str(v['default']) for k, v in self.arguments.items()}

    def resolve(self, path):
        """A path from the graph YAML, relative to the workspace root, made absolute."""
        if path is None or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(self.root, path))

    def node_params_file(self, node, values):
        """The params file a node is started with: its own, else the params_file argument."""
        return self.resolve(node.params_file or values.get('params_file'))

    def active_nodes(self, values):
        """Nodes whose condition holds for these argument values."""
        return [n for n in self.nodes
                if n.condition is None or truthy(values.get(n.condition, 'false'))]

    def node_parameters(self, node, values):
        """Parameters set on a node beside its params file (use_sim_time, arg_parameters)."""
        params = {'use_sim_time': truthy(values.get('use_sim_time', 'false'))}
        params.update(node.parameters)
        for arg in node.arg_parameters:
            params[arg] = _typed(values[arg])
        return params


def _typed(value):
    """A launch-argument string as the parameter type it reads as (float, bool, str)."""
    text = str(value)
    if text.lower() in ('true', 'false'):
        return text.lower() == 'true'
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def truthy(value):
    return str(value).strip().lower() in ('1', 'true', 'yes', 'on')


def workspace_root(start=None):
    """The folder above ``start`` that holds config/graphs (default: this file, then cwd)."""
    candidates = [start] if start else []
    candidates += [os.getcwd(), os.environ.get('SKYLOC_ROOT', '')]
    for base in candidates:
        if not base:
            continue
        here = os.path.abspath(base)
        while True:
            if os.path.isdir(os.path.join(here, 'config', 'graphs')):
                return here
            parent = os.path.dirname(here)
            if parent == here:
                break
            here = parent
    raise GraphError('cannot find the workspace root (a folder with config/graphs/); '
                     'run from the workspace or set SKYLOC_ROOT')


def graph_path(name_or_path, root=None):
    """`sim` -> <root>/config/graphs/sim.yaml; a path is returned as it is."""
    if name_or_path.endswith(('.yaml', '.yml')) or os.sep in name_or_path:
        return os.path.abspath(name_or_path)
    root = root or workspace_root()
    return os.path.join(root, 'config', 'graphs', name_or_path + '.yaml')


def load_graph(name_or_path, root=None):
    """Read and validate a graph YAML; raise GraphError naming the file and the field."""
    path = graph_path(name_or_path, root)
    if not os.path.isfile(path):
        raise GraphError(f'{path}: graph file not found')
    if root is None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(path)))
    with open(path) as stream:
        try:
            doc = yaml.safe_load(stream)
        except yaml.YAMLError as exc:
            raise GraphError(f'{path}: not valid YAML: {exc}') from exc
    if not isinstance(doc, dict):
        raise GraphError(f'{path}: a graph file is a mapping')
    for key in ('graph', 'arguments', 'nodes'):
        if key not in doc:
            raise GraphError(f"{path}: required field '{key}' is missing")
    arguments = {}
    for arg, spec in (doc['arguments'] or {}).items():
        if not isinstance(spec, dict) or 'default' not in spec or 'description' not in spec:
            raise GraphError(f"{path}: argument '{arg}' needs a default and a description")
        arguments[arg] = spec
    for arg in REQUIRED_ARGUMENTS:
        if arg not in arguments:
            raise GraphError(f"{path}: argument '{arg}' must be declared")
    nodes, names = [], set()
    for i, entry in enumerate(doc['nodes'] or []):
        for key in ('package', 'executable', 'name'):
            if key not in entry:
                raise GraphError(f"{path}: nodes[{i}] has no '{key}'")
        node = NodeSpec(
            package=entry['package'], executable=entry['executable'], name=entry['name'],
            params_file=entry.get('params_file'),
            arg_parameters=list(entry.get('arg_parameters', [])),
            remappings=list(entry.get('remappings', [])),
            parameters=dict(entry.get('parameters', {})),
            arguments=[str(a) for a in entry.get('arguments', [])],
            condition=entry.get('condition'), external=bool(entry.get('external', False)))
        for arg in node.arg_parameters + ([node.condition] if node.condition else []):
            if arg not in arguments:
                raise GraphError(f"{path}: node '{node.name}' uses undeclared argument '{arg}'")
        if node.name in names:
            raise GraphError(f"{path}: node name '{node.name}' is used twice")
        names.add(node.name)
        nodes.append(node)
    return Graph(name=str(doc['graph']), description=str(doc.get('description', '')),
                 arguments=arguments, nodes=nodes, path=path, root=root)
