"""The embedded default dataset: street scenes in which colour alone cannot tell the classes apart.

Sky and glass (windows, car glass) draw from one blue distribution, walls, road and poles from one
grey, doors and cars from one set of paint colours; only shape and context separate them: windows sit
in grids inside walls, doors touch the ground line inside a building, cars stand on a road seen in
perspective, poles are thin and vertical. Per-image illumination, colour cast, gradients, texture noise
and occluding trees and poles keep a per-pixel colour classifier far from solving it (see
tests/test_synthetic.py). Everything comes from one numpy Generator, so a seed fixes every byte.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from seg_p2p.data.settings import SyntheticConfig

SKY, WALL, WINDOW, DOOR, ROAD, CAR, VEGETATION, POLE = range(8)  # order of specs/synthetic.yaml

PAINTS = np.array([(165, 35, 35), (35, 85, 45), (105, 65, 35), (35, 35, 40), (215, 215, 210), (200, 165, 45),
                   (50, 70, 140)], dtype=np.float32)  # doors and cars


def blue(rng) -> np.ndarray:
    """Sky and glass."""
    return np.array([105, 155, 210]) + rng.normal(0, 10) + rng.normal(0, [20, 18, 18])


def grey(rng) -> np.ndarray:
    """Walls, road and poles."""
    return rng.uniform(75, 185) + rng.normal(0, 6, 3)


def paint_colour(rng) -> np.ndarray:
    return PAINTS[rng.integers(len(PAINTS))] + rng.normal(0, 12, 3)


def green(rng) -> np.ndarray:
    return np.array([70, 115, 45]) + rng.normal(0, [12, 15, 10])


def smooth_noise(rng, size: int, cells: int) -> np.ndarray:
    """Unit-variance-ish noise varying over ~size/cells pixels (bilinear upsampling of a coarse grid)."""
    coarse = Image.fromarray(rng.standard_normal((cells, cells)).astype(np.float32))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BILINEAR))


class Scene:
    """One image being painted back to front: colours (float) and class labels side by side."""

    def __init__(self, rng, size: int):
        self.rng, self.size = rng, size
        self.y = ((np.arange(size) + 0.5) / size)[:, None]  # pixel centres in [0, 1], so geometry is size-free
        self.x = ((np.arange(size) + 0.5) / size)[None, :]
        self.pixel = 1 / size
        grain = rng.standard_normal((size, size, 1)) + 0.3 * rng.standard_normal((size, size, 3))  # mostly luminance
        self.grain = grain.astype(np.float32)
        self.blotch = smooth_noise(rng, size, 6)[..., None]
        self.rgb = np.zeros((size, size, 3), dtype=np.float32)
        self.label = np.zeros((size, size), dtype=np.uint8)

    def box(self, x0, x1, y0, y1) -> np.ndarray:
        """Pixels inside a rectangle, at least one pixel wide and tall."""
        x1, y1 = max(x1, x0 + self.pixel), max(y1, y0 + self.pixel)
        return (self.x >= x0) & (self.x < x1) & (self.y >= y0) & (self.y < y1)

    def paint(self, region, cls, colour, grain=5.0, blotch=8.0, shade=None):
        """Fill a region with a textured colour; `shade` is an optional brightness field (gradients)."""
        value = colour + grain * self.grain[region] + blotch * self.blotch[region]
        if shade is not None:
            value += np.broadcast_to(shade, region.shape)[region][:, None]
        self.rgb[region] = value
        self.label[region] = cls

    def building(self, x0, x1, top, ground, door: bool):
        rng = self.rng
        self.paint(self.box(x0, x1, top, ground), WALL, grey(rng), grain=7, blotch=12,
                   shade=rng.uniform(-20, 20) * (self.x - x0) / (x1 - x0))
        # window grid: whole floors above the ground floor, whole bays inside the wall's margins
        floor, bay = rng.uniform(0.09, 0.15), rng.uniform(0.07, 0.12)
        height, width = floor * rng.uniform(0.45, 0.65), bay * rng.uniform(0.4, 0.65)
        gx0, gy0 = x0 + rng.uniform(0.2, 0.5) * bay, top + rng.uniform(0.25, 0.5) * floor
        bays, floors = int((x1 - gx0) / bay), int((ground - floor * 1.2 - gy0) / floor)
        if bays > 0 and floors > 0:
            column, row = (self.x - gx0) / bay, (self.y - gy0) / floor
            inside = (column >= 0) & (column < bays) & (row >= 0) & (row < floors)
            windows = inside & (column % 1 < width / bay) & (row % 1 < height / floor)
            glare = rng.normal(0, 12, (floors + 1) * (bays + 1))  # each pane catches the light differently
            cell = np.clip(row, 0, floors).astype(int) * (bays + 1) + np.clip(column, 0, bays).astype(int)
            self.paint(windows, WINDOW, blue(rng), grain=3, blotch=10, shade=glare[cell] + 40 * (row % 1))
        if door:
            door_width = rng.uniform(0.05, 0.09)
            door_x = rng.uniform(x0, max(x0, x1 - door_width))
            door_height = min(rng.uniform(0.09, 0.14), (ground - top) * 0.8)
            self.paint(self.box(door_x, door_x + door_width, ground - door_height, ground), DOOR, paint_colour(rng))

    def tree(self, x, base):
        rng = self.rng
        trunk = rng.uniform(0.06, 0.14)
        self.paint(self.box(x - 0.012, x + 0.012, base - trunk, base), VEGETATION,
                   np.array([90, 65, 40]) + rng.normal(0, 10, 3), grain=8)
        rx, ry = rng.uniform(0.07, 0.15), rng.uniform(0.07, 0.14)
        cy = base - trunk - 0.7 * ry
        ragged = 1 + 0.35 * smooth_noise(rng, self.size, 10)
        crown = ((self.x - x) / rx) ** 2 + ((self.y - cy) / ry) ** 2 < ragged
        self.paint(crown, VEGETATION, green(rng), grain=22, blotch=20)

    def pole(self, x, base):
        rng = self.rng
        top, colour = base - self.rng.uniform(0.25, 0.45), grey(rng)
        self.paint(self.box(x - 0.006, x + 0.006, top, base), POLE, colour, grain=4)
        arm = rng.choice([-1, 1]) * rng.uniform(0.03, 0.07)
        self.paint(self.box(min(x, x + arm), max(x, x + arm), top, top + 0.01), POLE, colour, grain=4)

    def car(self, x, bottom, depth):
        rng = self.rng
        width = depth * rng.uniform(0.3, 0.42)
        body = width * rng.uniform(0.28, 0.34)
        colour = paint_colour(rng)
        self.paint(self.box(x - width / 2, x + width / 2, bottom - body, bottom - 0.25 * body), CAR, colour, grain=4,
                   shade=-25 * (self.y - bottom + body) / body)
        cabin_x = x - width * rng.uniform(0.25, 0.35)
        cabin = (cabin_x, cabin_x + 0.6 * width, bottom - 1.7 * body, bottom - body)
        self.paint(self.box(*cabin), CAR, colour, grain=4)
        inset = 0.12 * body
        glass = self.box(cabin[0] + inset, cabin[1] - inset, cabin[2] + inset, cabin[3])
        self.paint(glass, CAR, blue(rng), grain=3, blotch=10)
        for wheel_x in (x - 0.3 * width, x + 0.3 * width):
            wheel = ((self.x - wheel_x) ** 2 + (self.y - bottom + 0.3 * body) ** 2) < (0.3 * body) ** 2
            self.paint(wheel, CAR, np.full(3, 28.0) + rng.normal(0, 5), grain=3, blotch=2)

    def photo(self) -> np.ndarray:
        """Lighting (gain, colour cast, side light), a slight blur like a lens, sensor noise, 8 bits."""
        rng = self.rng
        light = rng.uniform(0.7, 1.25) * (1 + rng.uniform(-0.25, 0.25) * (self.x - 0.5))
        rgb = self.rgb * light[..., None] + rng.normal(0, 8, 3)
        padded = np.pad(rgb, ((1, 1), (1, 1), (0, 0)), mode="edge")
        rgb = 0.5 * rgb + 0.125 * (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:])
        rgb += rng.normal(0, 2, rgb.shape)
        return np.clip(rgb, 0, 255).astype(np.uint8)


def draw_scene(rng, size: int) -> tuple[np.ndarray, np.ndarray]:
    scene = Scene(rng, size)
    ground = rng.uniform(0.58, 0.72)  # where buildings stand and the road begins
    horizon, vanish_x = ground - rng.uniform(0.02, 0.1), rng.uniform(0.3, 0.7)

    scene.paint(np.ones((size, size), bool), SKY, blue(rng), grain=2, blotch=10,
                shade=45 * np.clip(scene.y / horizon, 0, 1))  # brighter towards the horizon

    count = rng.integers(1, 4)
    cuts = np.linspace(-0.05, 1.05, count + 1) + np.r_[0, rng.uniform(-0.05, 0.05, count - 1), 0]
    for i in range(count):
        x0, x1 = cuts[i] + rng.uniform(0, 0.08), cuts[i + 1] - rng.uniform(0, 0.08)
        scene.building(x0, x1, rng.uniform(0.08, ground - 0.25), ground, door=i == 0 or rng.random() < 0.7)

    # road narrowing towards the vanishing point, grass verges beside it
    below = scene.y >= ground
    half_width = rng.uniform(0.45, 0.8) * (scene.y - horizon) / (1 - horizon)
    road = below & (np.abs(scene.x - vanish_x) <= half_width)
    scene.paint(below & ~road, VEGETATION, green(rng), grain=18, blotch=15)
    scene.paint(road, ROAD, grey(rng), grain=8, blotch=12, shade=30 * (scene.y - ground) / (1 - ground))

    for _ in range(rng.integers(0, 3)):
        scene.tree(rng.uniform(0.05, 0.95), ground + rng.uniform(0, 0.05))
    for _ in range(rng.integers(1, 3)):
        scene.pole(rng.uniform(0.05, 0.95), ground + rng.uniform(0, 0.06))
    for bottom in np.sort(rng.uniform(ground + 0.15 * (1 - ground), 1.0, rng.integers(1, 4))):  # far to near
        depth = (bottom - horizon) / (1 - horizon)
        road_half = np.interp(bottom, scene.y[:, 0], half_width[:, 0])
        scene.car(vanish_x + rng.uniform(-0.7, 0.7) * road_half, bottom, depth)
    return scene.photo(), scene.label


def generate(cfg: SyntheticConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (photos uint8 (N,H,W,3), masks uint8 (N,H,W)); one seeded stream per split."""
    counts = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}
    data = {}
    for (split, count), seed in zip(counts.items(), np.random.SeedSequence(cfg.seed).spawn(len(counts))):
        rng = np.random.default_rng(seed)
        photos = np.empty((count, cfg.size, cfg.size, 3), dtype=np.uint8)
        masks = np.empty((count, cfg.size, cfg.size), dtype=np.uint8)
        for i in range(count):
            photos[i], masks[i] = draw_scene(rng, cfg.size)
        data[split] = (photos, masks)
    return data
