"""Mission report of a run folder: one self-contained report.html (and report.json).

    python -m skyloc_sim.report RUN_DIR [--map MAP.yaml] [--out RUN_DIR/report.html]

Reads the run's rosbag2 folder (RUN_DIR/bag) and draws, over the world orthophoto of the map
YAML (``--map``, else the ``world`` of RUN_DIR/run.json): the true (/sim/ground_truth) and
estimated (/skyloc/odometry, else /skyloc/pose) trajectories, the last coverage path and the
replans (each /coverage/path after the first); the horizontal position error with the filter's
2-sigma bound and the localizer's and the mission's states over time; probability map
snapshots; the final coverage grid; and a table of figures (error statistics while airborne,
coverage, path length, mission time, replans, CPU and peak RSS per node from resources.json).
Figures are PNGs embedded as base64 data URIs and the CSS is inline: the file opens offline.
A section whose topic is not in the bag says so instead.
"""

import argparse
import base64
from datetime import datetime
import html
import json
import math
import os
from pathlib import Path
import sys
import tempfile

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import get_typestore, Stores

from skyloc_sim.track_plot import bag_topics, plot_track, read_track

TRUTH_TOPIC = '/sim/ground_truth'
ESTIMATE_TOPICS = ('/skyloc/odometry', '/skyloc/pose')
PATH_TOPIC = '/coverage/path'
GRID_TOPIC = '/coverage/grid'
PROGRESS_TOPIC = '/coverage/progress'
PROBABILITY_TOPIC = '/skyloc/probability_map'
DIAGNOSTICS_TOPIC = '/diagnostics'
MISSION_TOPIC = '/mission/state'
AIRBORNE_M = 2.0        # a truth sample counts as airborne above start height + this
SNAPSHOTS = 4
MAX_REPLAN_LABELS = 12       # more replans than this are marked on the map without labels
SNAPSHOT_TRACK_S = 60.0      # the ground truth drawn on a probability map snapshot, s
SNAPSHOT_MIN_VIEW_M = 200.0  # a snapshot's view is at least this wide around the belief
STATE_COLOURS = {'OK': '#34c759', 'DEGRADED': '#ff9500', 'LOST': '#ff3b30'}
# mission states in colours apart from the localizer's green/orange/red
MISSION_COLOURS = {'WAITING': '#c7c7cc', 'TAKEOFF': '#5ac8fa', 'SURVEY': '#007aff',
                   'HOLD': '#af52de', 'RETURN': '#30b0c7', 'LAND': '#a2845e', 'DONE': '#48484a'}
OTHER_COLOURS = ('#ffcc00', '#5856d6', '#ff2d55', '#8e8e93')
PLAIN_COLOURS = ('#000000', '#007aff', '#ff3b30')   # tracks on white, when there is no map


# --------------------------------------------------------------------------------------------
# Reading the run
# --------------------------------------------------------------------------------------------

def find_bag(run_dir):
    """The rosbag2 folder of a run: RUN_DIR/bag, or RUN_DIR itself when it is one."""
    for candidate in (os.path.join(run_dir, 'bag'), run_dir):
        if os.path.isfile(os.path.join(candidate, 'metadata.yaml')):
            return candidate
    raise FileNotFoundError(f'{run_dir}: no rosbag2 folder (expected {run_dir}/bag)')


def find_map(run_dir, map_yaml=None):
    """The map YAML to draw on: the given one, else run.json's 'world', else None."""
    if map_yaml:
        return os.path.abspath(map_yaml)
    try:
        with open(os.path.join(run_dir, 'run.json')) as stream:
            world = json.load(stream).get('world')
    except (OSError, ValueError):
        return None
    return world if world and os.path.isfile(world) else None


def find_resources(run_dir):
    """The runner's per-node resources.json of a run (logs/ or the run folder), or None."""
    for path in (os.path.join(run_dir, 'logs', 'resources.json'),
                 os.path.join(run_dir, 'resources.json')):
        if os.path.isfile(path):
            with open(path) as stream:
                return json.load(stream)
    return None


def _stamp(msg, log_ns):
    """Header stamp in seconds, the log time where there is no header or it is zero (as
    track_plot.read_track does)."""
    header = getattr(msg, 'header', None)
    if header is not None:
        t = header.stamp.sec + header.stamp.nanosec * 1e-9
        if t != 0.0:
            return t
    return log_ns * 1e-9


