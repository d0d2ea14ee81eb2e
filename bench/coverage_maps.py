"""Procedural maps for the coverage benchmark (issue 5): furnished rooms and fields.

Every map is built from a fixed seed (numpy default_rng), so runs compare like with like. A map is
a dict:
  name, kind ('room' | 'field'), occupied (bool H x W, nav_msgs/OccupancyGrid convention: row 0
  is the BOTTOM row; cell (row, col) has its centre at x = origin_x + (col + 0.5) * resolution,
  y = origin_y + (row + 0.5) * resolution), resolution (m), origin (x, y), swath_width (m),
  radius (m), start (x, y) on free C-space, new_obstacle (x, y, radius_m) on free space near the
  middle (replanning benchmark).
Rooms: 0.05 m/cell, 8-20 m, walls, furniture placed either flush (touching a wall or another
piece) or with a walking clearance all round; a ground robot of radius 0.2 m with a 0.4-0.5 m
tool. Fields: 1 m/cell, 200-400 m, a geofence polygon (outside = occupied), trees, tree clumps,
masts, buildings, ponds; a drone of radius 3 m with a 15-25 m swath. No map exceeds 400 x 400
cells. Pieces that would split the free C-space (4-connected) in two are not placed.

write_map_server() writes a map as Nav2 map_server YAML + PGM (image row 0 = the top).
"""

import math
import os

import numpy as np
import yaml
from matplotlib.path import Path
from scipy import ndimage

import coverage_eval

ROOM_RES = 0.05
FIELD_RES = 1.0
ROBOT_RADIUS = 0.2
DRONE_RADIUS = 3.0

# (name, width m, depth m): width along the wall when flush
FURNITURE = [('sofa', 2.0, 0.9), ('bed', 2.0, 1.6), ('table', 1.6, 0.9), ('desk', 1.4, 0.7),
             ('shelf', 1.0, 0.4), ('wardrobe', 1.2, 0.6), ('armchair', 0.8, 0.8),
             ('cabinet', 0.8, 0.5), ('piano', 1.5, 0.6), ('sideboard', 1.8, 0.5)]


class Canvas:
    """An occupancy grid under construction, drawn in map-frame metres."""

    def __init__(self, rows, cols, res, origin):
        assert rows <= 400 and cols <= 400
        self.res = res
        self.origin = (float(origin[0]), float(origin[1]))
        self.occ = np.zeros((rows, cols), dtype=bool)
        r, c = np.mgrid[0:rows, 0:cols]
        self.x = self.origin[0] + (c + 0.5) * res
        self.y = self.origin[1] + (r + 0.5) * res

    def xy(self, u, v):
        """Map-frame point of map-local metres (from the lower-left corner of the grid)."""
        return self.origin[0] + u, self.origin[1] + v

    def polygon(self, pts):
        pts = np.asarray(pts, dtype=float)
        inside = Path(pts).contains_points(np.column_stack([self.x.ravel(), self.y.ravel()]))
        return inside.reshape(self.occ.shape)

    def disc(self, cx, cy, r):
        return (self.x - cx) ** 2 + (self.y - cy) ** 2 <= r * r

    def rect(self, cx, cy, w, h, angle=0.0):
        ca, sa = math.cos(angle), math.sin(angle)
        dx, dy = self.x - cx, self.y - cy
        u = dx * ca + dy * sa
        v = -dx * sa + dy * ca
        return (np.abs(u) <= w / 2) & (np.abs(v) <= h / 2)

    def cspace_components(self, radius):
        """4-connected components of the free C-space: a part joined to the rest only through
        two cells touching at a corner counts apart (the evaluator's 8-connected reachability
        would take it in through a passage of zero width)."""
        free = ~coverage_eval.blocked_mask(self.occ, self.res, radius)
        return ndimage.label(free)[1]

    def try_add(self, mask, radius):
        """Add mask to the obstacles unless that splits the free C-space; True if added."""
        before = self.occ.copy()
        self.occ |= mask
        if self.cspace_components(radius) != 1:
            self.occ = before
            return False
        return True


