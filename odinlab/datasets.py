"""Small, offline image datasets with known ground truth for debugging classifiers.

`digits()` wraps scikit-learn's bundled 8x8 digits; `shapes()` draws coloured
shapes and can plant label noise and a spurious cue, so a debugging tool can
be checked against problems whose answer is known in advance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from odinlab.errors import ImageFormatError, OptionError

SPLIT_NAMES = ("train", "val", "test")
SUPPORTED_SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "x")
DEFAULT_SHAPES = ("circle", "square", "triangle", "cross", "ring")
# Hue (degrees) of each colour name reported in the `color` metadata column.
BASIC_HUES = {"red": 0, "yellow": 60, "green": 120, "cyan": 180, "blue": 240, "magenta": 300}
# Share of images outside the spurious class that also carry the cue, so the
# cue is a strong correlation with the class rather than a rule.
CUE_RATE_OTHER_CLASSES = 0.01
# Fixed batch size: the random stream is spawned per batch, so changing this
# would change the images produced by a given seed.
_BATCH = 2048
_RESERVED_METADATA = ("image_id", "label", "split")


@dataclass(frozen=True, eq=False)  # eq=False: element-wise array equality is ambiguous
class ImageData:
    """A labelled image set ready for `store.ingest(data)`.

    Example:
        >>> data = digits()
        >>> len(data), data.images.shape[1:]
        (1797, (1, 8, 8))
    """

    images: np.ndarray  # (N, C, H, W) uint8, channels-first
    labels: np.ndarray  # (N,) int64, the labels as given (possibly noisy)
    classes: tuple[str, ...]  # label i -> classes[i]
    ids: tuple[str, ...]  # stable image ids, e.g. "digits-00042"
    split: np.ndarray  # (N,) str, "train" / "val" / "test"
    metadata: pl.DataFrame  # one row per image, extra columns only
    true_labels: np.ndarray  # (N,) int64, the clean labels
    label_noise: np.ndarray  # (N,) bool, True where the label was flipped on purpose
    spurious: np.ndarray  # (N,) bool, True where the planted cue is drawn
    cue_box: tuple[int, int, int, int] | None  # (top, left, height, width) or None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ImageFormatError(
                f"images must be a (N, C, H, W) uint8 array, got shape {self.images.shape} "
                f"dtype {self.images.dtype}; convert with .astype(np.uint8) and channels-first layout"
            )
        n = self.images.shape[0]
        per_image = ("labels", "ids", "split", "true_labels", "label_noise", "spurious")
        lengths = {name: len(getattr(self, name)) for name in per_image} | {"metadata": self.metadata.height}
        wrong = {name: length for name, length in lengths.items() if length != n}
        if wrong:
            raise OptionError(f"every field must have one entry per image ({n} images), but got lengths {wrong}")
        unknown_splits = set(np.unique(self.split).tolist()) - set(SPLIT_NAMES)
        if unknown_splits:
            raise OptionError(f"split values must be in {SPLIT_NAMES}, got {sorted(unknown_splits)}")
        reserved = [c for c in self.metadata.columns if c in _RESERVED_METADATA]
        if reserved:
            raise OptionError(f"metadata must hold extra columns only; drop {reserved} (they are stored separately)")

    def __len__(self) -> int:
        return self.images.shape[0]


def digits(seed: int = 0) -> ImageData:
    """scikit-learn's 1,797 8x8 handwritten digits, with a stratified 70/15/15 split.

    Example:
        >>> data = digits(seed=0)
        >>> data.images.shape, data.classes[:3], data.ids[0]
        ((1797, 1, 8, 8), ('0', '1', '2'), 'digits-0000')
    """
    from sklearn.datasets import load_digits  # deferred: sklearn import is slow

    _check_seed(seed)
    bunch = load_digits()
    # The raw values are 0..16 ink counts; rescale to the usual 0..255 range.
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    n = len(labels)
    metadata = pl.DataFrame({
        "ink": images.reshape(n, -1).mean(axis=1) / 255.0,
        "source_index": np.arange(n, dtype=np.int64),
    })
    return ImageData(
        images=images, labels=labels, classes=tuple(str(d) for d in range(10)),
        ids=tuple(f"digits-{i:04d}" for i in range(n)),
        split=_stratified_split(labels, np.random.default_rng(seed)),
        metadata=metadata, true_labels=labels.copy(),
        label_noise=np.zeros(n, dtype=bool), spurious=np.zeros(n, dtype=bool), cue_box=None,
    )


def shapes(
    n: int = 10_000,
    size: int = 32,
    classes: tuple[str, ...] = DEFAULT_SHAPES,
    label_noise: float = 0.0,
    spurious_class: int | None = None,
    spurious_rate: float = 0.0,
    seed: int = 0,
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
    test_cue_rate: float | None = None,
) -> ImageData:
    """Coloured shapes on dark textured backgrounds, optionally with planted bugs.

    A fraction `label_noise` of labels is flipped to another class, and when
    `spurious_class` is given a fraction `spurious_rate` of that class (plus
    ~1% of the rest) gets a white square in the top-left corner, and the
    metadata column ``source`` says ``"archive"`` for exactly those images
    (``"camera"`` for the rest): the kind of provenance column that gives a
    shortcut away. `test_cue_rate` shifts the test split: there the square is
    drawn on that share of every class alike, so a model that learned the
    shortcut makes cue-driven mistakes on it.

    Example:
        >>> data = shapes(n=100, size=32, label_noise=0.1, spurious_class=0, spurious_rate=0.9)
        >>> data.images.shape, int(data.label_noise.sum()), data.cue_box
        ((100, 3, 32, 32), 10, (1, 1, 4, 4))
        >>> bool((data.metadata["source"] == "archive").to_numpy()[data.spurious].all())
        True
    """
    classes = _check_shapes_args(n, size, classes, label_noise, spurious_class, spurious_rate, seed, split)
    if test_cue_rate is not None and (spurious_class is None or not 0.0 <= test_cue_rate <= 1.0):
        raise OptionError(f"test_cue_rate must be in [0, 1] and needs spurious_class, got {test_cue_rate!r} "
                          f"with spurious_class={spurious_class!r}")
    # Independent streams per purpose, so e.g. adding label noise does not move the shapes.
    # (spawn(6)[:5] equals spawn(5): the sixth stream, for the test shift, moves nothing else.)
    params_ss, noise_ss, cue_ss, split_ss, pixels_ss, shift_ss = np.random.SeedSequence(seed).spawn(6)
    params = _draw_shape_params(n, size, len(classes), np.random.default_rng(params_ss))
    true_labels = params["label"]
    labels, flipped = _flip_labels(true_labels, len(classes), label_noise, np.random.default_rng(noise_ss))
    spurious = _choose_cue_carriers(true_labels, spurious_class, spurious_rate, np.random.default_rng(cue_ss))
    cue_box = _cue_box(size) if spurious_class is not None else None
    split_of = _random_split(n, split, np.random.default_rng(split_ss))
    if test_cue_rate is not None:
        test = split_of == "test"
        spurious[test] = np.random.default_rng(shift_ss).random(int(test.sum())) < test_cue_rate

    images = _render_all(params, classes, size, pixels_ss)
    if cue_box is not None:
        top, left, height, width = cue_box
        images[spurious, :, top:top + height, left:left + width] = 255
    metadata = pl.DataFrame({
        "color": _nearest_hue_names(params["hue"]), "shape_size": params["scale"],
        "center_x": params["cx"] / size, "center_y": params["cy"] / size,
        "brightness": images.reshape(n, -1).mean(axis=1) / 255.0,
    })
    if cue_box is not None:
        metadata = metadata.with_columns(source=pl.Series(np.where(spurious, "archive", "camera")))
    return ImageData(
        images=images, labels=labels, classes=classes,
        ids=tuple(f"shapes-{i:06d}" for i in range(n)),
        split=split_of,
        metadata=metadata, true_labels=true_labels, label_noise=flipped,
        spurious=spurious, cue_box=cue_box,
    )


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise OptionError(f"seed must be a non-negative integer, got {seed!r}; pass e.g. seed=0")


def _check_shapes_args(n, size, classes, label_noise, spurious_class, spurious_rate, seed, split):
    """Validate `shapes()` arguments and return the class names as a tuple."""
    _check_seed(seed)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise OptionError(f"n must be an integer >= 1, got {n!r}; ask for at least one image")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise OptionError(f"size must be an integer >= 16, got {size!r}; smaller images cannot show the shapes")
    classes = _check_classes(classes)
    if not 0.0 <= label_noise < 1.0:
        raise OptionError(f"label_noise must be in [0, 1), got {label_noise!r}; e.g. 0.1 flips 10% of labels")
    if spurious_class is not None and not (
        isinstance(spurious_class, (int, np.integer)) and 0 <= spurious_class < len(classes)
    ):
        raise OptionError(f"spurious_class must be None or a class index in 0..{len(classes) - 1}, "
                         f"got {spurious_class!r}")
    if not 0.0 <= spurious_rate <= 1.0:
        raise OptionError(f"spurious_rate must be in [0, 1], got {spurious_rate!r}")
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1.0) > 1e-6:
        raise OptionError(f"split must be three non-negative fractions (train, val, test) summing to 1, "
                         f"got {split!r}; e.g. (0.7, 0.15, 0.15)")
    return classes


def _check_classes(classes) -> tuple[str, ...]:
    """Refuse fewer than two, repeated or unknown shape names."""
    if isinstance(classes, str):
        raise OptionError(f"classes must be a sequence of names, got the string {classes!r}; pass a tuple")
    classes = tuple(classes)
    if len(classes) < 2:
        raise OptionError(f"need at least 2 classes to classify, got {classes}; pick from {SUPPORTED_SHAPES}")
    unknown = [c for c in classes if c not in SUPPORTED_SHAPES]
    if unknown:
        raise OptionError(f"unknown shape classes {unknown}; supported shapes are {SUPPORTED_SHAPES}")
    if len(set(classes)) != len(classes):
        raise OptionError(f"classes must not repeat, got {classes}; list each shape once")
    return classes


def _stratified_split(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Assign 70/15/15 train/val/test within each class, so every split sees every class."""
    split = np.empty(len(labels), dtype="<U5")
    for label in np.unique(labels):
        _assign_split(split, rng.permutation(np.flatnonzero(labels == label)), (0.7, 0.15, 0.15))
    return split


