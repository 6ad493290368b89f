"""Random transformations applied at every step, so that the image works however it is seen.

Made for small inputs (8×8 to 64×64): amounts scale with the image size, jitter moves by
whole pixels (an exact crop, no resampling), scale and rotation are one bilinear
``grid_sample`` at the image's own resolution on a reflection-padded copy (no upsampling and
downsampling round trip), and the result is cropped back to the model's input size. Every
transform draws from the generator it is given, so a seed fixes the whole sequence.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch.nn import functional as F

from odinlab.errors import TransformError

PAD_MODES = ("reflect", "replicate", "constant")


class Transform(ABC):
    """Base class: ``transform(x, generator)`` maps a (N, C, H, W) batch to a batch."""

    @abstractmethod
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Transform one batch, drawing any randomness from ``generator``."""

    @property
    def spec(self) -> dict:
        """What defines the transform (its name and settings), used in cache keys."""
        return {"name": type(self).__name__, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.spec.items() if k != "name")
        return f"{type(self).__name__}({settings})"


class Pad(Transform):
    """Pad every side by ``pixels``, reflecting the border by default (``mode="constant"`` uses ``value``).

    >>> Pad(2)(torch.zeros(1, 1, 8, 8), torch.Generator()).shape
    torch.Size([1, 1, 12, 12])
    """

    def __init__(self, pixels: int, mode: str = "reflect", value: float = 0.5):
        if mode not in PAD_MODES:
            raise TransformError(f"Unknown pad mode {mode!r}; use one of {', '.join(PAD_MODES)}.")
        if int(pixels) < 0:
            raise TransformError(f"Pad needs pixels >= 0, not {pixels}.")
        self.pixels, self.mode, self.value = int(pixels), mode, float(value)

    def __call__(self, x, generator):
        if self.pixels == 0:
            return x
        p = self.pixels
        if self.mode == "reflect" and p >= min(x.shape[-2:]):  # reflection needs a wider image
            return F.pad(x, (p, p, p, p), mode="replicate")
        if self.mode == "constant":
            return F.pad(x, (p, p, p, p), mode="constant", value=self.value)
        return F.pad(x, (p, p, p, p), mode=self.mode)


class Jitter(Transform):
    """Shift each image by a random whole number of pixels in [-pixels, pixels] (an exact crop).

    The result is ``2 * pixels`` smaller on each axis; pad first to keep the size.

    >>> Jitter(1)(torch.zeros(3, 1, 10, 10), torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 8, 8])
    """

    def __init__(self, pixels: int):
        if int(pixels) < 0:
            raise TransformError(f"Jitter needs pixels >= 0, not {pixels}.")
        self.pixels = int(pixels)

    def __call__(self, x, generator):
        d = self.pixels
        if d == 0:
            return x
        n, _, h, w = x.shape
        offsets = torch.randint(0, 2 * d + 1, (n, 2), generator=generator).tolist()
        return torch.stack([x[i, :, oy : oy + h - 2 * d, ox : ox + w - 2 * d] for i, (oy, ox) in enumerate(offsets)])