def nearest_free(canvas, radius, x, y, clearance=0.0):
    """Centre of the free C-space cell nearest to (x, y) with `clearance` m more room."""
    dist = ndimage.distance_transform_edt(~canvas.occ) * canvas.res
    ok = dist > radius + clearance + 1e-9
    ok &= ~coverage_eval.blocked_mask(canvas.occ, canvas.res, radius)
    rows, cols = np.nonzero(ok)
    xs, ys = canvas.x[rows, cols], canvas.y[rows, cols]
    i = int(np.argmin((xs - x) ** 2 + (ys - y) ** 2))
    return float(xs[i]), float(ys[i])


def finish(canvas, name, kind, swath, radius, start_uv, obstacle_radius, description):
    """Pick the start near start_uv (map-local metres) and the new obstacle near the middle of
    the free C-space, with room around it so that it does not close a passage."""
    # two cells inside the free C-space, not on its boundary (a start on the boundary of the
    # area is a degenerate input for a polygon planner)
    start = nearest_free(canvas, radius, *canvas.xy(*start_uv), clearance=2 * canvas.res)
    reach, _, _ = coverage_eval.reachable_mask(canvas.occ, canvas.res, canvas.origin, radius,
                                               start)
    cx, cy = float(canvas.x[reach].mean()), float(canvas.y[reach].mean())
    ox, oy = nearest_free(canvas, radius, cx, cy,
                          clearance=obstacle_radius + 2 * radius + swath)
    return {'name': name, 'kind': kind, 'occupied': canvas.occ.copy(),
            'resolution': canvas.res, 'origin': canvas.origin, 'swath_width': swath,
            'radius': radius, 'start': start, 'new_obstacle': (ox, oy, obstacle_radius),
            'description': description}


# ---------------------------------------------------------------------------------- rooms

def room_canvas(width_m, height_m, origin, wall=0.15):
    """A closed box: walls `wall` thick around width_m x height_m of floor."""
    cols = int(round((width_m + 2 * wall) / ROOM_RES))
    rows = int(round((height_m + 2 * wall) / ROOM_RES))
    canvas = Canvas(rows, cols, ROOM_RES, origin)
    k = int(round(wall / ROOM_RES))
    canvas.occ[:] = True
    canvas.occ[k:rows - k, k:cols - k] = False
    return canvas, k


def side_gap(occ, r0, r1, c0, c1, side, limit):
    """Free cells between a rectangle's side and the first occupied cell beyond it (<= limit)."""
    h, w = occ.shape
    for k in range(1, limit + 1):
        if side == 'left':
            strip = occ[r0:r1, c0 - k] if c0 - k >= 0 else None
        elif side == 'right':
            strip = occ[r0:r1, c1 - 1 + k] if c1 - 1 + k < w else None
        elif side == 'down':
            strip = occ[r0 - k, c0:c1] if r0 - k >= 0 else None
        else:
            strip = occ[r1 - 1 + k, c0:c1] if r1 - 1 + k < h else None
        if strip is None or strip.any():
            return k - 1
    return limit


SHIFT = {'left': (0, -1), 'right': (0, 1), 'down': (-1, 0), 'up': (1, 0)}


def place_flush(canvas, rng, w_m, d_m, clearance_m, radius, tries=60):
    """An axis-aligned piece pushed against a wall (and into a corner or against a neighbour
    when the side gap would be narrower than the clearance). True if placed."""
    occ = canvas.occ
    clear = int(round(clearance_m / canvas.res))
    free_r, free_c = np.nonzero(~occ)
    for _ in range(tries):
        direction = ['left', 'right', 'down', 'up'][rng.integers(4)]
        along = w_m if direction in ('down', 'up') else d_m
        across = d_m if direction in ('down', 'up') else w_m
        nc, nr = int(round(along / canvas.res)), int(round(across / canvas.res))
        i = rng.integers(free_r.size)
        r0, c0 = int(free_r[i]), int(free_c[i])
        r1, c1 = r0 + nr, c0 + nc
        if r1 > occ.shape[0] or c1 > occ.shape[1] or occ[r0:r1, c0:c1].any():
            continue
        order = [direction] + [s for s in ('left', 'right', 'down', 'up') if s != direction]
        ok = True
        for side in order:
            gap = side_gap(occ, r0, r1, c0, c1, side, occ.shape[0] + occ.shape[1])
            if side == direction or 0 < gap < clear:
                dr, dc = SHIFT[side]
                r0, r1, c0, c1 = r0 + dr * gap, r1 + dr * gap, c0 + dc * gap, c1 + dc * gap
        for side in ('left', 'right', 'down', 'up'):
            if 0 < side_gap(occ, r0, r1, c0, c1, side, clear) < clear:
                ok = False
        if not ok or occ[r0:r1, c0:c1].any():
            continue
        mask = np.zeros_like(occ)
        mask[r0:r1, c0:c1] = True
        if canvas.try_add(mask, radius):
            return True
    return False


