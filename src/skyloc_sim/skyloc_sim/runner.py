"""`skyloc`: run a graph of config/graphs/ without `ros2 launch`, and check launch files.

    skyloc run GRAPH [--duration S] [--domain-id N] [--record DIR] [--single-process]
                     [ARG:=VALUE ...]
    skyloc run replay --bag DIR [rate:=2]       (a recorded flight through the pipeline)
    skyloc check-launch [LAUNCH_FILE ...]

`run` starts every node of the graph as its own process (the executable colcon installed,
with the graph's params file, parameters and remappings, exactly what launch/<graph>.launch.py
does), prefixes each output line with the node name, stops all on Ctrl-C or after the
duration, and exits non-zero if any node died. `--single-process` runs all nodes in this
process on one executor instead (a Pi's memory budget: a bare rclpy process is ~69 MB).
"""

import argparse
import importlib
import importlib.metadata
import math
import os
import signal
import subprocess
import sys
import threading
import time

from skyloc_sim.graph import GraphError, load_graph, truthy, workspace_root

PROBLEM_MARKS = ('[WARN]', '[ERROR]', '[FATAL]', 'error', 'Traceback')
COLOURS = ['36', '33', '35', '32', '34', '31', '96', '93']


def _yaml_value(value):
    """A parameter value as a `-p name:=value` literal that keeps strings strings."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if text.lower() in ('true', 'false'):
        return text.lower()
    try:
        float(text)
        return text
    except ValueError:
        return "'" + text.replace("'", "''") + "'"


def ros_arguments(graph, spec, values):
    """The --ros-args of one node (what launch_ros.actions.Node would pass)."""
    args = ['--ros-args', '-r', f'__node:={spec.name}']
    params_file = graph.node_params_file(spec, values)
    if params_file:
        if not os.path.isfile(params_file):
            raise GraphError(f"node '{spec.name}': params file not found: {params_file}")
        args += ['--params-file', params_file]
    for name, value in graph.node_parameters(spec, values).items():
        args += ['-p', f'{name}:={_yaml_value(value)}']
    for src, dst in spec.remap_pairs(values):
        args += ['-r', f'{src}:={dst}']
    return args


def executable_path(package, executable):
    """The installed executable of a package (install/<pkg>/lib/<pkg>/<exe>)."""
    from ament_index_python.packages import get_package_prefix, PackageNotFoundError
    try:
        prefix = get_package_prefix(package)
    except PackageNotFoundError as exc:
        raise GraphError(f"package '{package}' is not installed (source install/setup.bash)") \
            from exc
    path = os.path.join(prefix, 'lib', package, executable)
    if not os.access(path, os.X_OK):
        raise GraphError(f"package '{package}' has no executable '{executable}' ({path})")
    return path


def node_class(package, executable):
    """The Node class behind a console script: its module's NODE_CLASS."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise GraphError(f"package '{package}' is not installed") from exc
    for entry in dist.entry_points:
        if entry.group == 'console_scripts' and entry.name == executable:
            module = importlib.import_module(entry.value.split(':')[0])
            cls = getattr(module, 'NODE_CLASS', None)
            if cls is None:
                raise GraphError(f'{entry.value}: module defines no NODE_CLASS for '
                                 '--single-process')
            return cls
    raise GraphError(f"package '{package}' has no console script '{executable}'")