class RandomAffine(Transform):
    """Scale by a factor drawn from ``scale`` and rotate by up to ``degrees``, per image, about the centre.

    One bilinear resampling at the same resolution; samples falling outside reflect back in.

    >>> out = RandomAffine((0.9, 1.1), 10)(torch.rand(2, 3, 8, 8), torch.Generator().manual_seed(0))
    >>> out.shape
    torch.Size([2, 3, 8, 8])
    >>> x = torch.rand(1, 1, 8, 8)
    >>> torch.allclose(RandomAffine((1.0, 1.0), 0)(x, torch.Generator()), x, atol=1e-6)
    True
    """

    def __init__(self, scale: tuple[float, float] = (0.9, 1.1), degrees: float = 10.0):
        low, high = (float(s) for s in scale)
        if not 0 < low <= high:
            raise TransformError(f"RandomAffine needs 0 < scale[0] <= scale[1], not {scale}.")
        self.scale, self.degrees = (low, high), float(abs(degrees))

    def __call__(self, x, generator):
        n, _, h, w = x.shape
        low, high = self.scale
        factors = low + (high - low) * torch.rand(n, generator=generator)
        angles = (2 * torch.rand(n, generator=generator) - 1) * math.radians(self.degrees)
        if self.degrees == 0 and low == high == 1.0:
            return x
        cos, sin = torch.cos(angles) / factors, torch.sin(angles) / factors
        zero = torch.zeros(n)
        # Output -> input coordinates in pixels, expressed in grid_sample's normalized units
        # (x spans W, y spans H, so the off-diagonal terms carry the aspect ratio).
        theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1),
                             torch.stack([sin * w / h, cos, zero], 1)], 1).to(x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class CenterCrop(Transform):
    """Crop the centre to ``(height, width)`` (reflect-pad first if the image is smaller).

    >>> CenterCrop(8, 8)(torch.zeros(1, 1, 12, 11), torch.Generator()).shape
    torch.Size([1, 1, 8, 8])
    """

    def __init__(self, height: int, width: int):
        self.height, self.width = int(height), int(width)

    def __call__(self, x, generator):
        return fit_size(x, self.height, self.width)


class Compose(Transform):
    """Apply transforms in order.

    >>> Compose([Pad(1), Jitter(1)])(torch.zeros(1, 1, 8, 8), torch.Generator()).shape
    torch.Size([1, 1, 8, 8])
    """

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x, generator):
        for transform in self.transforms:
            x = transform(x, generator)
        return x

    @property
    def spec(self) -> dict:
        return {"name": "Compose", "transforms": [t.spec for t in self.transforms]}

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def default(height: int, width: int) -> Compose:
    """The default robustness for an input size: pad, jitter, scale ±10% and rotate, crop back.

    Pad and jitter grow with the size (1 px at 8×8, 4 and 2 px at 32×32, 8 and 4 px at 64×64);
    rotation is ±5° below 16 px (a 10° turn of an 8×8 image moves its corners by a pixel),
    ±10° from 16 px on.

    >>> default(8, 8).transforms
    [Pad(pixels=1, mode='reflect', value=0.5), Jitter(pixels=1), RandomAffine(scale=(0.9, 1.1), degrees=5.0),
     CenterCrop(height=8, width=8)]
    """
    size = min(height, width)
    pad, jitter = max(1, round(size / 8)), max(1, round(size / 16))
    return Compose([Pad(pad), Jitter(jitter), RandomAffine((0.9, 1.1), 10.0 if size >= 16 else 5.0),
                    CenterCrop(height, width)])


def resolve(transforms, height: int, width: int) -> Compose:
    """``"default"``, ``None`` / ``"none"`` (no transforms) or a list of transforms, as one :class:`Compose`.

    The model always receives its input size: a final :class:`CenterCrop` is added when missing.

    >>> resolve(None, 8, 8).transforms
    []
    >>> resolve([Jitter(1)], 8, 8).transforms[-1]
    CenterCrop(height=8, width=8)
    """
    if isinstance(transforms, str):
        if transforms == "default":
            return default(height, width)
        if transforms == "none":
            return Compose([])
        raise TransformError(f"Unknown transforms {transforms!r}; use 'default', 'none', None or a list "
                             "of odinlab.debug.maximize.transforms objects.")
    if transforms is None:
        return Compose([])
    if isinstance(transforms, Transform):
        transforms = [transforms]
    items = list(transforms)
    bad = [t for t in items if not isinstance(t, Transform)]
    if bad:
        raise TransformError(f"Transforms must be odinlab.debug.maximize.transforms objects (Pad, Jitter, "
                             f"RandomAffine, CenterCrop...), not {bad[0]!r}.")
    if items and not isinstance(items[-1], CenterCrop):
        items.append(CenterCrop(height, width))
    return Compose(items)


def fit_size(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre-crop (or reflect-pad, when smaller) a batch to ``(height, width)``.

    >>> fit_size(torch.zeros(1, 1, 6, 9), 8, 8).shape
    torch.Size([1, 1, 8, 8])
    """
    h, w = x.shape[-2:]
    if h < height or w < width:
        dy, dx = max(0, height - h), max(0, width - w)
        mode = "reflect" if dy < h and dx < w else "replicate"
        x = F.pad(x, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2), mode=mode)
        h, w = x.shape[-2:]
    top, left = (h - height) // 2, (w - width) // 2
    return x[..., top : top + height, left : left + width]
