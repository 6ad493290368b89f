"""How the optimized image is made from free parameters.

As in Lucid / Lucent: the parameters are a Fourier spectrum whose frequencies are scaled by
1/f (so that Adam moves low frequencies as fast as high ones and the image is not drowned in
high-frequency noise), mixed across channels by the square root of the color covariance of
the store's own images (so that a step changes luminance and hue the way real images vary),
and squashed by a sigmoid into the range of the model's input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from odinlab.store.pixels import to_model_input

SAMPLE = 2000  # images read to estimate the color statistics


@dataclass(frozen=True)
class ColorStats:
    """Per-channel statistics of the store's images, in model-input scale.

    ``sqrt`` is the (C, C) square root of the color covariance, normalized so that its
    largest column has unit norm (Lucid's ``color_correlation_normalized``); ``low`` and
    ``high`` bound the valid range of each channel; ``mean`` is the mean color.
    """

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    sqrt: np.ndarray

    @property
    def channels(self) -> int:
        return len(self.mean)

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame({"channel": np.arange(self.channels), "mean": self.mean, "low": self.low,
                             "high": self.high, "sqrt": [row.tolist() for row in self.sqrt]})

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> ColorStats:
        frame = frame.sort("channel")
        return cls(mean=frame["mean"].to_numpy(), low=frame["low"].to_numpy(), high=frame["high"].to_numpy(),
                   sqrt=np.array(frame["sqrt"].to_list(), np.float64))


def color_sqrt(covariance: np.ndarray) -> np.ndarray:
    """The normalized square root ``U·sqrt(S) / max column norm`` of a (C, C) color covariance.

    Mixing white noise with it gives noise with the images' color correlations. For one
    channel it is ``[[1.]]`` (no decorrelation).

    >>> color_sqrt(np.array([[4.0]]))
    array([[1.]])
    >>> m = color_sqrt(np.array([[1.0, 0.9, 0.9], [0.9, 1.0, 0.9], [0.9, 0.9, 1.0]]))
    >>> np.allclose(m @ m.T / (m @ m.T)[0, 0], [[1, .9, .9], [.9, 1, .9], [.9, .9, 1]])
    True
    """
    covariance = np.atleast_2d(np.asarray(covariance, np.float64))
    u, s, _ = np.linalg.svd(covariance)
    root = u * np.sqrt(np.clip(s, 0, None))[None, :]
    norm = np.linalg.norm(root, axis=0).max()
    return root / norm if norm > 0 else np.eye(len(covariance))


def color_stats(store, sample: int = SAMPLE, seed: int = 0) -> ColorStats:
    """Color mean, valid range and normalized covariance square root of up to ``sample`` store images.

    uint8 stores have the range [0, 1] (the model's input scale, ``store.batches``); float
    stores the sample's per-channel minimum and maximum.

    >>> stats = color_stats(store, sample=500)
    >>> stats.sqrt, stats.low, stats.high
    (array([[1.]]), array([0.]), array([1.]))
    """
    rows = store.images
    take = np.sort(np.random.default_rng(seed).choice(rows.height, min(sample, rows.height), replace=False))
    pixels = store.pixels(rows["image_id"].gather(take))
    x = to_model_input(pixels).astype(np.float64)
    flat = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1)  # (C, pixels)
    if pixels.dtype == np.uint8:
        low, high = np.zeros(len(flat)), np.ones(len(flat))
    else:
        low, high = flat.min(axis=1), flat.max(axis=1)
        high = np.where(high > low, high, low + 1.0)
    covariance = np.atleast_2d(np.cov(flat)) if flat.shape[1] > 1 else np.eye(len(flat))
    covariance = covariance + 1e-6 * np.eye(len(flat)) * max(np.trace(covariance), 1e-12)
    return ColorStats(mean=flat.mean(axis=1), low=low, high=high, sqrt=color_sqrt(covariance))


def _rfft2d_freqs(height: int, width: int) -> np.ndarray:
    """Spatial frequency (cycles per pixel) of every coefficient of a real 2-D FFT, (H, W//2+1)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(fx * fx + fy * fy)


class FourierImage(nn.Module):
    """``n`` images of shape (C, H, W) parameterized by their spectrum, scaled by 1/f^decay.

    Unbounded values (before decorrelation and sigmoid); initialised small (``sd``).

    >>> FourierImage(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))().shape
    torch.Size([2, 3, 8, 8])
    """

    def __init__(self, n: int, channels: int, height: int, width: int, *, decay_power: float = 1.0,
                 sd: float = 0.01, generator: torch.Generator | None = None):
        super().__init__()
        self.size = (height, width)
        freqs = _rfft2d_freqs(height, width)
        scale = 1.0 / np.maximum(freqs, 1.0 / max(height, width)) ** decay_power
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32)[None, None])
        init = torch.randn((n, channels, *freqs.shape, 2), generator=generator) * sd
        self.spectrum = nn.Parameter(init)

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        return torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / 4.0  # Lucid's "magic" 4


class PixelImage(nn.Module):
    """``n`` images parameterized pixel by pixel (the plain baseline), initialised small.

    >>> PixelImage(1, 1, 8, 8)().shape
    torch.Size([1, 1, 8, 8])
    """

    def __init__(self, n: int, channels: int, height: int, width: int, *, sd: float = 0.01,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.pixels = nn.Parameter(torch.randn((n, channels, height, width), generator=generator) * sd)

    def forward(self) -> torch.Tensor:
        return self.pixels


class ImageParam(nn.Module):
    """Free parameters -> valid images: Fourier or pixel basis, color mixing, sigmoid to the range.

    The sigmoid is centred on the store's mean color, so the optimization starts from an
    almost uniform image of that color.

    >>> stats = ColorStats(np.array([.5]), np.array([0.]), np.array([1.]), np.eye(1))
    >>> image = ImageParam(stats, 2, 8, 8, generator=torch.Generator().manual_seed(0))()
    >>> tuple(image.shape), bool(image.min() >= 0 and image.max() <= 1)
    ((2, 1, 8, 8), True)
    """

    def __init__(self, stats: ColorStats, n: int, height: int, width: int, *, fourier: bool = True,
                 decorrelate: bool = True, decay_power: float = 1.0, sd: float = 0.01,
                 generator: torch.Generator | None = None):
        super().__init__()
        channels = stats.channels
        if fourier:
            self.basis = FourierImage(n, channels, height, width, decay_power=decay_power, sd=sd,
                                      generator=generator)
        else:
            self.basis = PixelImage(n, channels, height, width, sd=sd, generator=generator)
        mix = stats.sqrt if decorrelate else np.eye(channels)
        low, high = stats.low, stats.high
        centre = np.clip((stats.mean - low) / (high - low), 0.05, 0.95)
        self.register_buffer("mix", torch.tensor(mix, dtype=torch.float32))
        self.register_buffer("offset", torch.tensor(np.log(centre / (1 - centre)), dtype=torch.float32)[:, None, None])
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32)[:, None, None])
        self.register_buffer("span", torch.tensor(high - low, dtype=torch.float32)[:, None, None])

    def forward(self) -> torch.Tensor:
        raw = torch.einsum("ij,njhw->nihw", self.mix, self.basis())
        return self.low + self.span * torch.sigmoid(raw + self.offset)