def place_free(canvas, rng, make_mask, clearance_m, radius, region=None, tries=60):
    """A free-standing piece: make_mask(cx, cy, grow) -> mask (grow = extra size on every side);
    it needs `clearance_m` of free floor all round. True if placed."""
    occ = canvas.occ
    cand = ~occ if region is None else (region & ~occ)
    free_r, free_c = np.nonzero(cand)
    for _ in range(tries):
        i = rng.integers(free_r.size)
        cx, cy = canvas.x[free_r[i], free_c[i]], canvas.y[free_r[i], free_c[i]]
        if (make_mask(cx, cy, clearance_m) & occ).any():
            continue
        if canvas.try_add(make_mask(cx, cy, 0.0), radius):
            return True
    return False


def furnish(canvas, rng, count, clearance_m, radius=ROBOT_RADIUS, flush_share=0.6,
            round_share=0.15):
    for _ in range(count):
        name, w, d = FURNITURE[rng.integers(len(FURNITURE))]
        u = rng.random()
        if u < flush_share:
            place_flush(canvas, rng, w, d, clearance_m, radius)
        elif u < flush_share + round_share:
            r = rng.uniform(0.35, 0.6)  # round table, plant, column
            place_free(canvas, rng, lambda cx, cy, g, r=r: canvas.disc(cx, cy, r + g),
                       clearance_m, radius)
        else:
            angle = rng.choice([0.0, math.pi / 2, rng.uniform(0, math.pi)])
            place_free(canvas, rng,
                       lambda cx, cy, g, w=w, d=d, a=angle: canvas.rect(cx, cy, w + 2 * g,
                                                                        d + 2 * g, a),
                       clearance_m, radius)


def room_living():
    rng = np.random.default_rng(11)
    canvas, _ = room_canvas(10.0, 8.0, (-5.0, -4.0))
    furnish(canvas, rng, 9, 0.8)
    return finish(canvas, 'room_living', 'room', 0.45, ROBOT_RADIUS, (0.6, 0.6), 0.3,
                  '10 x 8 m living room')


def room_office():
    rng = np.random.default_rng(12)
    canvas, _ = room_canvas(14.0, 10.0, (0.0, 0.0))
    for row in range(2):  # two rows of three desks, free-standing, jittered
        for col in range(3):
            cx, cy = canvas.xy(3.2 + 3.9 * col + rng.uniform(-0.2, 0.2),
                               3.3 + 3.6 * row + rng.uniform(-0.2, 0.2))
            canvas.try_add(canvas.rect(cx, cy, 1.6, 0.8), ROBOT_RADIUS)
    furnish(canvas, rng, 6, 0.9, flush_share=0.9, round_share=0.1)
    return finish(canvas, 'room_office', 'room', 0.5, ROBOT_RADIUS, (13.5, 0.6), 0.3,
                  '14 x 10 m office, desks in rows, cabinets on the walls')


def room_lshape():
    rng = np.random.default_rng(13)
    canvas, k = room_canvas(16.0, 12.0, (2.0, -6.0))
    rows, cols = canvas.occ.shape
    cut_r, cut_c = int(round(5.0 / ROOM_RES)), int(round(7.0 / ROOM_RES))
    canvas.occ[rows - k - cut_r:, cols - k - cut_c:] = True  # L: top-right corner is solid
    furnish(canvas, rng, 12, 0.8)
    return finish(canvas, 'room_lshape', 'room', 0.4, ROBOT_RADIUS, (0.6, 11.0), 0.3,
                  'L-shaped 16 x 12 m room (7 x 5 m cut out)')