class Child:
    """One node process with its output forwarded line by line, prefixed by its name."""

    def __init__(self, name, cmd, env, colour, width, log_dir=None):
        self.name = name
        self.prefix = f'\033[{colour}m[{name:<{width}}]\033[0m ' if sys.stdout.isatty() \
            else f'[{name:<{width}}] '
        self.log = open(os.path.join(log_dir, f'{name}.log'), 'w') if log_dir else None
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.thread = threading.Thread(target=self._forward, daemon=True)
        self.thread.start()

    def _forward(self):
        for raw in iter(self.proc.stdout.readline, b''):
            line = raw.decode(errors='replace')
            if self.log:  # everything to the node's log, only problems to the console
                self.log.write(line)
                self.log.flush()
                if not any(k in line for k in PROBLEM_MARKS):
                    continue
            _write_line(self.prefix + line)

    def stop(self, timeout=5.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.thread.join(timeout=1.0)
        if self.log:
            self.log.close()
        return self.proc.returncode


_OUTPUT_LOCK = threading.Lock()
PROGRESS = {'bar': None}


def _write_line(text):
    """Print a line without tearing a progress bar (tqdm.write when one is shown)."""
    with _OUTPUT_LOCK:
        if PROGRESS['bar'] is not None:
            PROGRESS['bar'].write(text.rstrip('\n'))
        else:
            sys.stdout.write(text)
            sys.stdout.flush()


class ClockWatch:
    """Follows /clock from a thread of the runner: sim-time limit and a progress bar."""

    def __init__(self, limit_s, show_progress, stop_when=None):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile
        from rosgraph_msgs.msg import Clock

        self.limit = limit_s
        self.sim_time = 0.0
        if not rclpy.ok():
            rclpy.init(args=['--ros-args'])
        self.node = rclpy.create_node('skyloc_runner_clock')
        self.node.create_subscription(Clock, '/clock', self._on_clock, QoSProfile(depth=10))
        self.stop_when = parse_stop_when(stop_when) if stop_when else None
        self.stopped = False
        if self.stop_when:
            from std_msgs.msg import Float32
            self.node.create_subscription(Float32, self.stop_when[0], self._on_value,
                                          QoSProfile(depth=10))
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        # the bar follows the stop condition's topic (e.g. the mission's progress, %) when
        # there is one, with the simulated time beside it; else the simulated time
        self.bar_on_value = bool(show_progress and self.stop_when)
        self._shown_s = -1
        if show_progress:
            from tqdm import tqdm
            if self.bar_on_value:
                PROGRESS['bar'] = tqdm(total=round(self.stop_when[1]), unit='%',
                                       desc=self.stop_when[0], dynamic_ncols=True)
            elif math.isfinite(limit_s):
                PROGRESS['bar'] = tqdm(total=round(limit_s), unit='sim s', desc='simulating',
                                       dynamic_ncols=True)

    def _on_clock(self, msg):
        self.sim_time = msg.clock.sec + msg.clock.nanosec * 1e-9
        bar = PROGRESS['bar']
        if bar is None:
            return
        if self.bar_on_value:
            if int(self.sim_time) != self._shown_s:     # once per simulated second
                self._shown_s = int(self.sim_time)
                bar.set_postfix_str(f'{self._shown_s} sim s', refresh=True)
        else:
            bar.update(min(round(self.sim_time), bar.total) - bar.n)

    def _on_value(self, msg):
        bar = PROGRESS['bar']
        if bar is not None and self.bar_on_value and math.isfinite(msg.data):
            bar.update(max(0, min(round(msg.data), bar.total) - bar.n))
        if msg.data >= self.stop_when[1] and not self.stopped:
            self.stopped = True
            _log(f'{self.stop_when[0]} reached {msg.data:.2f} (>= {self.stop_when[1]:g}) at '
                 f'{self.sim_time:.0f} s simulated: stopping')

    @property
    def done(self):
        return self.sim_time >= self.limit or self.stopped

    def close(self):
        if PROGRESS['bar'] is not None:
            PROGRESS['bar'].close()
            PROGRESS['bar'] = None
        self.executor.shutdown()
        self.thread.join(timeout=2.0)
        self.node.destroy_node()


def _clock_watch(args):
    """The sim-time / stop-condition watcher the run needs, or None."""
    stop_when = getattr(args, 'stop_when', None)
    if not args.sim_duration and not stop_when:
        return None
    return ClockWatch(args.sim_duration or float('inf'),
                      bool(args.progress and (args.sim_duration or stop_when)), stop_when)


def parse_stop_when(text):
    """'TOPIC>=VALUE' (a std_msgs/Float32 topic) -> (topic, value)."""
    topic, sep, value = text.partition('>=')
    try:
        if not sep or not topic.startswith('/'):
            raise ValueError
        return topic.strip(), float(value)
    except ValueError:
        raise GraphError(f"--stop-when '{text}': expected /TOPIC>=VALUE "
                         '(a std_msgs/Float32 topic)') from None


def parse_values(graph, assignments):
    values = graph.defaults()
    for item in assignments:
        name, sep, value = item.partition(':=')
        if not sep:
            raise GraphError(f"argument '{item}': expected NAME:=VALUE")
        if name not in graph.arguments:
            raise GraphError(f"unknown argument '{name}' (graph '{graph.name}' declares "
                             f"{', '.join(graph.arguments)})")
        values[name] = value
    return values


def _log(text):
    _write_line(f'[skyloc] {text}\n')


def run_multi_process(graph, nodes, values, args):
    env = dict(os.environ)  # FASTDDS_DEFAULT_PROFILES_FILE is set by cmd_run
    width = max(len(n.name) for n in nodes)
    # the recorder first: it takes seconds to start, and the simulator's clock does not wait
    recorder = _start_recorder(args, values) if args.record else None
    children = []
    for i, spec in enumerate(nodes):
        cmd = [executable_path(spec.package, spec.executable)] + spec.arguments_resolved
        cmd += ros_arguments(graph, spec, values)
        children.append(Child(spec.name, cmd, env, COLOURS[i % len(COLOURS)], width,
                              args.log_dir))
    _log(f"started {len(children)} node processes: {', '.join(c.name for c in children)}"
         + (f' (logs in {args.log_dir})' if args.log_dir else ''))
    sampler = _start_sampler(children) if args.log_dir else None
    clock = _clock_watch(args)
    died = []
    start = time.monotonic()
    try:
        while True:
            for child in children:
                code = child.proc.poll()
                if code is not None and child not in [d for d, _ in died]:
                    died.append((child, code))
                    _log(f"node '{child.name}' died (exit code {code}): stopping the graph")
            if died or (args.duration and time.monotonic() - start >= args.duration) or \
                    (clock and clock.done):
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        _log('Ctrl-C: stopping')
    finally:   # whatever happened above, no node process outlives the runner
        try:
            _write_resources(sampler, args.log_dir)  # before the nodes stop: their last sample
            if clock:
                clock.close()
            _stop_recorder(recorder)
        finally:
            for child in reversed(children):
                code = child.stop()
                if child not in [d for d, _ in died] and \
                        code not in (0, None, -signal.SIGINT):
                    died.append((child, code))
                    _log(f"node '{child.name}' exited with code {code} on shutdown")
    return [c.name for c, _ in died], time.monotonic() - start


def _start_sampler(children):
    """CPU and RSS of each node process (and its children) every 2 s, or None on failure."""
    from skyloc_sim.resources import ResourceSampler
    try:
        sampler = ResourceSampler(period_s=2.0)
        for child in children:
            sampler.add(child.name, child.proc.pid)
        return sampler.start()
    except Exception as exc:  # noqa: BLE001 (measuring must not stop a run)
        _log(f'resource sampling off: {type(exc).__name__}: {exc}')
        return None


def _write_resources(sampler, log_dir):
    """Stop the sampler and write <log_dir>/resources.json (never raises)."""
    if sampler is None:
        return
    try:
        sampler.stop()
        summary = sampler.write(os.path.join(log_dir, 'resources.json'))
        _log('resources: ' + ', '.join(
            f"{name} {r['cpu_s']:.0f} s CPU, {r['peak_rss_mb']:.0f} MB peak"
            for name, r in summary.items()))
    except Exception as exc:  # noqa: BLE001
        _log(f'resources.json not written: {type(exc).__name__}: {exc}')


def run_single_process(graph, nodes, values, args):
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    rclpy.init(args=['--ros-args'])
    executor = MultiThreadedExecutor(num_threads=4)
    instances, died = [], []
    start = time.monotonic()
    try:
        for spec in nodes:
            cls = node_class(spec.package, spec.executable)
            node = cls(cli_args=ros_arguments(graph, spec, values), use_global_arguments=False)
            instances.append(node)
            executor.add_node(node)
        _log(f"{len(instances)} nodes in one process: {', '.join(n.name for n in nodes)}")
        recorder = _start_recorder(args, values, executor=executor) if args.record else None
        clock = _clock_watch(args)
        deadline = start + args.duration if args.duration else None
        while rclpy.ok() and (deadline is None or time.monotonic() < deadline) and \
                not (clock and clock.done):
            executor.spin_once(timeout_sec=0.1)
        if clock:
            clock.close()
        _stop_recorder(recorder)
    except (KeyboardInterrupt, ExternalShutdownException):
        _log('Ctrl-C: stopping')
    except Exception as exc:  # a node failed to start or raised in a callback
        _log(f'error: {type(exc).__name__}: {exc}')
        died.append(getattr(exc, 'node_name', 'single-process executor'))
    finally:
        for node in instances:
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    return died, time.monotonic() - start


def _start_recorder(args, values, executor=None):
    """A BagRecorder spinning in a thread of this process (or on the given executor)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from skyloc_sim.bag import BagRecorder

    if not rclpy.ok():
        rclpy.init(args=['--ros-args'])
    overrides = [rclpy.parameter.Parameter('use_sim_time', value=truthy(values.get(
        'use_sim_time', 'false')))]
    if args.log_dir:  # quiet console: the recorder's per-topic lines only on warnings
        from rclpy.logging import LoggingSeverity, set_logger_level
        set_logger_level('recorder', LoggingSeverity.WARN)
    # /clock is left out: `ros2 bag play --clock` regenerates it, and at 4x it is 400 msg/s
    recorder = BagRecorder(args.record, exclude=('/clock',), parameter_overrides=overrides)
    if executor is None:
        executor = SingleThreadedExecutor()
        executor.add_node(recorder)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        recorder._runner_executor = (executor, thread)
    else:
        executor.add_node(recorder)
    _log(f'recording to {args.record}')
    return recorder


def _stop_recorder(recorder):
    if recorder is None:
        return
    import rclpy
    recorder.close()
    counts = ', '.join(f'{k} {v}' for k, v in sorted(recorder.counts.items()))
    _log(f'bag closed: {counts}')
    own = getattr(recorder, '_runner_executor', None)
    if own:
        own[0].shutdown()
        own[1].join(timeout=2.0)
        recorder.destroy_node()
        rclpy.try_shutdown()


def _replay_setup(args):
    """`--bag FILE`: graph argument bag:=FILE, and (unless given) a run folder
    runs/replay-<time>/ with the new bag and logs, stopping when the bag is played."""
    from datetime import datetime
    bag = os.path.abspath(args.bag)
    if not os.path.isfile(os.path.join(bag, 'metadata.yaml')):
        raise GraphError(f'--bag {args.bag}: not a rosbag2 folder (no metadata.yaml)')
    args.assignments.append(f'bag:={bag}')
    if not args.record:
        run_dir = os.path.join(args.root, 'runs',
                               'replay-' + datetime.now().strftime('%Y%m%d-%H%M%S'))
        args.record = os.path.join(run_dir, 'bag')
        args.log_dir = args.log_dir or os.path.join(run_dir, 'logs')
    args.stop_when = args.stop_when or '/replay/progress>=100'
    return os.path.dirname(os.path.abspath(args.record))


def _replay_report(run_dir, graph, values, code):
    """run.json (the database's map as the world) and the mission report of a replay."""
    import json
    world = None
    db_json = os.path.join(graph.resolve(values.get('database', '')) or '', 'db.json')
    try:
        with open(db_json) as stream:
            world = json.load(stream).get('map_yaml')
    except (OSError, ValueError):
        _log(f'no map for the report ({db_json} unreadable): tracks drawn on white')
    with open(os.path.join(run_dir, 'run.json'), 'w') as stream:
        json.dump({'world': world, 'exit_code': code, 'replayed_bag': values.get('bag')},
                  stream, indent=2)
    try:
        from skyloc_sim.report import summary_lines, write_report
        figures = write_report(run_dir, world)
        print('\n'.join(summary_lines(figures)), flush=True)
        _log(f"report: {figures['report']}")
    except Exception as exc:  # noqa: BLE001 (the bag is kept: the report can be made again)
        _log(f'report failed ({type(exc).__name__}: {exc}): python -m skyloc_sim.report '
             f'{run_dir}')


def cmd_run(args):
    run_dir = _replay_setup(args) if getattr(args, 'bag', None) else None
    graph = load_graph(args.graph, args.root)
    values = parse_values(graph, args.assignments)
    nodes = graph.active_nodes(values)
    for spec in nodes:
        spec.arguments_resolved = [graph.resolve(a) if a.startswith('config/') else a
                                   for a in spec.arguments]
    if args.log_dir:
        os.makedirs(args.log_dir, exist_ok=True)
    if args.domain_id is not None:
        os.environ['ROS_DOMAIN_ID'] = str(args.domain_id)
    # camera frames (0.9 MB) need a larger shared-memory segment than Fast DDS's default:
    # config/fastdds.xml (inherited by every node process)
    from skyloc_sim.dds import configure_dds
    configure_dds(start=graph.root)
    os.environ['SKYLOC_ROOT'] = graph.root  # nodes resolve relative data paths from here
    mode = 'single process' if args.single_process else 'one process per node'
    _log(f"graph '{graph.name}' ({graph.path}): {len(nodes)} nodes, {mode}, domain "
         f"{os.environ.get('ROS_DOMAIN_ID', '0')}"
         + (f', {args.duration:g} s' if args.duration else ', until Ctrl-C'))
    run = run_single_process if args.single_process else run_multi_process
    died, elapsed = run(graph, nodes, values, args)
    status = 'FAILED' if died else 'ok'
    _log(f"summary: graph '{graph.name}' ran {elapsed:.1f} s, {len(nodes)} nodes, "
         f"{len(died)} died{': ' + ', '.join(died) if died else ''} -> {status}")
    if run_dir:
        _replay_report(run_dir, graph, values, 1 if died else 0)
    return 1 if died else 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='skyloc', description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    run = sub.add_parser('run', help='run a graph of config/graphs/')
    run.add_argument('graph', help="graph name (sim, webots, pi) or a graph YAML path")
    run.add_argument('assignments', nargs='*', metavar='ARG:=VALUE',
                     help='graph arguments, as for ros2 launch (e.g. world:=room)')
    run.add_argument('--duration', type=float, default=None,
                     help='stop after this many wall-clock seconds')
    run.add_argument('--domain-id', type=int, default=None, help='ROS_DOMAIN_ID for the run')
    run.add_argument('--record', metavar='DIR', default=None,
                     help='record all topics to a rosbag2 (MCAP) folder')
    run.add_argument('--single-process', action='store_true',
                     help='all nodes in one process and executor')
    run.add_argument('--sim-duration', type=float, default=None,
                     help='stop when the simulator clock (/clock) reaches this many seconds')
    run.add_argument('--stop-when', metavar='TOPIC>=VALUE', default=None,
                     help='stop when a std_msgs/Float32 topic reaches a value (e.g. '
                     "'/coverage/progress>=99')")
    run.add_argument('--log-dir', default=None,
                     help="write each node's output to DIR/<node>.log (print only problems) "
                     'and its CPU time and peak RSS to DIR/resources.json')
    run.add_argument('--progress', action='store_true',
                     help='show a progress bar of simulated time (with --sim-duration)')
    run.add_argument('--bag', default=None, metavar='DIR',
                     help="play this rosbag2 folder (graph 'replay'): the pipeline runs on it, "
                     'the run is recorded to runs/replay-<time>/ and its report written')
    run.add_argument('--root', default=None, help='workspace root (default: found from cwd)')
    check = sub.add_parser('check-launch', help='static check of launch files and graphs')
    check.add_argument('files', nargs='*', help='launch files (default: launch/*.launch.py)')
    check.add_argument('--root', default=None, help='workspace root')
    args, rest = parser.parse_known_args(argv)
    if args.command == 'run' and all(':=' in r for r in rest):
        args.assignments += rest  # ARG:=VALUE after the options
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == 'run':
            args.root = args.root or workspace_root()
            return cmd_run(args)
        from skyloc_sim.launch_check import check_main
        return check_main(args.files, args.root or workspace_root())
    except GraphError as exc:
        print(f'skyloc: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
