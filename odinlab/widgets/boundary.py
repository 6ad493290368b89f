"""What the explorer draws of the decision boundary: the boundary sample and the points between two
classes as overlays on the scatter, and a sampled estimate beside the exact answer.

:class:`BoundaryViews` is a part of :class:`~odinlab.widgets.explorer.Explorer` (its base class),
kept here so each file holds one idea; its methods use the explorer's ``store``, ``record``,
``layer``, ``images``, ``embedding``, ``frame`` and ``views``.
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl

from odinlab.widgets.estimate import EstimateView

# Overlays the explorer draws on the scatter (names shown in its legend).
SAMPLE_OVERLAY = "boundary sample"
SAMPLE_COLOR = "#111111"


class BoundaryViews:
    """The explorer's decision-boundary methods (see the module's docstring)."""


    def show_boundary_sample(self, size: float = 0.1, **options):
        """Draw :func:`odinlab.sampling.boundary_sample` of the explored images on the scatter, each
        point sized by its inclusion probability, and return the :class:`~odinlab.sampling.Sample`.

        ``options`` go to ``boundary_sample`` (``regions=``, ``boost=``, ``seed=``...).

        >>> _ = store.materialize(net, ["head.fc1"], images="test", progress=False)
        >>> explorer = odinlab.explore(store, "cnn@1", images="test", embedding={"reducer": "pca"}, progress=False)
        >>> sample = explorer.show_boundary_sample(120, seed=0)  # 0.1 of 270 test images is too few
        >>> len(sample), sample.design
        (120, 'boundary')
        """
        self._check_built()
        from odinlab.sampling import boundary_sample

        sample = boundary_sample(self.store, self.record, size, self.images, embedding=self.embedding, **options)
        points = sample.frame().join(self.frame.select("image_id", "x", "y"), on="image_id", how="left",
                                     maintain_order="left")
        labels = [f"{i} · sampled with π={p:.3f} (stands for {w:.1f} images)"
                  for i, p, w in points.select("image_id", "pi", "weight").iter_rows()]
        self._overlay(SAMPLE_OVERLAY, points["x"], points["y"], color=SAMPLE_COLOR, size=points["pi"].to_numpy(),
                      labels=labels)
        self.boundary_sample = sample
        return sample

    def show_between_classes(self, a, b, steps: int = 7, *, module=None) -> pl.DataFrame:
        """Draw :func:`odinlab.sampling.between_classes` on the scatter: ``steps`` points on the
        line from class ``a``'s region to ``b``'s, each in its predicted class's color (the
        scatter's colors for that class) and labelled "t=0.50 → predicted 5 (p=0.71)".

        ``module`` is the network (default: the one this session holds for the model, see
        ``store.module``). Returns the points (t, x, y, predicted, p, p_a, p_b, predicted_name, text).

        >>> _ = store.materialize(net, ["head.fc1"], images="test", progress=False)
        >>> explorer = odinlab.explore(store, "cnn@1", images="test", embedding={"reducer": "pca"}, progress=False)
        >>> a, b = explorer.frame["predicted_name"].value_counts(sort=True)["predicted_name"][:2]  # predicted ones
        >>> explorer.show_between_classes(a, b, steps=3)["t"].to_list()
        [0.0, 0.5, 1.0]
        """
        self._check_built()
        from odinlab.sampling import between_classes

        points = between_classes(self.embedding, a, b, steps=steps, module=module)
        classes = list(self.record.classes)
        colors = self.class_colors()
        names = [classes[i] for i in points["predicted"].to_list()]
        texts = [f"t={t:.2f} → predicted {name} (p={p:.2f})"
                 for t, name, p in zip(points["t"].to_list(), names, points["p"].to_list())]
        points = points.with_columns(predicted_name=pl.Series(names, dtype=pl.String),
                                     text=pl.Series(texts, dtype=pl.String))
        self._overlay(f"between {classes[self._class_index(a)]} and {classes[self._class_index(b)]}",
                      points["x"], points["y"], color=[colors[i] for i in points["predicted"].to_list()],
                      size=None, labels=texts)
        return points

    def class_colors(self) -> dict[int, str]:
        """Class index -> the color the scatter gives that class when colored by label or by
        predicted (the same for both, whichever classes are present).

        >>> _ = store.materialize(net, ["head.fc1"], images="test", progress=False)
        >>> odinlab.explore(store, "cnn@1", embedding={"reducer": "pca"}, progress=False).class_colors()[0]
        '#1f77b4'
        """
        from odinlab.widgets.colors import class_color

        n = len(self.record.classes)
        return {k: class_color(k, n) for k in range(n)}

    def estimate_top_units(self, label, size: float = 0.1, k: int = 10, *, sample=None, module=None,
                           **sample_options) -> EstimateView:
        """The top ``k`` units of class ``label`` in the explorer's layer estimated from a boundary
        sample (``size``, or ``sample=`` given) with their intervals, beside the exact scores over
        every explored image: an :class:`~odinlab.widgets.estimate.EstimateView` (display it).

        >>> _ = store.materialize(net, ["head.fc1"], images="test", progress=False)
        >>> explorer = odinlab.explore(store, "cnn@1", images="test", embedding={"reducer": "pca"}, progress=False)
        >>> explorer.estimate_top_units("3", size=120, k=5).summary
        '... of 5 exact values lie inside their intervals.'
        """
        self._check_built()
        from odinlab.sampling import boundary_sample, top_units

        if sample is None:
            sample = boundary_sample(self.store, self.record, size, self.images, embedding=self.embedding,
                                     **sample_options)
        estimate = top_units(self.store, self.record, self.layer, value=label, k=k, sample=sample, module=module)
        # every unit's exact score (top_units keeps min(k, units)), so each estimated unit finds its own
        exact = top_units(self.store, self.record, self.layer, self.images, value=label, k=None, module=module)
        return EstimateView(estimate, exact, "score", title=f"Top {k} units of class {label} in {self.layer}: "
                            f"estimated from {len(sample)} sampled images, exact from all {len(self.images)}")

    def clear_overlays(self, name: str | None = None) -> None:
        """Remove the overlay ``name`` from the scatter ("boundary sample", "between 3 and 5"), or all.

        >>> _ = store.materialize(net, ["head.fc1"], images="test", progress=False)
        >>> odinlab.explore(store, "cnn@1", embedding={"reducer": "pca"}, progress=False).clear_overlays()
        """
        scatter = self.views.get("scatter")
        if scatter is not None and callable(getattr(scatter, "clear_overlay", None)):
            scatter.clear_overlay(name)

    def _class_index(self, value) -> int:
        classes = list(self.record.classes)
        return classes.index(str(value)) if str(value) in classes else int(value)

    def _overlay(self, name: str, x, y, **options) -> None:
        scatter = self.views.get("scatter")
        if scatter is None:
            return  # no scatter to draw on: the caller still gets the numbers
        if not callable(getattr(scatter, "set_overlay", None)):  # a user's own scatter: the numbers still return
            warnings.warn(f"The scatter view ({type(scatter).__name__}) cannot draw the {name!r} overlay: it has no "
                          "set_overlay(name, x, y, ...) method.", stacklevel=3)
            return
        scatter.set_overlay(name, np.asarray(x, np.float64), np.asarray(y, np.float64), **options)
