"""Read vehicle tracks from a bag and draw them over the world orthophoto (PNG).

``read_track`` returns (t, x, y, z) rows from nav_msgs/Odometry,
geometry_msgs/PoseWithCovarianceStamped, PoseStamped or PointStamped messages;
``plot_track`` draws the map image of a map YAML (DESIGN.md) with map-frame metre axes and the
tracks on top. Matplotlib is used through its Agg canvas only (no pyplot, no global backend).

Standalone::

    python -m skyloc_sim.track_plot BAG MAP_YAML OUT_PNG [--topics /sim/ground_truth ...] [--crop]
"""

import argparse
import math
import os
from pathlib import Path
import sys

import cv2
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import get_typestore, Stores

from skyloc_sim.geo import load_map_yaml, MapError, MapGrid

# Saturated colours that stand out on aerial imagery; track i gets TRACK_COLOURS[i % len].
TRACK_COLOURS = ('#ff00ff', '#00e5ff', '#ffd400', '#ff3b30', '#34c759', '#ffffff')
DEFAULT_TOPICS = ('/sim/ground_truth', '/skyloc/odometry', '/skyloc/pose')
MAX_IMAGE_PX = 2000


def _position(msg, msgtype):
    name = msgtype.split('/')[-1]
    if name in ('Odometry', 'PoseWithCovarianceStamped'):
        return msg.pose.pose.position
    if name == 'PoseStamped':
        return msg.pose.position
    if name == 'PointStamped':
        return msg.point
    raise TypeError(f'{msgtype} carries no position that read_track understands '
                    '(Odometry, PoseWithCovarianceStamped, PoseStamped, PointStamped)')


def bag_topics(bag_dir):
    """{topic: message type} of a rosbag2 folder (or a bare .mcap file)."""
    with AnyReader([Path(bag_dir)], default_typestore=get_typestore(Stores.LATEST)) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


def read_track(bag_dir, topic='/sim/ground_truth'):
    """Positions on ``topic`` of a bag as a float array [N, 4] of (t, x, y, z), sorted by t.

    t is the header stamp in seconds (the log time where the stamp is zero). ``bag_dir`` is a
    rosbag2 folder or a bare .mcap file. Raises ValueError if the topic is not in the bag and
    TypeError if its type has no position.
    """
    rows = []
    with AnyReader([Path(bag_dir)], default_typestore=get_typestore(Stores.LATEST)) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            have = ', '.join(sorted({c.topic for c in reader.connections})) or 'none'
            raise ValueError(f"{bag_dir}: topic '{topic}' is not in the bag (topics: {have})")
        for connection, log_ns, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            pos = _position(msg, connection.msgtype)
            stamp = msg.header.stamp
            t = stamp.sec + stamp.nanosec * 1e-9
            if t == 0.0:
                t = log_ns * 1e-9
            rows.append((t, pos.x, pos.y, pos.z))
    track = np.asarray(rows, dtype=float).reshape(-1, 4)
    return track[np.argsort(track[:, 0], kind='stable')]


def _xy(track):
    """x, y columns of a track given as [N, 4] (t, x, y, z), [N, 3] (x, y, z) or [N, 2]."""
    track = np.asarray(track, dtype=float)
    if track.ndim != 2 or track.shape[1] not in (2, 3, 4):
        raise ValueError(f'a track must be an [N, 2|3|4] array, got shape {track.shape}')
    xy = track[:, 1:3] if track.shape[1] == 4 else track[:, 0:2]
    return xy[np.all(np.isfinite(xy), axis=1)]


def _nice_length(span):
    """A 1-2-5 length close to a fifth of ``span`` (for the scale bar)."""
    target = max(span / 5.0, 1e-9)
    base = 10.0 ** math.floor(math.log10(target))
    for factor in (5.0, 2.0, 1.0):
        if factor * base <= target:
            return factor * base
    return base