def grid_array(msg):
    """OccupancyGrid -> (int8 array [rows, cols], row 0 = bottom, extent (x0, x1, y0, y1) in
    the map frame). The grid's origin orientation is taken as identity (as published here)."""
    info = msg.info
    data = np.asarray(msg.data, dtype=np.int8).reshape(info.height, info.width)
    x0, y0 = info.origin.position.x, info.origin.position.y
    return data, (x0, x0 + info.width * info.resolution, y0, y0 + info.height * info.resolution)


def read_events(bag_dir, estimate_topic=None, snapshots=SNAPSHOTS):
    """Everything but the tracks, in one pass over the bag.

    Returns {'covariance': [N, 3] (t, var_x, var_y) of ``estimate_topic``, 'paths': [(t, poses
    [K, 2])], 'progress': [(t, percent)], 'grid': (t, OccupancyGrid) last or None,
    'probability': [(t, OccupancyGrid)] up to ``snapshots`` evenly spaced over its messages,
    'localizer': [(t, state)], 'mission': [(t, text)]}. Times are seconds (header stamps).
    """
    wanted = {PATH_TOPIC, GRID_TOPIC, PROGRESS_TOPIC, PROBABILITY_TOPIC, DIAGNOSTICS_TOPIC,
              MISSION_TOPIC}
    if estimate_topic:
        wanted.add(estimate_topic)
    out = {'covariance': [], 'paths': [], 'progress': [], 'grid': None, 'probability': [],
           'localizer': [], 'mission': []}
    raw_maps = []
    with AnyReader([Path(bag_dir)], default_typestore=get_typestore(Stores.LATEST)) as reader:
        connections = [c for c in reader.connections if c.topic in wanted]
        for conn, log_ns, raw in reader.messages(connections=connections):
            topic = conn.topic
            if topic == PROBABILITY_TOPIC:   # large: deserialised only for the snapshots
                raw_maps.append((log_ns, conn, raw))
                continue
            if topic == GRID_TOPIC:
                out['grid'] = (log_ns, conn, raw)
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            t = _stamp(msg, log_ns)
            if topic == estimate_topic:
                cov = msg.pose.covariance
                out['covariance'].append((t, cov[0], cov[7]))
            elif topic == PATH_TOPIC:
                poses = [(p.pose.position.x, p.pose.position.y) for p in msg.poses]
                out['paths'].append((t, np.asarray(poses, dtype=float).reshape(-1, 2)))
            elif topic == PROGRESS_TOPIC:
                out['progress'].append((t, float(msg.data)))
            elif topic == MISSION_TOPIC:
                out['mission'].append((t, str(msg.data)))
            elif topic == DIAGNOSTICS_TOPIC:
                for status in msg.status:
                    if 'localizer' not in status.name.lower():
                        continue
                    for kv in status.values:
                        if kv.key == 'state':
                            out['localizer'].append((t, kv.value.strip()))
        if out['grid'] is not None:
            log_ns, conn, raw = out['grid']
            msg = reader.deserialize(raw, conn.msgtype)
            out['grid'] = (_stamp(msg, log_ns), msg)
        if raw_maps:
            times = np.array([m[0] for m in raw_maps], dtype=float)
            targets = np.linspace(times[0], times[-1], min(snapshots, len(raw_maps)))
            picks = sorted({int(np.argmin(np.abs(times - target))) for target in targets})
            for i in picks:
                log_ns, conn, raw = raw_maps[i]
                msg = reader.deserialize(raw, conn.msgtype)
                out['probability'].append((_stamp(msg, log_ns), msg))
    out['covariance'] = np.asarray(out['covariance'], dtype=float).reshape(-1, 3)
    out['covariance'] = out['covariance'][np.argsort(out['covariance'][:, 0], kind='stable')]
    for key in ('paths', 'progress', 'localizer', 'mission'):
        out[key].sort(key=lambda item: item[0])
    return out


# --------------------------------------------------------------------------------------------
# Figures (numbers)
# --------------------------------------------------------------------------------------------

def horizontal_error(truth, estimate, covariance=None, airborne_m=AIRBORNE_M):
    """Horizontal error of ``estimate`` at the truth stamps inside the estimate's time span.

    truth, estimate: [N, 4] (t, x, y, z) as read_track returns; covariance: [M, 3] (t, var_x,
    var_y). Returns (t, error m, 2-sigma bound m (NaN without covariance), airborne mask), the
    estimate linearly interpolated (never extrapolated); airborne: truth z > first truth z +
    airborne_m.
    """
    empty = np.zeros(0)
    if len(truth) == 0 or len(estimate) == 0:
        return empty, empty, empty, np.zeros(0, bool)
    t = truth[:, 0]
    inside = (t >= estimate[0, 0]) & (t <= estimate[-1, 0])
    t, rows = t[inside], truth[inside]
    ex = np.interp(t, estimate[:, 0], estimate[:, 1])
    ey = np.interp(t, estimate[:, 0], estimate[:, 2])
    error = np.hypot(ex - rows[:, 1], ey - rows[:, 2])
    if covariance is not None and len(covariance):
        var = np.interp(t, covariance[:, 0], covariance[:, 1]) + \
            np.interp(t, covariance[:, 0], covariance[:, 2])
        bound = 2.0 * np.sqrt(np.maximum(var, 0.0))
    else:
        bound = np.full_like(error, np.nan)
    airborne = rows[:, 3] > truth[0, 3] + airborne_m
    return t, error, bound, airborne


