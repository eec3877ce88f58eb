"""Procedural retinal OCT B-scans: synthetic stand-ins for OCTMNIST (never real data).

The model of one B-scan, with depth ``y`` down and lateral ``x`` across, both in units of the
scan's height:

* Geometry. Bruch's membrane (BM) is a smooth curve (depth, tilt, curvature, a slow wobble).
  Stacked above it, from the vitreous down: inner retina (NFL to OPL), outer retina (ONL to the
  photoreceptor tips), sub-retinal fluid, RPE and sub-RPE space; below it the choroid fades
  into the sclera. Each band's thickness varies along ``x``; a foveal pit thins the inner
  retina.
* Reflectivity. Per image, a look-up table maps (band, relative depth in the band) to a mean
  reflectivity and a texture strength: bright NFL, alternating plexiform (bright) and nuclear
  (dark) layers, a bright ellipsoid zone, the brightest RPE, a choroid textured by its vessels.
* Findings, scaled by a per-image severity drawn so that some cases are near normal:
  CNV - an irregular RPE elevation over a hyper-reflective fibrovascular lesion, often with dark
  sub-retinal fluid and a few cysts, shadowing the choroid; DME - retinal thickening with dark
  intraretinal cystoid spaces, sometimes hard exudates or sub-retinal fluid; DRUSEN - a few
  small dome-shaped RPE elevations over medium-reflective material (the subtlest);
  NORMAL - none.
* Acquisition. Multiplicative speckle, vessel shadows, gain with 8-bit saturation, occasional
  white registration fill at an edge; then MedMNIST's center crop and resize, with the filter
  of :mod:`octbench.data.preprocess`.

Everything is vectorised over a block of images. Block ``b`` of a call draws from
``SeedSequence(seed, spawn_key=(b,))`` the same values whatever its labels, so image ``i``
depends only on ``(seed, i, labels[i])``: memory stays bounded, results do not depend on how a
caller batches, and one seed rendered with two labels gives a matched pair (same eye, same
noise) that differs only by the finding.

Must not import: octbench beyond ``octbench.data`` and errors.

One module over 450 lines because it is one idea: the image model of one B-scan, whose parts
(geometry, reflectivity, findings, acquisition) draw from one shared random stream.
"""

from __future__ import annotations

from functools import lru_cache
from numbers import Real

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

from octbench.data.dataset import OCT_CLASSES
from octbench.data.preprocess import RESAMPLE
from octbench.errors import DataError

CNV, DME, DRUSEN, NORMAL = range(4)

#: Width / height of the rendered B-scan before the center crop (OCT2017: 512-768 x 496).
ASPECT = 1.3
#: Severity of a finding ~ Beta(a, b) per image; its mass near 0 makes near-normal cases.
#: ``difficulty`` divides it, so it is the knob to make the task harder or easier.
SEVERITY_BETA = (2.0, 1.4)
#: Upper bounds on the number of cystoid spaces (or exudates) and drusen per scan.
MAX_SPOTS, MAX_DRUSEN = 8, 6
#: Speckle looks of a rendered pixel covering one pixel of a 496 px source scan; calibrated so
#: that the background grain at 28 and 64 px matches OCT2017 scans preprocessed like OCTMNIST.
LOOKS = 2.8
#: Pixels per block (8 MB per float32 array), which bounds the memory of a call.
BLOCK_PIXELS = 2**21
#: Resolution of the look-up tables: bins per band of relative depth.
BINS = 32
#: Depth below BM (in scan heights) over which the choroid fades into the sclera.
CHOROID_SPAN = 0.35

# Layer profiles as (lower edge as a fraction of the band, mean reflectivity), read off OCT2017
# scans with the RPE at 1.
INNER_LAYERS = ((0.2, 0.55), (0.42, 0.34), (0.62, 0.42), (0.82, 0.22), (1.0, 0.38))  # NFL..OPL
OUTER_LAYERS = ((0.6, 0.15), (0.66, 0.3), (0.76, 0.18), (0.86, 0.62), (1.0, 0.32))  # ONL..OS