def room_two_rooms():
    rng = np.random.default_rng(14)
    canvas, k = room_canvas(18.0, 9.0, (-9.0, 0.0))
    rows, cols = canvas.occ.shape
    wall_c = cols // 2
    canvas.occ[:, wall_c - 1:wall_c + 2] = True  # 0.15 m internal wall
    door0 = k + int(round(5.5 / ROOM_RES))
    canvas.occ[door0:door0 + int(round(0.9 / ROOM_RES)), wall_c - 1:wall_c + 2] = False
    furnish(canvas, rng, 12, 0.8)
    return finish(canvas, 'room_two_rooms', 'room', 0.45, ROBOT_RADIUS, (0.6, 0.6), 0.3,
                  'two 9 x 9 m rooms joined by a 0.9 m doorway')


def room_hall():
    rng = np.random.default_rng(15)
    canvas, _ = room_canvas(19.7, 19.7, (-10.0, -10.0))
    for i in range(3):
        for j in range(3):
            cx, cy = canvas.xy(5.0 + 5.0 * i, 5.0 + 5.0 * j)
            canvas.try_add(canvas.disc(cx, cy, 0.3), ROBOT_RADIUS)  # pillars
    for _ in range(10):  # pallets, free-standing, some turned
        angle = rng.choice([0.0, math.pi / 2, rng.uniform(0, math.pi)])
        place_free(canvas, rng, lambda cx, cy, g, a=angle: canvas.rect(cx, cy, 1.2 + 2 * g,
                                                                       0.8 + 2 * g, a),
                   1.0, ROBOT_RADIUS)
    furnish(canvas, rng, 6, 1.0, flush_share=1.0)
    return finish(canvas, 'room_hall', 'room', 0.5, ROBOT_RADIUS, (0.6, 0.6), 0.3,
                  '20 x 20 m hall, 9 pillars, pallets, shelves on the walls')


def room_flat():
    rng = np.random.default_rng(16)
    canvas, k = room_canvas(16.0, 14.0, (-8.0, -7.0))
    occ = canvas.occ
    rows, cols = occ.shape

    def cells(m):
        return k + int(round(m / ROOM_RES))

    # corridor 1.4 m wide along y = 6.0..7.4 m, three rooms south, two north
    for y_m in (6.0, 7.4):
        r = cells(y_m)
        occ[r - 1:r + 2, :] = True
    for x_m in (5.5, 10.5):  # walls between the south rooms
        c = cells(x_m)
        occ[:cells(6.0), c - 1:c + 2] = True
    c = cells(8.0)
    occ[cells(7.4):, c - 1:c + 2] = True  # wall between the north rooms
    doors = [(6.0, 2.0, 0.8), (6.0, 7.5, 0.9), (6.0, 13.0, 1.0), (7.4, 3.5, 0.9),
             (7.4, 12.0, 0.8)]
    for y_m, x_m, width in doors:
        r = cells(y_m)
        occ[r - 1:r + 2, cells(x_m):cells(x_m + width)] = False
    furnish(canvas, rng, 14, 0.8)
    return finish(canvas, 'room_flat', 'room', 0.4, ROBOT_RADIUS, (0.6, 6.7), 0.3,
                  '16 x 14 m flat: corridor, five rooms, 0.8-1.0 m doorways')


# --------------------------------------------------------------------------------- fields

def field_canvas(width_m, height_m, origin, boundary_uv):
    """Cells outside the geofence polygon (map-local metres) are occupied."""
    cols, rows = int(round(width_m / FIELD_RES)), int(round(height_m / FIELD_RES))
    canvas = Canvas(rows, cols, FIELD_RES, origin)
    pts = [canvas.xy(u, v) for u, v in boundary_uv]
    inside = canvas.polygon(pts)
    canvas.occ[:] = ~inside
    return canvas, inside


def blob(canvas, cx, cy, r, rng, grow=0.0):
    """A pond: a smooth random star-shaped polygon."""
    th = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    a1, a2, p1, p2 = rng.uniform(0.1, 0.25), rng.uniform(0.05, 0.15), rng.uniform(0, 6), \
        rng.uniform(0, 6)
    rad = r * (1 + a1 * np.sin(2 * th + p1) + a2 * np.sin(3 * th + p2)) + grow
    return canvas.polygon(np.column_stack([cx + rad * np.cos(th), cy + rad * np.sin(th)]))


