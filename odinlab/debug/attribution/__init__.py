"""Attribution with Captum, computed in batches, kept in the store and aggregated.

An :class:`Attributor` wraps any Captum attribution method (by name, Captum class name, or
class), optionally inside a NoiseTunnel, for one model version. ``attribute(images, target)``
returns one map per image in model-input space as an ``xarray.DataArray`` with dims
("image_id", "channel", "y", "x") — one channel for layer methods such as Grad-CAM, upsampled
to the input. The target is the predicted class unless asked otherwise. Maps are computed in batches for the images
not yet stored and kept per image in Zarr (float16, scaled per image so that tiny gradients
keep their precision), keyed by model version, method, layer, target, baselines and every
parameter that changes the result, together with Captum's convergence delta where the method
has one. Asking again is a read; asking about more images computes only the new ones.

Two aggregates use the stored maps: :func:`mean_by_confusion` (the mean map of every
confusion cell, e.g. all "3 predicted as 5") and :func:`share_inside` (the share of
|attribution| that falls inside a mask or box, per image: a spurious cue shows up as a share
far above the region's area). The drawing layer renders the maps:
:func:`odinlab.draw.images.overlay` and :func:`odinlab.draw.attribution.attribution_grid`.

Modules: :mod:`.methods` (the Captum methods by name), :mod:`.attributor` (the
Attributor and its stored results), :mod:`.batches` (running Captum in batches) and
:mod:`.aggregates`.

>>> attr = Attributor(store, "cnn@1", method="saliency")
>>> maps = attr.attribute(["digits-0000", "digits-0001"], progress=False)
>>> maps.shape, maps.image_id.values.tolist()
((2, 1, 8, 8), ['digits-0000', 'digits-0001'])
"""

from odinlab.debug.attribution.aggregates import (
           RegionShare,
           mean_by_confusion,
           share_inside,
)
from odinlab.debug.attribution.attributor import Attributor
from odinlab.debug.attribution.methods import methods
from odinlab.errors import RegionError, TargetError, UnknownMethodError

__all__ = ["Attributor", "RegionError", "RegionShare", "TargetError", "UnknownMethodError", "mean_by_confusion",
           "methods", "share_inside"]
