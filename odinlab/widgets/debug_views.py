"""The explorer's debugging views, under its linked views in tabs: why the selected images are wrong,
and what to do about it. Each factory takes the :class:`~odinlab.widgets.explorer.Explorer` and
returns a view that follows the views' contract (so the hub links it like the others); each view
also works alone (``odinlab.widgets.ExplainView(store, ...)``...).
"""

from __future__ import annotations

from odinlab.errors import OptionError
from odinlab.widgets.attribution_view import AttributionView
from odinlab.widgets.compare_view import CompareView
from odinlab.widgets.explain_view import ExplainView
from odinlab.widgets.review import ReviewQueue
from odinlab.widgets.unit_view import UnitView

CARD_THUMB = 64
# Tab order and titles.
DEBUG_VIEWS = {"explain": "Explain selection", "attribution": "Attributions", "units": "Units",
               "review": "Review labels", "compare": "Compare versions"}


def explain_view(explorer):
    """What the selection shares that the other explored images don't, on a button press."""
    return ExplainView(explorer.store, explorer.record, explorer.images, layer=explorer.layer)


def attribution_view(explorer):
    """Heat maps of the selected images for the explored model and the compared ones."""
    return AttributionView(explorer.store, [explorer.model_id, *explorer.compare],
                           methods=("saliency", "integrated_gradients"), thumbnails=explorer.thumbnails(96))


def units_view(explorer):
    """The most label-selective unit of the explorer's layer; its button selects the unit's top images."""
    return UnitView(explorer.store, explorer.record, explorer.layer, None, explorer.images,
                    thumb_size=CARD_THUMB, thumbnails=explorer.thumbnails(CARD_THUMB))


def review_view(explorer):
    """Suspected label errors as a review queue (decisions go to the 'reviewed' label set)."""
    return ReviewQueue(explorer.store, explorer.model_id, explorer.images, embedding=explorer.embedding)


def compare_view(explorer):
    """The explored model against the first of ``compare=``; a card selects its image."""
    if not explorer.compare:
        raise OptionError("Comparing versions needs a second one: explore(..., compare=['cnn@2']).")
    return CompareView(explorer.store, explorer.record, explorer.compare[0], explorer.images, layer=explorer.layer,
                       thumb_size=CARD_THUMB, thumbnails=explorer.thumbnails(CARD_THUMB))


DEBUG_FACTORIES = {"explain": explain_view, "attribution": attribution_view, "units": units_view,
                   "review": review_view, "compare": compare_view}
