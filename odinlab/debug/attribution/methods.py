"""The Captum methods an Attributor takes: found by name, described for cache keys.

Every Captum attribution class that explains a class (its ``attribute`` takes a ``target``)
is available by its snake_case name, its Captum class name, or the class itself; NoiseTunnel
wraps any of them.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re

import numpy as np
import torch

from odinlab.errors import OptionError, UnknownMethodError, closest, listing

# -- the methods --------------------------------------------------------------------------

_NAMES = {  # Captum class -> the name odinlab lists first; other classes get snake_case names
    "IntegratedGradients": "integrated_gradients", "Saliency": "saliency",
    "InputXGradient": "input_x_gradient", "GradientShap": "gradient_shap", "DeepLift": "deeplift",
    "DeepLiftShap": "deeplift_shap", "Occlusion": "occlusion", "LayerGradCam": "layer_gradcam",
    "GuidedGradCam": "guided_gradcam", "LRP": "lrp", "LayerLRP": "layer_lrp",
    "LayerDeepLift": "layer_deeplift", "LayerDeepLiftShap": "layer_deeplift_shap",
}
_ALIASES = {"ig": "integrated_gradients", "gradcam": "layer_gradcam", "grad_cam": "layer_gradcam",
            "gradient_x_input": "input_x_gradient"}
_ABSTRACT = {"Attribution", "GradientAttribution", "PerturbationAttribution", "LayerAttribution",
             "NeuronAttribution", "InternalAttribution", "LimeBase", "DataLoaderAttribution", "NoiseTunnel"}
# Methods whose baselines are a distribution to sample from, not one reference input.
_DISTRIBUTION = {"GradientShap", "DeepLiftShap", "LayerGradientShap", "LayerDeepLiftShap"}
# Keyword arguments that only trade memory for speed: left out of the cache key.
_PERFORMANCE = {"internal_batch_size", "perturbations_per_eval", "nt_samples_batch_size", "show_progress",
                "verbose"}
_NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


def methods() -> list[str]:
    """Names of the Captum methods an :class:`Attributor` takes (Captum's class names work too).

    >>> [m for m in methods() if m in ("integrated_gradients", "layer_gradcam", "occlusion")]
    ['integrated_gradients', 'layer_gradcam', 'occlusion']
    """
    return sorted(_registry())


@functools.cache
def _registry() -> dict[str, type]:
    import captum.attr as ca

    found = {}
    for name in dir(ca):
        cls = getattr(ca, name)
        if (inspect.isclass(cls) and issubclass(cls, ca.Attribution) and name not in _ABSTRACT
                and not name.startswith(("Neuron", "LLM", "Remote"))
                and "target" in inspect.signature(cls.attribute).parameters):
            found[_NAMES.get(name, re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower())] = cls
    return found


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def _resolve_method(method) -> type:
    import captum.attr as ca

    registry = _registry()
    if inspect.isclass(method) and issubclass(method, ca.Attribution):
        if method is ca.NoiseTunnel:
            raise UnknownMethodError("NoiseTunnel wraps another method: pass method=<the method> and "
                                     "noise_tunnel='smoothgrad' (or 'smoothgrad_sq', 'vargrad').")
        if "target" not in inspect.signature(method.attribute).parameters:
            raise UnknownMethodError(
                f"{method.__name__} does not attribute a class (its attribute() takes no target); neuron "
                f"and activation methods are not supported. Methods: {listing(registry, 60)}.")
        return method
    if isinstance(method, str):
        squashed = {_squash(n): cls for n, cls in registry.items()}
        squashed |= {_squash(cls.__name__): cls for cls in registry.values()}
        squashed |= {_squash(a): registry[n] for a, n in _ALIASES.items()}
        if _squash(method) in squashed:
            return squashed[_squash(method)]
        if _squash(method) in ("noisetunnel", "smoothgrad", "vargrad"):
            kind = "smoothgrad" if _squash(method) == "noisetunnel" else method
            raise UnknownMethodError(f"{method!r} is a noise tunnel: pass method='saliency' (or another) "
                                     f"and noise_tunnel={kind!r}.")
    known = sorted(registry)
    raise UnknownMethodError(
        f"Unknown attribution method {method!r}.{closest(str(method), known + list(_ALIASES))} "
        f"Known methods: {listing(known, 60)} (or a Captum attribution class)."
    )


def _describe(value):
    """A JSON-able, content-based description of a parameter for the cache key."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return {"array": hashlib.sha256(data.tobytes()).hexdigest()[:16], "shape": list(data.shape),
                "dtype": str(data.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_describe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    return repr(value)


def _use_summed_gradients(explainer) -> None:
    """Give a Captum method the gradient of the summed outputs instead of Captum's default.

    Captum's ``compute_gradients`` asks autograd for the gradients of ``torch.unbind(outputs)``,
    one scalar per example and step, and autograd adds them up; the gradient of ``outputs.sum()``
    is the same tensor, computed without one graph root per scalar (30-40% of the time of
    Integrated Gradients on a small CNN). Methods with their own gradient function are left alone.
    """
    try:
        from captum._utils.common import _run_forward
        from captum._utils.gradient import compute_gradients
    except ImportError:  # a Captum that moved its internals: keep its own function
        return
    if getattr(explainer, "gradient_func", None) is not compute_gradients:
        return

    def summed_gradients(forward_fn, inputs, target_ind=None, additional_forward_args=None):
        with torch.autograd.set_grad_enabled(True):
            outputs = _run_forward(forward_fn, inputs, target_ind, additional_forward_args)
            if outputs[0].numel() != 1:
                return compute_gradients(forward_fn, inputs, target_ind, additional_forward_args)
            return torch.autograd.grad(outputs.sum(), inputs)
    explainer.gradient_func = summed_gradients


def _has_delta(cls) -> bool:
    try:
        return bool(cls.has_convergence_delta(cls.__new__(cls)))
    except Exception:  # noqa: BLE001 - a method that cannot tell has none we can store
        return False


def _noise_tunnel_args(noise_tunnel) -> dict | None:
    if noise_tunnel in (None, False):
        return None
    args = {"nt_type": "smoothgrad", "nt_samples": 10, "stdevs": 0.15}
    if isinstance(noise_tunnel, str):
        args["nt_type"] = noise_tunnel
    elif isinstance(noise_tunnel, dict):
        given = dict(noise_tunnel)
        if "type" in given:
            given["nt_type"] = given.pop("type")
        allowed = {"nt_type", "nt_samples", "stdevs", "nt_samples_batch_size", "draw_baseline_from_distrib"}
        if set(given) - allowed:
            raise OptionError(f"Unknown noise_tunnel arguments {listing(sorted(set(given) - allowed))}; "
                            f"NoiseTunnel takes {listing(sorted(allowed))}.")
        args |= given
    elif noise_tunnel is not True:
        raise OptionError(f"noise_tunnel must be None, True, one of {', '.join(_NT_TYPES)} or a dict; "
                        f"got {noise_tunnel!r}.")
    if args["nt_type"] not in _NT_TYPES:
        raise OptionError(f"Unknown noise tunnel {args['nt_type']!r}.{closest(str(args['nt_type']), _NT_TYPES)} "
                         f"Use one of {', '.join(_NT_TYPES)}.")
    return args