def error_stats(error, bound=None):
    """RMSE, median, p95, max (m) of an error array and the share inside the 2-sigma bound."""
    if len(error) == 0:
        return None
    stats = {'rmse_m': float(np.sqrt(np.mean(error ** 2))),
             'median_m': float(np.median(error)),
             'p95_m': float(np.percentile(error, 95)),
             'max_m': float(np.max(error)), 'samples': int(len(error))}
    if bound is not None and len(bound) and np.all(np.isfinite(bound)):
        stats['within_2sigma_percent'] = float(100.0 * np.mean(error <= bound))
    return stats


def transitions(samples):
    """[(t, value)] -> the samples where the value changes (the first one included)."""
    out = []
    for t, value in samples:
        if not out or out[-1][1] != value:
            out.append((t, value))
    return out


def state_durations(changes, t_end):
    """Seconds spent in each state given its transitions and the end time."""
    totals = {}
    for i, (t, state) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else t_end
        totals[state] = totals.get(state, 0.0) + max(0.0, until - t)
    return totals


def mission_state(text):
    """The state of a /mission/state string 'STATE: reason'."""
    return text.split(':', 1)[0].strip()


def _position_at(t, tracks):
    """(x, y) at time t from the first track whose time span holds t, else None."""
    for track in tracks:
        if len(track) and track[0, 0] <= t <= track[-1, 0]:
            return (float(np.interp(t, track[:, 0], track[:, 1])),
                    float(np.interp(t, track[:, 0], track[:, 2])))
    return None


def _rounded(value, digits=3):
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------

