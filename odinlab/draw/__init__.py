"""The drawing layer: images, overlays and plotly figures made from results.

Analyses (``odinlab.debug``, ``odinlab.sampling``) return frames and labelled arrays; the
functions here turn those results into pictures, for notebooks, widgets and reports alike.
They never run an analysis themselves.

>>> from odinlab.draw import confusion_figure, overlay, attribution_grid
"""

from odinlab.draw.attribution import attribution_grid
from odinlab.draw.compare import class_delta_figure, cka_figure
from odinlab.draw.confusion import confusion_figure
from odinlab.draw.images import COLORMAPS, colormap, image_rgb, overlay
from odinlab.draw.maximize import comparison_figure, display_image

__all__ = ["COLORMAPS", "attribution_grid", "cka_figure", "class_delta_figure", "colormap", "comparison_figure",
           "confusion_figure", "display_image", "image_rgb", "overlay"]