def render_scans(
    labels: np.ndarray,
    *,
    size: int = 28,
    seed: int = 0,
    difficulty: float = 1.0,
    render_size: int | None = None,
    progress=None,
) -> np.ndarray:
    """Render one synthetic OCT B-scan per label.

    Args:
        labels: class indices (N,) or (N, 1) into :data:`OCT_CLASSES`.
        size: output side in pixels.
        seed: random seed (>= 0); the same seed and labels give the same bytes.
        difficulty: divides the severity of every finding and multiplies the speckle variance:
            > 1 is subtler and noisier, < 1 easier.
        render_size: height of the rendered B-scan before the crop and resize; default
            ``2 * size``, at most ``max(size, 128)``: supersampled, as OCTMNIST's 28 px images
            come from 496 px scans. Cost grows with its square.
        progress: optional object whose ``update(n)`` is called after each block of n scans.

    Returns:
        uint8 array (N, size, size).

    Raises:
        DataError: labels outside 0..3, or an argument out of range.

    Example:
        >>> images = render_scans(np.array([0, 1, 2, 3]), size=28, seed=0)
        >>> images.shape, images.dtype
        ((4, 28, 28), dtype('uint8'))
    """
    labels = _check_labels(labels)
    for name, value in (("size", size), ("render_size", render_size)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 8
        ):
            raise DataError(f"render_scans: {name} must be an integer >= 8; got {value!r}.")
    if not isinstance(difficulty, Real) or not np.isfinite(difficulty) or difficulty <= 0:
        raise DataError(f"render_scans: difficulty must be a number > 0; got {difficulty!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"render_scans: seed must be an integer >= 0; got {seed!r}.")

    height = render_size or min(2 * size, max(size, 128))
    width = round(height * ASPECT)
    block = max(1, BLOCK_PIXELS // (height * width))
    out = np.empty((len(labels), size, size), dtype=np.uint8)
    # One BLAS thread: the matrix products here are small and many, and BLAS threads competing
    # with other processes made them up to 100x slower on a busy 2-core machine.
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, len(labels), block):
            seeds = np.random.SeedSequence(seed, spawn_key=(start // block,))
            stop = min(start + block, len(labels))
            scans = _render_block(
                np.random.default_rng(seeds), labels[start:stop], block, height, width, difficulty
            )
            out[start:stop] = _crop_resize(scans, size)
            if progress is not None:
                progress.update(stop - start)
    return out


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
        raise DataError(
            f"render_scans: labels must be integers of shape (N,) or (N, 1); got shape "
            f"{labels.shape} and dtype {labels.dtype}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(OCT_CLASSES)):
        raise DataError(
            f"render_scans: labels must be in 0..{len(OCT_CLASSES) - 1} "
            f"({', '.join(OCT_CLASSES)}); got values in [{labels.min()}, {labels.max()}]."
        )
    return labels.astype(np.int64)


def _render_block(
    rng: np.random.Generator,
    labels: np.ndarray,
    n_draw: int,
    height: int,
    width: int,
    difficulty: float,
) -> np.ndarray:
    """Reflectivity in [0, 1], (n, height, width), of one block of ``n <= n_draw`` labels."""
    n = len(labels)
    # Draw for a full block whatever n is, then keep n: image i never depends on the others.
    scene = _draw_scene(rng, n_draw, height, difficulty)
    speckle = rng.standard_normal((n_draw, height, width), dtype=np.float32)[:n]
    texture = _smooth_noise(rng, n_draw, height, width)[:n]
    scene = {key: value[:n] for key, value in scene.items()}
    of = {c: labels == c for c in range(len(OCT_CLASSES))}

    x = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / height
    y = (np.arange(height, dtype=np.float32) + 0.5) / height
    bands = _band_edges(scene, of, x)

    # Relative depth z in [0, 6]: band index + position in the band (0 vitreous, 6 sclera),
    # one clipped ramp per band; then one look-up gives reflectivity and texture strength.
    edges = np.concatenate([bands, bands[-1:] + CHOROID_SPAN])
    z = np.zeros((n, height, width), dtype=np.float32)
    ramp = np.empty_like(z)
    for top, bottom in zip(edges[:-1], edges[1:], strict=True):
        np.subtract(y[:, None], top[:, None, :], out=ramp)
        ramp *= (1 / np.maximum(bottom - top, 1e-6))[:, None, :]
        z += np.clip(ramp, 0, 1, out=ramp)
    reflectivity, texture_gain = _lookup_tables(scene, of)
    index = (z * BINS).astype(np.int32)
    index += (np.arange(n, dtype=np.int32) * reflectivity.shape[1])[:, None, None]
    image = reflectivity.ravel()[index]
    image *= np.exp(texture_gain.ravel()[index] * texture)

    spots = _spots(scene, of, bands, x)
    if spots is not None:
        rows, ellipses = spots
        image[rows] *= _spot_factor(ellipses, x, y)

    # Log-normal speckle of mean 1 and the variance of Gamma(looks) speckle: OCT is displayed
    # log-compressed, where multi-look speckle is close to Gaussian (and this is 2x faster).
    sigma = np.sqrt(np.log1p(1 / scene["looks"]))[:, None, None]
    speckle *= sigma
    speckle -= sigma**2 / 2
    image *= np.exp(speckle, out=speckle)
    image *= np.where(z > 1, _shadows(scene, of, x)[:, None, :], np.float32(1))
    image *= scene["gain"][:, None, None]
    _registration_fill(image, scene, x, y)
    return np.minimum(image, 1, out=image)  # the scanner's 8-bit range saturates


def _draw_scene(
    rng: np.random.Generator, n: int, height: int, difficulty: float
) -> dict[str, np.ndarray]:
    """Every per-image random parameter, drawn in a fixed order and shape (lengths and depths
    in scan heights)."""

    def u(low, high, shape=()):
        return rng.uniform(low, high, (n, *shape)).astype(np.float32)

    def normal(scale, shape=()):
        return rng.normal(0, scale, (n, *shape)).astype(np.float32)

    severity = rng.beta(*SEVERITY_BETA, n).astype(np.float32) / difficulty
    return {
        # Anatomy.
        "depth": u(0.38, 0.7),
        "tilt": normal(0.12),
        "curvature": normal(0.2),
        "wobble": u(0, 0.012),
        "wobble_freq": u(1, 4),
        "wobble_phase": u(0, 2 * np.pi),
        "inner": u(0.1, 0.15),
        "outer": u(0.06, 0.085),
        "rpe": u(0.016, 0.026),
        "pit": (rng.random(n) < 0.75) * u(0.55, 0.95),
        "pit_x": u(-0.25, 0.25),
        "pit_width": u(0.06, 0.13),
        "layer_jitter": normal(0.12, (10,)),
        "layer_contrast": u(0.6, 1.1),
        "rpe_level": u(0.85, 1.1),
        "background": u(0.06, 0.11),
        "choroid_level": u(0.22, 0.42),
        "choroid_decay": u(0.05, 0.14),
        # Acquisition; the speckle looks of a pixel grow with its footprint on a 496 px scan.
        "gain": u(0.8, 1.25),
        "looks": u(0.6, 1.4) * LOOKS * (496 / height) / difficulty,
        "fill": (rng.random(n) < 0.06) * u(0.03, 0.25),
        "fill_slope": normal(0.15),
        "fill_bottom": rng.random(n) < 0.4,
        "shadow_x": u(-0.65, 0.65, (3,)),
        "shadow_depth": u(0, 0.3, (3,)),
        "shadow_width": u(0.004, 0.012, (3,)),
        # Findings, used by the classes that have them.
        "severity": severity,
        "lesion_x": u(-0.22, 0.22),
        "lesion_width": u(0.07, 0.2),
        "lesion_height": severity * u(0.025, 0.085),
        "lesion_lobe": u(-1, 1, (2,)),
        "lesion_level": u(0.55, 0.85),
        "fluid": severity * u(0.005, 0.04) * (rng.random(n) < 0.65),
        "fluid_dx": u(-0.1, 0.1),
        "swelling": severity * u(0.2, 0.7),
        "spot_count": rng.random(n).astype(np.float32),
        "spot_x": normal(0.6, (MAX_SPOTS,)),
        "spot_depth": u(0.35, 0.85, (MAX_SPOTS,)),
        "spot_radius": u(0.01, 0.04, (MAX_SPOTS,)),
        "spot_aspect": u(0.8, 1.7, (MAX_SPOTS,)),
        "spot_dark": u(0.55, 0.9, (MAX_SPOTS,)),
        "exudates": rng.random(n) < 0.35,
        "drusen_count": rng.integers(2, MAX_DRUSEN + 1, n),
        "drusen_x": normal(0.17, (MAX_DRUSEN,)),
        "drusen_width": u(0.03, 0.08, (MAX_DRUSEN,)),
        "drusen_height": severity[:, None] * u(0.02, 0.06, (MAX_DRUSEN,)),
        "drusen_level": u(0.45, 0.7),
    }


def _band_edges(scene: dict, of: dict, x: np.ndarray) -> np.ndarray:
    """Depths (6, n, W) of the ILM, the inner/outer retina border, the photoreceptor tips, the
    RPE top and bottom, and Bruch's membrane."""
    s = {key: value[:, None] if value.ndim == 1 else value for key, value in scene.items()}
    cnv, dme, drusen = of[CNV][:, None], of[DME][:, None], of[DRUSEN][:, None]
    bm = (
        s["depth"]
        + s["tilt"] * x
        + s["curvature"] * x**2
        + s["wobble"] * np.sin(2 * np.pi * s["wobble_freq"] * x + s["wobble_phase"])
    )
    fovea = _bump(x, s["pit_x"], s["pit_width"])
    lesion = _bump(x, s["lesion_x"], s["lesion_width"])

    # DME (CNV less) swells the retina around the lesion; DME fills the foveal pit in.
    swelling = 1 + np.where(dme, 1, np.where(cnv, 0.4, 0)) * s["swelling"] * lesion
    pit = s["pit"] * np.where(dme, np.clip(1 - 2 * s["severity"], 0, 1), 1)
    inner = s["inner"] * (1 - pit * fovea) * swelling
    outer = s["outer"] * (1 + 0.3 * pit * fovea) * swelling

    # CNV lifts the RPE in an irregular mound (a main lobe and two side lobes) ...
    side_lobes = sum(
        0.6 * _bump(x, s["lesion_x"] + lobe[:, None] * s["lesion_width"], 0.5 * s["lesion_width"])
        for lobe in scene["lesion_lobe"].T
    )
    elevation = np.where(cnv, s["lesion_height"] * (lesion + side_lobes), 0)
    # ... drusen in a few small domes near the fovea.
    offset = x - s["pit_x"][..., None] - scene["drusen_x"][..., None]  # (n, MAX_DRUSEN, W)
    domes = np.clip(1 - (offset / scene["drusen_width"][..., None]) ** 2, 0, None) ** 0.75
    present = np.arange(MAX_DRUSEN) < scene["drusen_count"][:, None]
    drusen_height = (scene["drusen_height"] * present)[..., None]
    elevation = np.where(drusen, (drusen_height * domes).max(axis=1), elevation)
    # Sub-retinal fluid lifts the photoreceptors off the RPE (CNV; DME less).
    fluid_shape = _bump(x, s["lesion_x"] + s["fluid_dx"], 1.4 * s["lesion_width"])
    fluid = np.where(cnv, 1, np.where(dme, 0.5, 0)) * s["fluid"] * fluid_shape

    rpe_bottom = bm - elevation
    rpe_top = rpe_bottom - s["rpe"]
    tips = rpe_top - fluid
    opl = tips - outer
    ilm = opl - inner
    return np.stack([ilm, opl, tips, rpe_top, rpe_bottom, bm]).astype(np.float32)


def _lookup_tables(scene: dict, of: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-image tables (n, 6 * BINS + 1) of reflectivity and texture strength over ``z``."""
    n = len(scene["depth"])
    t = (np.arange(BINS, dtype=np.float32) + 0.5) / BINS  # relative depth inside a band
    jitter = np.exp(scene["layer_jitter"])
    contrast = scene["layer_contrast"][:, None]

    def layered(layers, jitter):
        bottoms, means = np.array(layers, dtype=np.float32).T
        values = means * jitter
        average = values.mean(axis=1, keepdims=True)
        values = average + contrast * (values - average)
        return values[:, np.searchsorted(bottoms, t, side="right").clip(max=len(layers) - 1)]

    def flat(value):
        return np.broadcast_to(np.asarray(value, np.float32).reshape(-1, 1), (n, BINS))

    background = scene["background"][:, None]
    choroid = background + (scene["choroid_level"][:, None] - background) * np.exp(
        -t * CHOROID_SPAN / scene["choroid_decay"][:, None]
    )
    reflectivity = np.concatenate(
        [
            layered(INNER_LAYERS, jitter[:, :5]),
            layered(OUTER_LAYERS, jitter[:, 5:]),
            flat(1.1 * background),  # sub-retinal fluid
            flat(scene["rpe_level"]),
            flat(np.where(of[CNV], scene["lesion_level"], scene["drusen_level"])),  # sub-RPE
            choroid,
            background,  # z = 6: sclera and below
        ],
        axis=1,
    )
    texture_gain = np.concatenate(
        [
            flat(np.full(n, 0.12)),  # retina
            flat(np.full(n, 0.12)),
            flat(np.full(n, 0.1)),  # fluid
            flat(np.where(of[CNV], 0.45, 0.1)),  # the RPE over a CNV breaks up
            flat(np.where(of[CNV], 0.5, 0.12)),  # fibrovascular tissue / drusen material
            np.broadcast_to(0.12 + 0.2 * np.exp(-3 * t), (n, BINS)),  # choroidal vessels
            np.zeros((n, 1)),
        ],
        axis=1,
    )
    reflectivity[:, 0], texture_gain[:, 0] = background[:, 0], 0  # z = 0: vitreous
    return reflectivity.astype(np.float32), texture_gain.astype(np.float32)


def _shadows(scene: dict, of: dict, x: np.ndarray) -> np.ndarray:
    """(n, W) attenuation below the inner retina: retinal vessels cast narrow vertical shadows,
    a fibrovascular CNV lesion a broad one."""
    vessels = _bump(x, scene["shadow_x"][..., None], scene["shadow_width"][..., None])
    shadow = 1 - (scene["shadow_depth"][..., None] * vessels).max(axis=1)
    lesion = _bump(x, scene["lesion_x"][:, None], scene["lesion_width"][:, None])
    cnv = np.minimum(0.5 * scene["severity"], 0.6)[:, None] * lesion
    return (shadow * (1 - np.where(of[CNV][:, None], cnv, 0))).astype(np.float32)


def _spots(scene: dict, of: dict, bands: np.ndarray, x: np.ndarray):
    """Ellipses (cysts: dark; hard exudates: bright) of the images that have any.

    Returns ``(rows, (cx, cy, rx, ry, contrast))`` with (m, MAX_SPOTS) arrays, or None.
    """
    severity, draw = scene["severity"], scene["spot_count"]
    count = np.ceil(MAX_SPOTS * np.minimum(severity, 1) * (0.3 + 0.7 * draw))
    count = np.where(of[DME], count, np.where(of[CNV] & (draw < 0.35), 3, 0))
    rows = np.flatnonzero(count > 0)
    if rows.size == 0:
        return None
    s = {key: value[rows] for key, value in scene.items()}
    # Cysts cluster around the lesion, in the INL to ONL, and grow with the severity.
    cx = s["lesion_x"][:, None] + 0.8 * s["spot_x"] * s["lesion_width"][:, None]
    column = np.clip(np.round((cx - x[0]) / (x[1] - x[0])), 0, len(x) - 1).astype(np.int64)
    top = np.take_along_axis(bands[0, rows], column, axis=1)
    thickness = np.take_along_axis(bands[2, rows], column, axis=1) - top
    grow = np.sqrt(np.minimum(s["severity"], 1.5))[:, None]
    rx = s["spot_radius"] * grow
    ry = np.minimum(rx * s["spot_aspect"], 0.3 * thickness)
    cy = top + s["spot_depth"] * thickness
    contrast = s["spot_dark"] * np.minimum(1, 2 * s["severity"])[:, None]
    # In some DME scans every third spot is a small hyper-reflective hard exudate instead.
    exudate = (of[DME][rows] & s["exudates"])[:, None] & (np.arange(MAX_SPOTS) % 3 == 2)
    rx, ry = np.where(exudate, 0.4 * rx, rx), np.where(exudate, 0.4 * ry, ry)
    contrast = np.where(exudate, -1.5 * contrast, contrast)
    contrast *= np.arange(MAX_SPOTS) < count[rows][:, None]
    return rows, (cx, cy, rx, ry, contrast)


def _spot_factor(ellipses: tuple, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Multiplicative (m, H, W) factor of soft-edged ellipses."""
    cx, cy, rx, ry, contrast = (value.astype(np.float32) for value in ellipses)
    factor = np.ones((len(cx), len(y), len(x)), dtype=np.float32)
    for k in np.flatnonzero(contrast.any(axis=0)):
        dx = ((x - cx[:, k, None]) / rx[:, k, None]) ** 2  # (m, W)
        dy = ((y - cy[:, k, None]) / ry[:, k, None]) ** 2  # (m, H)
        inside = np.clip(1.5 * (1 - dy[:, :, None] - dx[:, None, :]), 0, 1)
        factor *= 1 - contrast[:, k, None, None] * inside
    return factor


def _registration_fill(image: np.ndarray, scene: dict, x: np.ndarray, y: np.ndarray) -> None:
    """Saturated white wedges at the top or bottom edge, as the scanner's registration leaves."""
    rows = np.flatnonzero(scene["fill"] > 0)
    if rows.size:
        edge = scene["fill"][rows, None] + scene["fill_slope"][rows, None] * x  # (m, W)
        from_edge = np.where(scene["fill_bottom"][rows, None, None], 1 - y[:, None], y[:, None])
        image[rows] = np.where(from_edge < edge[:, None, :], np.float32(1), image[rows])


def _smooth_noise(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """Unit-variance noise with blobs of about 1/16 of the height (choroidal vessels)."""
    coarse = rng.standard_normal((n, 16, round(16 * ASPECT * 0.7))).astype(np.float32)
    field = _upsample_matrix(16, height) @ coarse @ _upsample_matrix(coarse.shape[2], width).T
    return field / field.std(axis=(1, 2), keepdims=True).clip(1e-6)


def _crop_resize(scans: np.ndarray, size: int) -> np.ndarray:
    """Center-crop (n, H, W) scans to H x H and resize to size x size, as MedMNIST did."""
    height, width = scans.shape[1:]
    left = (width - height) // 2
    weights = _resize_matrix(height, size)
    resized = weights @ scans[:, :, left : left + height] @ weights.T
    return np.clip(np.round(resized * 255), 0, 255).astype(np.uint8)


def _bump(x: np.ndarray, center: np.ndarray, width: np.ndarray) -> np.ndarray:
    return np.exp(-(((x - center) / width) ** 2))


@lru_cache
def _upsample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of linear interpolation."""
    position = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    weights = np.maximum(0, 1 - np.abs(position[:, None] - np.arange(n_in)))
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


@lru_cache
def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of PIL's ``resize`` with :data:`RESAMPLE` along one axis: resizing
    an identity image yields them exactly, so synthetic and real scans share one filter."""
    identity = Image.fromarray(np.eye(n_in, dtype=np.float32))
    return np.asarray(identity.resize((n_out, n_in), RESAMPLE), dtype=np.float32).T.copy()