def add_obstacles(canvas, rng, inside, spec, clearance, radius=DRONE_RADIUS):
    """spec: list of (kind, count); each obstacle keeps `clearance` m from the geofence and the
    other obstacles."""
    region = ndimage.binary_erosion(inside, iterations=int(clearance / canvas.res))
    for kind, count in spec:
        for _ in range(count):
            if kind == 'tree':
                r = rng.uniform(2.0, 5.0)
                place_free(canvas, rng, lambda cx, cy, g, r=r: canvas.disc(cx, cy, r + g),
                           clearance, radius, region)
            elif kind == 'mast':
                r = rng.uniform(1.0, 2.0)
                place_free(canvas, rng, lambda cx, cy, g, r=r: canvas.disc(cx, cy, r + g),
                           clearance, radius, region)
            elif kind == 'clump':
                n = rng.integers(3, 7)
                offs = rng.uniform(-7, 7, (n, 2))
                rs = rng.uniform(2.0, 4.5, n)

                def clump(cx, cy, g, offs=offs, rs=rs):
                    m = np.zeros_like(canvas.occ)
                    for (du, dv), r in zip(offs, rs):
                        m |= canvas.disc(cx + du, cy + dv, r + g)
                    return m
                place_free(canvas, rng, clump, clearance, radius, region)
            elif kind == 'building':
                w, h = rng.uniform(10, 40), rng.uniform(8, 25)
                a = rng.choice([0.0, rng.uniform(0, math.pi)])
                place_free(canvas, rng,
                           lambda cx, cy, g, w=w, h=h, a=a: canvas.rect(cx, cy, w + 2 * g,
                                                                        h + 2 * g, a),
                           clearance, radius, region)
            elif kind == 'pond':
                r = rng.uniform(15, 30)
                seed = int(rng.integers(1 << 30))
                place_free(canvas, rng,
                           lambda cx, cy, g, r=r, s=seed: blob(canvas, cx, cy, r,
                                                               np.random.default_rng(s), g),
                           clearance, radius, region)


def field_rect(obstacles=True):
    rng = np.random.default_rng(21)
    canvas, inside = field_canvas(302, 202, (-151.0, -101.0),
                                  [(1, 1), (301, 1), (301, 201), (1, 201)])
    if obstacles:
        add_obstacles(canvas, rng, inside, [('tree', 12), ('clump', 2), ('mast', 2)], 15.0)
    return finish(canvas, 'field_rect', 'field', 20.0, DRONE_RADIUS, (5, 5), 6.0,
                  '300 x 200 m field, trees and a clump')


def field_pentagon(obstacles=True):
    rng = np.random.default_rng(22)
    canvas, inside = field_canvas(352, 302, (0.0, 0.0),
                                  [(1, 20), (230, 1), (351, 110), (300, 301), (40, 260)])
    if obstacles:
        add_obstacles(canvas, rng, inside, [('tree', 10), ('mast', 2), ('building', 1)], 15.0)
    return finish(canvas, 'field_pentagon', 'field', 18.0, DRONE_RADIUS, (20, 30), 6.0,
                  'pentagonal field 350 x 300 m, trees, masts, a shed')


def field_pond(obstacles=True):
    rng = np.random.default_rng(23)
    canvas, inside = field_canvas(400, 302, (-200.0, -151.0),
                                  [(1, 1), (399, 1), (399, 301), (1, 301)])
    if obstacles:
        add_obstacles(canvas, rng, inside, [('pond', 1), ('building', 2), ('tree', 10)], 18.0)
    return finish(canvas, 'field_pond', 'field', 25.0, DRONE_RADIUS, (395, 5), 6.0,
                  '400 x 300 m field, a pond, two buildings, trees')


def field_trapezoid(obstacles=True):
    rng = np.random.default_rng(24)
    canvas, inside = field_canvas(400, 400, (-200.0, -200.0),
                                  [(1, 1), (399, 1), (330, 399), (60, 399)])
    if obstacles:
        add_obstacles(canvas, rng, inside, [('building', 3), ('tree', 10), ('mast', 2)], 15.0)
    return finish(canvas, 'field_trapezoid', 'field', 22.0, DRONE_RADIUS, (5, 5), 6.0,
                  'trapezoid 400 x 400 m, farm buildings (some turned), trees, a mast')


