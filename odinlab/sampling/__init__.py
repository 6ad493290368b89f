"""Sample: the learned embedding space, decision-boundary sampling and approximate queries.

>>> from odinlab.sampling import Embedding, boundary_sample, top_units
"""

from odinlab.sampling.boundary import BoundaryError, boundary_scores, neighbour_mixing
from odinlab.sampling.embedding import Embedding, EmbeddingError, layer_features
from odinlab.sampling.estimators import Design
from odinlab.sampling.exemplars import between_classes, boundary_pairs
from odinlab.sampling.queries import (
    UnknownValueError,
    class_accuracy,
    class_means,
    confusion_counts,
    sample_activations,
    top_units,
)
from odinlab.sampling.sample import (
    Sample,
    SampleSizeError,
    boundary_sample,
    uniform_sample,
)

__all__ = [
    "BoundaryError", "Design", "Embedding", "EmbeddingError", "Sample", "SampleSizeError", "UnknownValueError",
    "between_classes", "boundary_pairs", "boundary_sample", "boundary_scores", "class_accuracy", "class_means",
    "confusion_counts", "layer_features", "neighbour_mixing", "sample_activations", "top_units", "uniform_sample",
]
