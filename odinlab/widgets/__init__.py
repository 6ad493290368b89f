"""odinlab widgets: anywidget views of a store, and the explorer that links them.

Each view is usable alone and follows one contract (``ids``, ``selected_ids``,
``show_selection``, ``on_select``); :func:`explore` lays them out and links them through a
:class:`~odinlab.widgets.links.SelectionHub`. Everything runs in the kernel: no server, no port.

>>> from odinlab.widgets import explore, ScatterView, GalleryView, ConfusionView, DetailView
>>> from odinlab.widgets import ClusterView, PairsView, EstimateView, ReviewQueue, AttributionView
>>> from odinlab.widgets import CompareView, UnitView, ExplainView
"""

from odinlab.widgets.attribution_view import AttributionView
from odinlab.widgets.clusters import ClusterView
from odinlab.widgets.compare_view import CompareView
from odinlab.widgets.confusion import ConfusionView
from odinlab.widgets.detail import DetailView
from odinlab.widgets.estimate import EstimateView
from odinlab.widgets.explain_view import ExplainView
from odinlab.widgets.explorer import Explorer, explore
from odinlab.widgets.gallery import GalleryView, ThumbnailCache
from odinlab.widgets.links import SelectionHub
from odinlab.widgets.pairs import PairsView
from odinlab.widgets.review import ReviewQueue
from odinlab.widgets.scatter import ScatterView
from odinlab.widgets.unit_view import UnitView

__all__ = ["AttributionView", "ClusterView", "CompareView", "ConfusionView", "DetailView", "EstimateView", "ExplainView", "Explorer",
           "GalleryView", "PairsView", "ReviewQueue", "ScatterView", "SelectionHub", "ThumbnailCache", "UnitView",
           "explore"]