def field_clumps(obstacles=True):
    rng = np.random.default_rng(25)
    canvas, inside = field_canvas(252, 252, (0.0, -252.0),
                                  [(1, 1), (251, 1), (251, 251), (1, 251)])
    if obstacles:
        add_obstacles(canvas, rng, inside, [('clump', 4), ('tree', 4)], 12.0)
    return finish(canvas, 'field_clumps', 'field', 15.0, DRONE_RADIUS, (5, 245), 6.0,
                  '250 x 250 m meadow, tree clumps')


def field_lshape(obstacles=True):
    rng = np.random.default_rng(26)
    canvas, inside = field_canvas(382, 352, (-100.0, -50.0),
                                  [(1, 1), (381, 1), (381, 140), (180, 140), (160, 351),
                                   (1, 351)])
    if obstacles:
        add_obstacles(canvas, rng, inside, [('pond', 1), ('mast', 3), ('tree', 4)], 15.0)
    return finish(canvas, 'field_lshape', 'field', 20.0, DRONE_RADIUS, (5, 5), 6.0,
                  'concave L-shaped field 380 x 350 m, a pond, masts, trees')


def field_turned(obstacles=True):
    """A field whose sides are not along the map axes (the common case for a survey polygon
    given in lat/lon): a sweep along x or y crosses every side at a slant."""
    rng = np.random.default_rng(27)
    a = math.radians(30.0)
    corners = [(200 + u * math.cos(a) - v * math.sin(a), 150 + u * math.sin(a) + v * math.cos(a))
               for u, v in ((-140, -90), (140, -90), (140, 90), (-140, 90))]
    canvas, inside = field_canvas(400, 300, (-200.0, -150.0), corners)
    if obstacles:
        add_obstacles(canvas, rng, inside, [('tree', 8), ('building', 1)], 15.0)
    start = (corners[0][0] + 8.0, corners[0][1] + 8.0)
    return finish(canvas, 'field_turned', 'field', 20.0, DRONE_RADIUS, start, 6.0,
                  '280 x 180 m field turned 30 deg to the map axes, trees, a barn')


MAPS = [room_living, room_office, room_lshape, room_two_rooms, room_hall, room_flat,
        field_rect, field_pentagon, field_pond, field_trapezoid, field_clumps, field_lshape,
        field_turned]


def all_maps():
    return [make() for make in MAPS]


def shape_only(name):
    """The field `name` with its boundary and none of its obstacles (same swath, radius and
    start): what the shape alone costs a planner."""
    return globals()[name](obstacles=False)


# ---------------------------------------------------------------------------- map_server

def write_map_server(m, folder, name=None):
    """Write `m` as Nav2 map_server YAML + PGM (occupied 0, free 254; image row 0 is the top).
    Returns the YAML path."""
    os.makedirs(folder, exist_ok=True)
    name = name or m['name']
    image = np.where(np.flipud(m['occupied']), 0, 254).astype(np.uint8)
    h, w = image.shape
    with open(os.path.join(folder, name + '.pgm'), 'wb') as stream:
        stream.write(b'P5\n%d %d\n255\n' % (w, h))
        stream.write(image.tobytes())
    meta = {'image': name + '.pgm', 'mode': 'trinary', 'resolution': float(m['resolution']),
            'origin': [float(m['origin'][0]), float(m['origin'][1]), 0.0], 'negate': 0,
            'occupied_thresh': 0.65, 'free_thresh': 0.25}
    path = os.path.join(folder, name + '.yaml')
    with open(path, 'w') as stream:
        yaml.safe_dump(meta, stream, default_flow_style=None, sort_keys=False)
    return path


def read_map_server(yaml_path):
    """(occupied bool array, row 0 = bottom; resolution; (origin x, y)) of a map_server map."""
    import cv2
    with open(yaml_path) as stream:
        meta = yaml.safe_load(stream)
    image = cv2.imread(os.path.join(os.path.dirname(yaml_path), meta['image']),
                       cv2.IMREAD_GRAYSCALE)
    p = image.astype(float) / 255.0
    p = p if meta.get('negate', 0) else 1.0 - p
    occupied = np.flipud(p > meta['occupied_thresh'])
    return occupied, float(meta['resolution']), tuple(float(v) for v in meta['origin'][:2])
