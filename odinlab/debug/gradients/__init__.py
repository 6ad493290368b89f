"""Per-sample gradients kept compactly (MetaStore, PVLDB 2024), and analytics on the compact form.

For a Linear or Conv2d layer, the gradient of one sample's loss with respect to the weights is
``Gᵀ U``: ``U`` is the layer input (unfolded, im2col, for a convolution) and ``G`` the gradient of
the loss with respect to the layer output. Keeping the input (the *prefix*) and the output
gradient (the *suffix*) per image is enough to restore the exact gradient, and norms, dot
products, cosine similarities, nearest neighbours in gradient space, TracIn influence and
scores against a dense query gradient run on that form directly, without building gradients.
Per layer, the smaller of the compact and the full form is kept (or the one asked for).
Results carry their image ids (DataArrays over ``image_id``, or ``image_id_a`` and
``image_id_b`` for two image sets).

>>> grads = GradientStore(store, net, ["head.fc1", "head.fc2"])
>>> _ = grads.capture("train", progress=False)
>>> grads.most_similar("digits-0001", "train", k=2).columns
['image_id_a', 'image_id_b', 'rank', 'score']
"""

from odinlab.debug.gradients.capture import forward_backward
from odinlab.debug.gradients.gradient_store import GradientStore
from odinlab.debug.gradients.kernels import Grads
from odinlab.debug.gradients.layers import LayerSpec, layer_spec, layer_specs
from odinlab.debug.gradients.plan import choose_forms, plan_frame

__all__ = ["GradientStore", "Grads", "LayerSpec", "choose_forms", "forward_backward", "layer_spec", "layer_specs",
           "plan_frame"]