def _plain_map(tracks, out_png, title='', overlay=None, width_px=1200, dpi=100, include=(),
               **_):
    """plot_track's stand-in when there is no map image: the same tracks on blank axes."""
    fig = Figure(figsize=(width_px / dpi, 0.8 * width_px / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    handles = []
    for index, (label, track) in enumerate(tracks.items()):
        if len(track):
            line, = ax.plot(track[:, 1], track[:, 2], '-', lw=2.0, label=label,
                            color=PLAIN_COLOURS[index % len(PLAIN_COLOURS)])
            handles.append(line)
    for box in include:   # invisible corners, so that autoscaling takes the box in
        ax.plot([box[0], box[1]], [box[2], box[3]], linestyle='none')
    handles += list(overlay(ax) or []) if overlay is not None else []
    if handles:
        ax.legend(handles=handles, loc='best', fontsize=9)
    ax.set_aspect('equal', adjustable='datalim')
    ax.set_xlabel('x (east) [m]')
    ax.set_ylabel('y (north) [m]')
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title + ' (no map image)')
    fig.savefig(out_png, dpi=dpi)
    return out_png


def _draw_map(map_yaml, tracks, out_png, **kwargs):
    if map_yaml:
        return plot_track(map_yaml, tracks, out_png, **kwargs)
    return _plain_map(tracks, out_png, **kwargs)


def _cells_box(mask, extent, min_size_m=0.0):
    """[(xmin, xmax, ymin, ymax)] around the cells of a grid where ``mask`` holds (the whole
    grid where it holds nowhere), grown about its centre to at least ``min_size_m``."""
    rows, cols = np.nonzero(mask)
    if not len(rows):
        return [extent]
    res = (extent[1] - extent[0]) / mask.shape[1]
    box = [extent[0] + cols.min() * res, extent[0] + (cols.max() + 1) * res,
           extent[2] + rows.min() * res, extent[2] + (rows.max() + 1) * res]
    for lo in (0, 2):
        grow = max(0.0, min_size_m - (box[lo + 1] - box[lo])) / 2.0
        box[lo], box[lo + 1] = box[lo] - grow, box[lo + 1] + grow
    return [tuple(box)]


def _overview_overlay(path, replans):
    def overlay(ax):
        handles = []
        if path is not None and len(path):
            line, = ax.plot(path[:, 0], path[:, 1], '--', color='#ff9500', lw=1.2, alpha=0.9,
                            zorder=1.5, label='coverage path (last)')
            handles.append(line)
        for number, event in enumerate(replans, 1):
            if event.get('x') is None:
                continue
            ax.plot(event['x'], event['y'], 'X', markersize=13, color='#ff3b30',
                    markeredgecolor='black', zorder=4)
            if len(replans) > MAX_REPLAN_LABELS:   # the table below the map has them all
                continue
            ax.annotate(f"R{number} {event['t']:.0f} s", (event['x'], event['y']),
                        xytext=(8, 8), textcoords='offset points', fontsize=9, zorder=4,
                        bbox={'boxstyle': 'round,pad=0.2', 'fc': 'white', 'alpha': 0.8})
        if replans:
            handles.append(Line2D([], [], linestyle='none', marker='X', color='#ff3b30',
                                  markeredgecolor='black', label='replan (time from start)'))
        return handles
    return overlay


def _grid_overlay(msg, kind, marks=()):
    def overlay(ax):
        data, extent = grid_array(msg)
        if kind == 'probability':
            shown = np.ma.masked_where(data <= 0, data.astype(float))
            ax.imshow(shown, origin='lower', extent=extent, cmap='inferno', vmin=0, vmax=100,
                      alpha=0.75, interpolation='nearest', zorder=1)
            handles = [Patch(color='#fca50a', label='belief (100 = mode)')]
        else:
            swept = np.ma.masked_where(data < 50, np.ones(data.shape))
            todo = np.ma.masked_where((data < 0) | (data >= 50), np.ones(data.shape))
            ax.imshow(swept, origin='lower', extent=extent, interpolation='nearest', zorder=1,
                      cmap=ListedColormap(['#34c759']), alpha=0.5)
            ax.imshow(todo, origin='lower', extent=extent, interpolation='nearest', zorder=1,
                      cmap=ListedColormap(['#ff3b30']), alpha=0.5)
            handles = [Patch(color='#34c759', alpha=0.6, label='swept'),
                       Patch(color='#ff3b30', alpha=0.6, label='not swept')]
        for label, colour, marker, xy in marks:
            if xy is not None:
                ax.plot(xy[0], xy[1], marker, color=colour, markersize=12,
                        markeredgecolor='black', zorder=4)
                handles.append(Line2D([], [], linestyle='none', marker=marker, color=colour,
                                      markeredgecolor='black', label=label))
        return handles
    return overlay


def _band(ax, changes, t_end, colours, t0, label):
    """Coloured spans of a state over time on ``ax``; legend handles for the states."""
    seen = {}
    for i, (t, state) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else t_end
        colour = colours(state)
        ax.axvspan(t - t0, until - t0, color=colour, lw=0)
        seen.setdefault(state, colour)
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha='right', va='center', fontsize=9)
    return [Patch(color=c, label=s) for s, c in seen.items()]


def _error_figure(out_png, t0, t_end, err, localizer, mission):
    rows = [4.0] + [0.45] * (bool(localizer) + bool(mission))
    fig = Figure(figsize=(12, 3.6 + 0.5 * (len(rows) - 1)), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(rows), 1, height_ratios=rows, hspace=0.08)
    ax = fig.add_subplot(grid[0])
    t, error, bound, airborne = err
    if len(t):
        rel = t - t0
        if np.any(np.isfinite(bound)):
            ax.fill_between(rel, 0, bound, color='#007aff', alpha=0.15, lw=0,
                            label='2-sigma bound (filter)')
            ax.plot(rel, bound, '-', color='#007aff', lw=0.8)
        ax.plot(rel, np.where(airborne, error, np.nan), '-', color='#ff3b30', lw=1.2,
                label='horizontal error (airborne)')
        ax.plot(rel, np.where(airborne, np.nan, error), '-', color='#8e8e93', lw=1.0,
                label='on the ground')
        # scaled to the airborne errors: neither a large error on the ground nor the bound
        # of the first, unconverged seconds may flatten them (the bound is clipped instead)
        scale = error[airborne] if np.any(airborne) else error
        ax.set_ylim(0, max(1.0, 1.2 * float(np.max(scale))))
        ax.legend(loc='upper right', fontsize=9)
    ax.set_ylabel('error [m]')
    ax.grid(alpha=0.3)
    ax.set_xlim(0, max(t_end - t0, 1e-6))
    axes = [ax]
    legend = []
    if localizer:
        band = fig.add_subplot(grid[len(axes)], sharex=ax)
        legend += _band(band, localizer, t_end, lambda s: STATE_COLOURS.get(s, '#c7c7cc'), t0,
                        'localizer')
        axes.append(band)
    if mission:
        band = fig.add_subplot(grid[len(axes)], sharex=ax)
        others = [s for s in dict.fromkeys(s for _t, s in mission) if s not in MISSION_COLOURS]
        legend += _band(band, mission, t_end, lambda s: MISSION_COLOURS.get(
            s, OTHER_COLOURS[others.index(s) % len(OTHER_COLOURS)] if s in others else '#000'),
            t0, 'mission')
        axes.append(band)
    for a in axes[:-1]:
        a.tick_params(labelbottom=False)
    axes[-1].set_xlabel('time from start [s] (simulated)')
    if legend:
        fig.legend(handles=legend, loc='lower center', ncol=min(8, len(legend)), fontsize=8,
                   frameon=False)
        fig.subplots_adjust(left=0.08, right=0.98, top=0.97, bottom=0.2)
    else:
        fig.subplots_adjust(left=0.08, right=0.98, top=0.97, bottom=0.12)
    fig.savefig(out_png, dpi=100)
    return out_png


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------