def _load_rgb(meta):
    image = cv2.imread(meta.image_path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise MapError(f'{meta.yaml_path}: cannot read image {meta.image_path}')
    if image.dtype != np.uint8:
        image = image.astype(np.float64)
        top = float(np.nanmax(image)) if image.size else 0.0
        image = np.clip(image * (255.0 / top if top > 0 else 1.0), 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(image, code)
    return image


def _view(grid, tracks_xy, crop, margin_m):
    """(xmin, xmax, ymin, ymax) of the plotted area in the map frame."""
    width_m, height_m = grid.size_m
    full = (grid.origin_x, grid.origin_x + width_m, grid.origin_y, grid.origin_y + height_m)
    points = [xy for xy in tracks_xy if len(xy)]
    if not points:
        return full
    allxy = np.concatenate(points)
    lo, hi = allxy.min(axis=0), allxy.max(axis=0)
    if crop:
        if margin_m is None:
            margin_m = max(0.15 * float(np.max(hi - lo)), 20.0 * grid.resolution)
        return (lo[0] - margin_m, hi[0] + margin_m, lo[1] - margin_m, hi[1] + margin_m)
    view = [min(full[0], lo[0]), max(full[1], hi[0]), min(full[2], lo[1]), max(full[3], hi[1])]
    if tuple(view) != full:  # a track leaves the map: show all of it, with a little room
        pad = 0.03 * max(view[1] - view[0], view[3] - view[2])
        view = [view[0] - pad, view[1] + pad, view[2] - pad, view[3] + pad]
    return tuple(view)


def _image_window(grid, image, view, max_px):
    """The part of the image under ``view``, downsampled to <= max_px, and its extent."""
    h, w = image.shape[:2]
    u0, v1 = grid.map_to_pixel(view[0], view[2])
    u1, v0 = grid.map_to_pixel(view[1], view[3])
    u0, u1 = max(0, int(math.floor(u0))), min(w, int(math.ceil(u1)))
    v0, v1 = max(0, int(math.floor(v0))), min(h, int(math.ceil(v1)))
    if u1 <= u0 or v1 <= v0:
        return None, None
    window = image[v0:v1, u0:u1]
    left, bottom = grid.pixel_to_map(u0, v1)
    right, top = grid.pixel_to_map(u1, v0)
    largest = max(window.shape[:2])
    if largest > max_px:
        f = max_px / float(largest)
        size = (max(1, int(round(window.shape[1] * f))), max(1, int(round(window.shape[0] * f))))
        window = cv2.resize(window, size, interpolation=cv2.INTER_AREA)
    return window, (left, right, bottom, top)


def plot_track(map_yaml, tracks, out_png, title='', crop=False, margin_m=None,
               max_px=MAX_IMAGE_PX, width_px=1200, dpi=100, overlay=None, include=()):
    """Draw the map image of ``map_yaml`` with ``tracks`` on top and save it as ``out_png``.

    ``tracks``: {label: array} with rows (t, x, y, z) as read_track returns, or (x, y[, z]);
    track i is drawn in TRACK_COLOURS[i] with a circle at its start and a square at its end.
    The axes are map-frame metres (x east, y north, equal aspect) with a scale bar. The view
    is the whole map (grown to include the tracks), or with ``crop`` the tracks' bounding box
    plus ``margin_m`` (default: 15 % of its larger side, at least 20 pixels). Map images
    larger than ``max_px`` on a side are downsampled for drawing. ``include``: boxes (xmin,
    xmax, ymin, ymax) that the view must contain as if they were tracks. ``overlay``, if given,
    is called as overlay(ax) once the view is set, to draw more in map-frame metres (grids,
    markers); the legend handles it returns are added to the legend. Returns ``out_png``.
    """
    meta = load_map_yaml(map_yaml)
    image = _load_rgb(meta)
    grid = MapGrid.from_meta(meta, image.shape[1], image.shape[0])
    items = [(str(label), _xy(track)) for label, track in tracks.items()]
    boxes = [np.array([[b[0], b[2]], [b[1], b[3]]], dtype=float) for b in include]
    view = _view(grid, [xy for _label, xy in items] + boxes, crop, margin_m)
    window, extent = _image_window(grid, image, view, max_px)

    view_w, view_h = view[1] - view[0], view[3] - view[2]
    left, right, bottom, top = 0.09, 0.97, 0.08, 0.93 if title else 0.97
    fig_w = width_px / float(dpi)
    axes_h = fig_w * (right - left) * view_h / view_w
    fig_h = min(max(axes_h / (top - bottom), 3.0), 3.0 * fig_w)
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left, right=right, bottom=bottom, top=top)
    ax = fig.add_subplot(1, 1, 1)
    if window is not None:
        ax.imshow(window, extent=extent, origin='upper', cmap='gray' if window.ndim == 2 else None,
                  vmin=0, vmax=255, interpolation='antialiased', zorder=0)
    handles = []
    for index, (label, xy) in enumerate(items):
        colour = TRACK_COLOURS[index % len(TRACK_COLOURS)]
        if not len(xy):
            continue
        line, = ax.plot(xy[:, 0], xy[:, 1], '-', color=colour, linewidth=2.0, label=label,
                        zorder=2)
        handles.append(line)
        ax.plot(xy[0, 0], xy[0, 1], 'o', markersize=10, markerfacecolor=colour,
                markeredgecolor='black', markeredgewidth=1.0, zorder=3)
        ax.plot(xy[-1, 0], xy[-1, 1], 's', markersize=9, markerfacecolor=colour,
                markeredgecolor='black', markeredgewidth=1.0, zorder=3)
    ax.set_xlim(view[0], view[1])
    ax.set_ylim(view[2], view[3])
    extra = list(overlay(ax) or []) if overlay is not None else []
    if handles:
        handles += [Line2D([], [], linestyle='none', marker='o', color='grey',
                           markeredgecolor='black', label='start'),
                    Line2D([], [], linestyle='none', marker='s', color='grey',
                           markeredgecolor='black', label='end')]
    if handles or extra:
        ax.legend(handles=handles + extra, loc='best', framealpha=0.8, fontsize=9)
    ax.set_xlim(view[0], view[1])
    ax.set_ylim(view[2], view[3])
    ax.set_aspect('equal', adjustable='box')
    ax.set_xlabel('x (east) [m]')
    ax.set_ylabel('y (north) [m]')
    if title:
        ax.set_title(title)
    length = _nice_length(view_w)
    bar = AnchoredSizeBar(ax.transData, length, f'{length:g} m', loc='lower right',
                          pad=0.4, borderpad=0.6, sep=4, frameon=True,
                          size_vertical=max(view_h / 150.0, 1e-9), color='black')
    bar.patch.set_alpha(0.75)
    ax.add_artist(bar)
    out_dir = os.path.dirname(os.path.abspath(out_png))
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    return out_png


def main(args=None):
    """``python -m skyloc_sim.track_plot BAG MAP_YAML OUT_PNG [--topics ...] [--crop]``."""
    parser = argparse.ArgumentParser(
        prog='python -m skyloc_sim.track_plot',
        description='Plot vehicle tracks from a bag over the world orthophoto.')
    parser.add_argument('bag', help='rosbag2 folder (or .mcap file)')
    parser.add_argument('map_yaml', help='map YAML of the world image')
    parser.add_argument('out_png', help='PNG to write')
    parser.add_argument('--topics', nargs='+', default=None,
                        help='pose topics to plot (default: those of '
                             f'{", ".join(DEFAULT_TOPICS)} that the bag has)')
    parser.add_argument('--crop', action='store_true', help='zoom on the tracks')
    parser.add_argument('--margin', type=float, default=None, help='crop margin, metres')
    parser.add_argument('--title', default='')
    options = parser.parse_args(args)
    topics = options.topics
    if topics is None:
        present = bag_topics(options.bag)
        topics = [t for t in DEFAULT_TOPICS if t in present]
        if not topics:
            parser.error(f'{options.bag}: none of {", ".join(DEFAULT_TOPICS)} is in the bag '
                         f'(topics: {", ".join(sorted(present)) or "none"}); use --topics')
    tracks = {}
    for topic in topics:
        tracks[topic] = read_track(options.bag, topic)
        print(f'{topic}: {len(tracks[topic])} poses', flush=True)
    plot_track(options.map_yaml, tracks, options.out_png, title=options.title,
               crop=options.crop, margin_m=options.margin)
    print(f'wrote {options.out_png}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
