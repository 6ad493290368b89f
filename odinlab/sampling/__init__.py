"""Sample: the learned embedding space, decision-boundary sampling and approximate queries.

Every function takes ``(store, model, [layer], images=None, *, options)``; ``model`` is a model
id, name, record or registered module, and an ``nn.Module``-only keyword is ``module=``.

>>> from odinlab.sampling import Embedding, boundary_sample, top_units
"""

from odinlab.errors import (
    BoundaryError,
    EmbeddingError,
    SampleSizeError,
    UnknownValueError,
)
from odinlab.sampling.boundary import boundary_scores, neighbour_mixing
from odinlab.sampling.embedding import Embedding, layer_features
from odinlab.sampling.estimators import Design
from odinlab.sampling.exemplars import between_classes, boundary_pairs
from odinlab.sampling.queries import (
    class_accuracy,
    class_means,
    confusion_counts,
    sample_activations,
    top_units,
)
from odinlab.sampling.sample import (
    Sample,
    boundary_sample,
    uniform_sample,
)

__all__ = [
    "BoundaryError", "Design", "Embedding", "EmbeddingError", "Sample", "SampleSizeError", "UnknownValueError",
    "between_classes", "boundary_pairs", "boundary_sample", "boundary_scores", "class_accuracy", "class_means",
    "confusion_counts", "layer_features", "neighbour_mixing", "sample_activations", "top_units", "uniform_sample",
]