def write_report(run_dir, map_yaml=None, out=None):
    """Write RUN_DIR/report.html (self-contained) and RUN_DIR/report.json; return the figures.

    ``map_yaml``: the world's map YAML (default: run.json's 'world'); ``out``: the HTML path.
    Times in the figures are simulated seconds from the first ground-truth sample (``t0``).
    """
    run_dir = os.path.abspath(run_dir)
    bag = find_bag(run_dir)
    map_yaml = find_map(run_dir, map_yaml)
    out = os.path.abspath(out or os.path.join(run_dir, 'report.html'))
    topics = bag_topics(bag)
    notes = {}   # section -> why it is missing or partial

    truth = read_track(bag, TRUTH_TOPIC) if TRUTH_TOPIC in topics else np.zeros((0, 4))
    estimate_topic = next((t for t in ESTIMATE_TOPICS if t in topics), None)
    estimate = read_track(bag, estimate_topic) if estimate_topic else np.zeros((0, 4))
    events = read_events(bag, estimate_topic)
    if not len(truth):
        notes['truth'] = f'no {TRUTH_TOPIC} in the bag: no error figures, path length or map ' \
                         'track (a replay of a real flight has no ground truth)'
    if not estimate_topic:
        notes['estimate'] = f"none of {', '.join(ESTIMATE_TOPICS)} in the bag: no estimate " \
                            'and no position error'

    starts = [a[0, 0] for a in (truth, estimate) if len(a)] + \
        [lst[0][0] for lst in (events['paths'], events['localizer'], events['mission']) if lst]
    ends = [a[-1, 0] for a in (truth, estimate) if len(a)] + \
        [lst[-1][0] for lst in (events['paths'], events['localizer'], events['mission']) if lst]
    t0 = float(truth[0, 0]) if len(truth) else (min(starts) if starts else 0.0)
    t_end = max(ends) if ends else t0

    err = horizontal_error(truth, estimate, events['covariance'])
    airborne_stats = error_stats(err[1][err[3]], err[2][err[3]])
    if len(truth) and estimate_topic and airborne_stats is None:
        notes['error'] = f'no estimate while airborne (truth z > start + {AIRBORNE_M:g} m)'
    localizer = transitions(events['localizer'])
    mission = transitions([(t, mission_state(s)) for t, s in events['mission']])

    replans = []
    for t, _poses in events['paths'][1:]:
        xy = _position_at(t, [truth, estimate])
        replans.append({'t': t - t0, 'x': xy[0] if xy else None, 'y': xy[1] if xy else None})
    if PATH_TOPIC not in topics:
        notes['path'] = f'no {PATH_TOPIC} in the bag: no coverage path or replans'

    coverage, coverage_source = None, None
    if events['progress']:
        coverage, coverage_source = events['progress'][-1][1], PROGRESS_TOPIC
    elif events['grid'] is not None:
        data, _extent = grid_array(events['grid'][1])
        target = int(np.count_nonzero(data >= 0))
        if target:
            coverage = 100.0 * np.count_nonzero(data >= 50) / target
            coverage_source = GRID_TOPIC
    if coverage is None:
        notes['coverage'] = f'no {PROGRESS_TOPIC} or {GRID_TOPIC} in the bag'

    steps = np.diff(truth[:, 1:3], axis=0) if len(truth) > 1 else np.zeros((0, 2))
    path_length = float(np.hypot(steps[:, 0], steps[:, 1]).sum()) if len(truth) else None
    done = [t for t, s in mission if s == 'DONE']
    if mission and done:
        mission_time, mission_source = done[0] - mission[0][0], f'{MISSION_TOPIC} to DONE'
    elif len(truth) > 1:
        mission_time, mission_source = float(truth[-1, 0] - truth[0, 0]), 'ground truth span'
    else:
        mission_time, mission_source = (t_end - t0 if ends else None), 'bag span'

    resources = find_resources(run_dir)
    figures = {
        'run_dir': run_dir, 'bag': bag, 'map_yaml': map_yaml, 'report': out,
        'generated': datetime.now().isoformat(timespec='seconds'),
        't0': t0, 'duration_s': t_end - t0, 'estimate_topic': estimate_topic,
        'airborne_threshold_m': AIRBORNE_M,
        'error': airborne_stats,
        'coverage_percent': coverage, 'coverage_source': coverage_source,
        'path_length_m': path_length, 'mission_time_s': mission_time,
        'mission_time_source': mission_source,
        'replans': len(replans), 'replan_events': replans,
        'plans_published': len(events['paths']),
        'localizer_states': [{'t': t - t0, 'state': s} for t, s in localizer],
        'localizer_state_seconds': state_durations(localizer, t_end),
        'mission_states': [{'t': t - t0, 'state': s} for t, s in mission],
        'resources': resources,
        'topics': sorted(topics),
        'notes': notes,
    }
    figures = _rounded(figures)

    with tempfile.TemporaryDirectory(prefix='skyloc_report_') as tmp:
        images = _draw_figures(tmp, figures, map_yaml, truth, estimate, events, err, t0, t_end,
                               localizer, mission, notes)
        page = render_html(figures, images, notes)
    with open(out, 'w', encoding='utf-8') as stream:
        stream.write(page)
    figures['notes'] = notes
    with open(os.path.join(run_dir, 'report.json'), 'w') as stream:
        json.dump(figures, stream, indent=2)
    return figures