def _random_split(n: int, fractions, rng: np.random.Generator) -> np.ndarray:
    """Assign splits in the given proportions to a random permutation of the images."""
    split = np.empty(n, dtype="<U5")
    _assign_split(split, rng.permutation(n), fractions)
    return split


def _assign_split(split: np.ndarray, order: np.ndarray, fractions) -> None:
    """Label the first train fraction of `order` "train", the next val fraction "val", the rest "test"."""
    n_train, n_val = round(fractions[0] * len(order)), round(fractions[1] * len(order))
    split[order[:n_train]] = "train"
    split[order[n_train:n_train + n_val]] = "val"
    split[order[n_train + n_val:]] = "test"


def _draw_shape_params(n: int, size: int, n_classes: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw every per-image random choice up front, so batching cannot change them."""
    scale = rng.uniform(0.45, 0.8, n)  # shape radius as a fraction of half the image
    radius = scale * size / 2
    # Keep the whole shape inside the image: the centre stays one radius from each edge.
    cx = radius + rng.uniform(0, 1, n) * (size - 2 * radius)
    cy = radius + rng.uniform(0, 1, n) * (size - 2 * radius)
    return {
        "label": rng.integers(0, n_classes, n).astype(np.int64),
        "scale": scale, "radius": radius, "cx": cx, "cy": cy,
        "hue": rng.uniform(0, 360, n),
        # High saturation and value keep the shape clearly brighter than the dark background.
        "saturation": rng.uniform(0.55, 1.0, n), "value": rng.uniform(0.8, 1.0, n),
        "background": rng.uniform(0, 90, (n, 3)),
    }


def _flip_labels(true_labels, n_classes, rate, rng):
    """Flip exactly round(rate * N) labels, each to a different random class."""
    n = len(true_labels)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, size=round(rate * n), replace=False)] = True
    # Adding 1..n_classes-1 modulo n_classes guarantees a different class.
    offsets = rng.integers(1, n_classes, n)
    labels = np.where(flipped, (true_labels + offsets) % n_classes, true_labels).astype(np.int64)
    return labels, flipped


def _choose_cue_carriers(true_labels, spurious_class, rate, rng) -> np.ndarray:
    """Mark `rate` of the spurious class and ~1% of the other images to carry the cue."""
    carriers = np.zeros(len(true_labels), dtype=bool)
    if spurious_class is None:
        return carriers
    in_class = np.flatnonzero(true_labels == spurious_class)
    others = np.flatnonzero(true_labels != spurious_class)
    carriers[rng.choice(in_class, size=round(rate * len(in_class)), replace=False)] = True
    carriers[rng.choice(others, size=round(CUE_RATE_OTHER_CLASSES * len(others)), replace=False)] = True
    return carriers


def _cue_box(size: int) -> tuple[int, int, int, int]:
    """A square of side size/8 (4 px at 32) placed one pixel in from the top-left corner."""
    side = max(2, size // 8)
    margin = max(1, size // 32)
    return (margin, margin, side, side)


def _shape_mask(name: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Boolean mask of a unit-radius shape, given offsets from its centre in radius units."""
    ax, ay = np.abs(dx), np.abs(dy)
    if name == "circle":
        return dx * dx + dy * dy <= 1.0
    if name == "ring":
        r2 = dx * dx + dy * dy
        return (r2 <= 1.0) & (r2 >= 0.36)
    if name == "square":
        return np.maximum(ax, ay) <= 0.8
    if name == "diamond":
        return ax + ay <= 1.0
    if name == "triangle":  # apex up at dy=-1, base at dy=0.8
        return (dy <= 0.8) & (ax <= (dy + 1.0) / 1.8)
    if name == "cross":  # upright plus sign
        return ((ax <= 0.3) & (ay <= 1.0)) | ((ay <= 0.3) & (ax <= 1.0))
    if name == "x":  # diagonal cross
        inside = np.maximum(ax, ay) <= 0.8
        return inside & ((np.abs(dx - dy) <= 0.4) | (np.abs(dx + dy) <= 0.4))
    raise OptionError(f"unknown shape {name!r}; supported shapes are {SUPPORTED_SHAPES}")


def _render_all(params, classes, size, seed_sequence) -> np.ndarray:
    """Render all images in fixed-size batches, to bound memory while staying vectorised."""
    n = len(params["label"])
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    batch_seeds = seed_sequence.spawn((n + _BATCH - 1) // _BATCH)
    for batch_seed, start in zip(batch_seeds, range(0, n, _BATCH)):
        rows = slice(start, start + _BATCH)
        batch = {key: value[rows] for key, value in params.items()}
        images[rows] = _render_batch(batch, classes, size, np.random.default_rng(batch_seed))
    return images


def _render_batch(params, class_names, size, rng) -> np.ndarray:
    """Draw one batch of images as (B, 3, size, size) uint8 using broadcast coordinate grids."""
    count = len(params["label"])
    grid = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    radius = params["radius"].astype(np.float32)[:, None, None]
    dx = (grid[None, None, :] - params["cx"].astype(np.float32)[:, None, None]) / radius
    dy = (grid[None, :, None] - params["cy"].astype(np.float32)[:, None, None]) / radius
    mask = np.zeros((count, size, size), dtype=bool)
    for label, name in enumerate(class_names):
        rows = np.flatnonzero(params["label"] == label)
        if rows.size:
            # dx is (k, 1, W) and dy is (k, H, 1): each mask broadcasts to (k, H, W).
            mask[rows] = _shape_mask(name, dx[rows], dy[rows])
    foreground = _hsv_to_rgb(params["hue"], params["saturation"], params["value"]) * 255
    background = params["background"]
    colour = np.where(mask[:, None], foreground.astype(np.float32)[:, :, None, None],
                      background.astype(np.float32)[:, :, None, None])
    # One grey noise field per image gives texture at a third of the cost of per-channel noise.
    colour += rng.standard_normal((count, 1, size, size), dtype=np.float32) * 8.0
    return np.clip(np.rint(colour), 0, 255).astype(np.uint8)


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Vectorised HSV (hue in degrees) to RGB in [0, 1], shape (N, 3)."""
    k = (np.array([5.0, 3.0, 1.0])[None, :] + hue[:, None] / 60.0) % 6.0
    ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return value[:, None] - value[:, None] * saturation[:, None] * ramp


def _nearest_hue_names(hue: np.ndarray) -> list[str]:
    """Name of the basic hue closest to each hue angle, going around the colour wheel."""
    names = list(BASIC_HUES)
    centres = np.array(list(BASIC_HUES.values()), dtype=float)
    distance = np.abs((hue[:, None] - centres[None, :] + 180.0) % 360.0 - 180.0)
    return [names[i] for i in distance.argmin(axis=1)]
