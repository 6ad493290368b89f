"""Attribution with Captum, computed in batches, kept in the store and aggregated.

An :class:`Attributor` wraps any Captum attribution method (by name, Captum class name, or
class), optionally inside a NoiseTunnel, for one model version. ``attribute(images, target)``
returns one map per image in model-input space, (N, C, H, W) — (N, 1, H, W) for layer
methods such as Grad-CAM, upsampled to the input. Maps are computed in batches for the images
not yet stored and kept per image in Zarr (float16, scaled per image so that tiny gradients
keep their precision), keyed by model version, method, layer, target, baselines and every
parameter that changes the result, together with Captum's convergence delta where the method
has one. Asking again is a read; asking about more images computes only the new ones.

Two aggregates use the stored maps: :func:`mean_by_confusion` (the mean map of every
confusion cell, e.g. all "3 predicted as 5") and :func:`share_inside` (the share of
|attribution| that falls inside a mask or box, per image: a spurious cue shows up as a share
far above the region's area). :func:`overlay` and :func:`attribution_grid` render them.

Modules: :mod:`.methods` (the Captum methods by name), :mod:`.attributor` (the
Attributor and its stored results), :mod:`.batches` (running Captum in batches) and
:mod:`.aggregates`.

>>> attr = Attributor(store, "cnn@1", method="saliency")
>>> attr.attribute(["digits-0000", "digits-0001"], target="label", progress=False).shape
(2, 1, 8, 8)
"""

from odinlab.debug.attribution.aggregates import RegionError, RegionShare, mean_by_confusion, share_inside
from odinlab.debug.attribution.attributor import Attributor
from odinlab.debug.attribution.methods import TargetError, UnknownMethodError, methods
from odinlab.debug.overlay import attribution_grid, overlay

__all__ = ["Attributor", "RegionError", "RegionShare", "TargetError", "UnknownMethodError", "attribution_grid",
           "mean_by_confusion", "methods", "overlay", "share_inside"]