def _draw_figures(tmp, figures, map_yaml, truth, estimate, events, err, t0, t_end, localizer,
                  mission, notes):
    """{section: [(png bytes, caption)]} of the report's figures."""
    images = {}

    def keep(section, png, caption):
        with open(png, 'rb') as stream:
            images.setdefault(section, []).append((stream.read(), caption))

    if not map_yaml:
        notes['map'] = 'no map YAML (give --map, or run.json names no world): drawn without ' \
                       'the orthophoto'
    tracks = {}
    if len(truth):
        tracks['ground truth'] = truth
    if len(estimate):
        tracks[f"estimate ({figures['estimate_topic']})"] = estimate
    last_path = events['paths'][-1][1] if events['paths'] else None
    if tracks or last_path is not None:
        box = [(last_path[:, 0].min(), last_path[:, 0].max(), last_path[:, 1].min(),
                last_path[:, 1].max())] if last_path is not None and len(last_path) else []
        png = _draw_map(map_yaml, tracks, os.path.join(tmp, 'map.png'), crop=True, include=box,
                        title='true and estimated trajectories, coverage path, replans',
                        overlay=_overview_overlay(last_path, figures['replan_events']))
        keep('map', png, 'Map: trajectories, the last coverage path and the replanning events')
    else:
        notes['map_tracks'] = 'no trajectory or coverage path in the bag'

    if len(err[0]) or localizer or mission:
        png = _error_figure(os.path.join(tmp, 'error.png'), t0, t_end, err, localizer, mission)
        keep('error', png, 'Horizontal position error (estimate interpolated to the truth '
             'stamps) with the filter\'s 2-sigma bound 2*sqrt(var_x + var_y); localizer and '
             'mission states below')
    if not events['localizer']:
        notes['localizer'] = f'no localizer state on {DIAGNOSTICS_TOPIC}'
    if not events['mission']:
        notes['mission'] = f'no {MISSION_TOPIC} in the bag'

    for index, (t, msg) in enumerate(events['probability']):
        recent = truth[(truth[:, 0] <= t) & (truth[:, 0] >= t - SNAPSHOT_TRACK_S)]
        shown = {f'ground truth (last {SNAPSHOT_TRACK_S:g} s)': recent} if len(recent) else {}
        marks = [('true position', '#ffffff', 'o', _position_at(t, [truth])),
                 ('estimate', '#00e5ff', 'P', _position_at(t, [estimate]))]
        # zoomed on the belief (a confident one is a few cells of a map-wide grid)
        data, extent = grid_array(msg)
        png = _draw_map(map_yaml, shown, os.path.join(tmp, f'prob_{index}.png'), crop=True,
                        include=_cells_box(data > 0, extent, SNAPSHOT_MIN_VIEW_M),
                        title=f'probability map at t = {t - t0:.0f} s', width_px=900,
                        overlay=_grid_overlay(msg, 'probability', marks))
        keep('probability', png, f't = {t - t0:.0f} s')
    if not events['probability']:
        notes['probability'] = f'no {PROBABILITY_TOPIC} in the bag'

    if events['grid'] is not None:
        t, msg = events['grid']
        data, extent = grid_array(msg)
        png = _draw_map(map_yaml, {'ground truth': truth} if len(truth) else {},
                        os.path.join(tmp, 'coverage.png'), crop=True,
                        include=_cells_box(data >= 0, extent),   # the survey area
                        title=f'coverage grid at t = {t - t0:.0f} s',
                        overlay=_grid_overlay(msg, 'coverage'))
        keep('coverage', png, 'Final coverage grid (last /coverage/grid)')
    else:
        notes['grid'] = f'no {GRID_TOPIC} in the bag'
    return images


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1250px; color: #1c1c1e; background: #fff; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.6em;
     border-bottom: 1px solid #d1d1d6; padding-bottom: 0.2em; }
.meta { color: #636366; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.95em; }
th, td { border: 1px solid #d1d1d6; padding: 0.3em 0.8em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f7; }
img { max-width: 100%; height: auto; border: 1px solid #e5e5ea; }
.grid { display: flex; flex-wrap: wrap; gap: 0.8em; }
.grid figure { margin: 0; width: calc(50% - 0.4em); }
figure { margin: 0.5em 0; } figcaption { color: #636366; font-size: 0.85em; }
.missing { color: #8e8e93; font-style: italic; }
"""


def _fmt(value, unit='', digits=1):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return 'n/a'
    if isinstance(value, (int, float)):
        return f'{value:.{digits}f}{unit}'
    return f'{value}{unit}'


def _img(data, caption):
    encoded = base64.b64encode(data).decode('ascii')
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
            f'<figcaption>{html.escape(caption)}</figcaption></figure>')


def _missing(text):
    return f'<p class="missing">{html.escape(text)}</p>'


def table_rows(figures):
    """(label, value) rows of the summary table (also the terminal summary)."""
    e = figures.get('error') or {}
    cov = figures.get('coverage_percent')
    cov_source = f" ({figures['coverage_source']})" if cov is not None else ''
    rows = [
        ('RMSE horizontal error (airborne)', _fmt(e.get('rmse_m'), ' m', 2)),
        ('median horizontal error', _fmt(e.get('median_m'), ' m', 2)),
        ('p95 horizontal error', _fmt(e.get('p95_m'), ' m', 2)),
        ('max horizontal error', _fmt(e.get('max_m'), ' m', 2)),
        ('inside the 2-sigma bound', _fmt(e.get('within_2sigma_percent'), ' %', 1)),
        ('coverage', _fmt(cov, ' %', 2) + cov_source),
        ('path length flown (horizontal, truth)', _fmt(figures.get('path_length_m'), ' m', 0)),
        ('mission time', _fmt(figures.get('mission_time_s'), ' s', 1)
         + (f" ({figures['mission_time_source']})" if figures.get('mission_time_s') is not None
            else '')),
        ('replans', str(figures.get('replans', 0))),
    ]
    return rows


def render_html(figures, images, notes):
    """The report page (a string): inline CSS, images as data URIs, nothing external."""
    esc = html.escape
    name = os.path.basename(figures['run_dir'])
    parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
             f'<title>skyloc mission report {esc(name)}</title>', f'<style>{CSS}</style>',
             '</head><body>', f'<h1>skyloc mission report: {esc(name)}</h1>',
             f'<p class="meta">run {esc(figures["run_dir"])} &middot; bag {esc(figures["bag"])}'
             f' &middot; map {esc(str(figures["map_yaml"]))} &middot; generated '
             f'{esc(figures["generated"])}</p>']

    parts.append('<h2>Summary</h2><table id="summary"><tr><th>figure</th><th>value</th></tr>')
    for label, value in table_rows(figures):
        parts.append(f'<tr><td>{esc(label)}</td><td class="num">{esc(value)}</td></tr>')
    parts.append('</table>')
    e = figures.get('error')
    if e:
        parts.append(f'<p class="meta">error statistics over {e["samples"]} ground-truth samples'
                     f' while airborne (truth z &gt; start + {figures["airborne_threshold_m"]:g}'
                     f' m), estimate from {esc(str(figures["estimate_topic"]))}</p>')
    for key in ('truth', 'estimate', 'error', 'coverage'):
        if key in notes:
            parts.append(_missing(notes[key]))

    parts.append('<h2>Map, trajectories and replanning</h2>')
    for key in ('map', 'map_tracks', 'path'):
        if key in notes:
            parts.append(_missing(notes[key]))
    parts += [_img(d, c) for d, c in images.get('map', [])]
    if figures['replan_events']:
        parts.append('<table><tr><th>replan</th><th>t [s]</th><th>x [m]</th><th>y [m]</th>'
                     '</tr>')
        for i, r in enumerate(figures['replan_events'], 1):
            parts.append(f'<tr><td>R{i}</td><td class="num">{_fmt(r["t"])}</td>'
                         f'<td class="num">{_fmt(r["x"])}</td>'
                         f'<td class="num">{_fmt(r["y"])}</td></tr>')
        parts.append('</table>')

    parts.append('<h2>Position error and states over time</h2>')
    parts += [_img(d, c) for d, c in images.get('error', [])]
    for key in ('localizer', 'mission'):
        if key in notes:
            parts.append(_missing(notes[key]))
    for key, title in (('localizer_states', 'localizer state'),
                       ('mission_states', 'mission state')):
        if figures[key]:
            changes = ', '.join(f'{s["state"]} at {_fmt(s["t"], " s", 0)}' for s in figures[key])
            parts.append(f'<p><b>{title}:</b> {esc(changes)}</p>')
    if figures['localizer_state_seconds']:
        spent = ', '.join(f'{k} {_fmt(v, " s", 0)}'
                          for k, v in figures['localizer_state_seconds'].items())
        parts.append(f'<p class="meta">time per localizer state: {esc(spent)}</p>')

    parts.append('<h2>Probability map snapshots</h2>')
    if 'probability' in notes:
        parts.append(_missing(notes['probability']))
    parts.append('<div class="grid">')
    parts += [_img(d, c) for d, c in images.get('probability', [])]
    parts.append('</div>')

    parts.append('<h2>Coverage grid</h2>')
    if 'grid' in notes:
        parts.append(_missing(notes['grid']))
    parts += [_img(d, c) for d, c in images.get('coverage', [])]

    parts.append('<h2>CPU and memory per node</h2>')
    resources = figures.get('resources')
    if resources:
        parts.append('<table id="resources"><tr><th>node</th><th>CPU [s]</th>'
                     '<th>CPU mean [%]</th><th>peak RSS [MB]</th><th>RSS first [MB]</th>'
                     '<th>RSS last [MB]</th><th>samples</th></tr>')
        for node, r in sorted(resources.items()):
            parts.append(
                f'<tr><td>{esc(node)}</td><td class="num">{_fmt(r.get("cpu_s"))}</td>'
                f'<td class="num">{_fmt(r.get("cpu_percent_mean"))}</td>'
                f'<td class="num">{_fmt(r.get("peak_rss_mb"))}</td>'
                f'<td class="num">{_fmt(r.get("rss_first_mb"))}</td>'
                f'<td class="num">{_fmt(r.get("rss_last_mb"))}</td>'
                f'<td class="num">{_fmt(r.get("samples"), digits=0)}</td></tr>')
        parts.append('</table>')
    else:
        parts.append(_missing('no resources.json in the run folder (the graph runner writes '
                              'logs/resources.json when run with --log-dir)'))
    parts.append(f'<h2>Topics in the bag</h2><p class="meta">'
                 f'{esc(", ".join(figures["topics"]))}</p></body></html>')
    return '\n'.join(parts) + '\n'


def summary_lines(figures):
    """Lines for the terminal summary of a report."""
    lines = [f'  {label:<38} {value}' for label, value in table_rows(figures)]
    resources = figures.get('resources') or {}
    for node, r in sorted(resources.items()):
        lines.append(f"  {node:<38} {_fmt(r.get('cpu_s'), ' s CPU', 0)}, "
                     f"{_fmt(r.get('peak_rss_mb'), ' MB peak RSS', 0)}")
    for note in figures.get('notes', {}).values():
        lines.append(f'  ({note})')
    return lines


def main(argv=None):
    """``python -m skyloc_sim.report RUN_DIR [--map MAP.yaml] [--out report.html]``."""
    parser = argparse.ArgumentParser(prog='python -m skyloc_sim.report',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('run_dir', help='run folder (with bag/, as make demo writes)')
    parser.add_argument('--map', default=None,
                        help="map YAML of the world (default: run.json's 'world')")
    parser.add_argument('--out', default=None, help='HTML to write (default RUN_DIR/report.html)')
    options = parser.parse_args(argv)
    try:
        figures = write_report(options.run_dir, options.map, options.out)
    except FileNotFoundError as exc:
        print(f'report: error: {exc}', file=sys.stderr)
        return 2
    print('\n'.join(summary_lines(figures)))
    print(f"report: {figures['report']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
