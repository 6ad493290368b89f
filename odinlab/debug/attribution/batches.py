"""How an Attributor runs Captum: groups of images sized to the machine, on every core.

One forward pass holds about :data:`CPU_WORKING_SET` bytes of activations on the CPU (bigger
passes fall out of the caches and run slower) or up to the memory budget on a GPU.
"""

from __future__ import annotations

import inspect
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from odinlab.debug.attribution.methods import _DISTRIBUTION, _use_summed_gradients
from odinlab.errors import UnknownMethodError
from odinlab.store.selection import Selection
from odinlab.torch_helpers import evaluating, first_tensor, module_device

# Activation bytes of one forward pass on the CPU. Measured with Integrated Gradients on 2 cores:
# passes holding 8-32 MiB ran fastest (digits 0.73 ms/image at 16 MiB, 1.66 at 256 MiB; 32×32
# shapes 10.9 and 31 ms): bigger passes fall out of the caches.
CPU_WORKING_SET = 16 << 20


class BatchesMixin:
    """The computing half of :class:`~odinlab.debug.attribution.Attributor`."""

    def _explainer_for(self, worker: int = 0):
        """The Captum object of ``worker``: one each, so that no state is shared between threads."""
        while len(self._explainers) <= worker:
            from captum.attr import NoiseTunnel

            layer = {"layer": dict(self.module.named_modules())[self.layer]} if self.is_layer_method else {}
            explainer = self.method_class(self.module, **layer, **self._init_kwargs)
            _use_summed_gradients(explainer)
            self._explainers.append(NoiseTunnel(explainer) if self.noise_tunnel else explainer)
        return self._explainers[worker]

    def _input(self, batch: Selection) -> torch.Tensor:
        """The model input of a batch of images, on the module's device."""
        return torch.from_numpy(self.store.model_input(batch)).to(module_device(self.module))

    def _attribute_batch(self, batch: Selection, target, base) -> tuple[np.ndarray, np.ndarray]:
        """Maps (B, *shape) float32 and deltas (B,) (NaN without one) for a batch of images.

        Captum is called on groups of images, and its internal batches are sized, so that one
        forward pass holds about :data:`CPU_WORKING_SET` bytes of activations on the CPU (bigger
        batches run slower there: they fall out of the caches) or ``memory_budget`` on a GPU.
        On the CPU, methods that are safe to run concurrently get one thread per core.
        """
        device = module_device(self.module)
        x = self._input(batch)
        n = len(batch)
        if target == "label":
            targets = torch.from_numpy(batch.labels).to(device)
        elif target == "prediction":
            targets = torch.from_numpy(self._predict(x)).to(device)
        else:
            targets = torch.full((n,), int(target), dtype=torch.long, device=device)
        workers = self._workers(device, n)
        group, kwargs = self._call_plan(n, device, workers)
        group = min(group, -(-n // workers))  # every worker gets a share
        parts = [slice(start, start + group) for start in range(0, n, group)]
        base = base.to(device) if base is not None else None
        with evaluating(self.module), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                warnings.catch_warnings():
            # Captum announces the hooks it sets on ReLUs (DeepLift, guided backprop) on every
            # call; silenced inside this block only (catch_warnings restores the filters).
            warnings.filterwarnings("ignore", message=r"Setting (forward, )?backward hooks", category=UserWarning)
            torch.manual_seed(self.seed * 1_000_003 + int(batch.rows[0]))
            results = _on_threads(workers, lambda worker, part: self._explain(
                worker, x[part], targets[part], base, kwargs), parts)
        maps = torch.cat([m for m, _ in results]).numpy()
        delta = torch.cat([d for _, d in results]).numpy() if self._has_delta else np.full(n, np.nan, np.float32)
        return maps, delta

    def _call_plan(self, n: int, device: torch.device, workers: int = 1) -> tuple[int, dict]:
        """Images per Captum call, and the keyword arguments of the call (batching and delta).
        Concurrent workers share the working set (on 2 cores, 8 MiB passes each ran fastest)."""
        work = max(1, self._inputs_per_pass(device) // workers)
        expansion = int(self._call_kwargs.get("n_samples", 5)) if self.method_class.__name__ == "GradientShap" else 1
        group = int(np.clip(work // expansion, 1, n))
        parameters = inspect.signature(self.method_class.attribute).parameters
        kwargs = dict(self._call_kwargs) | (self.noise_tunnel or {})
        if self.noise_tunnel:
            kwargs.setdefault("nt_samples_batch_size", int(np.clip(work // group, 1, kwargs["nt_samples"])))
        examples = group * kwargs.get("nt_samples_batch_size", 1)  # what Captum's inner method sees
        if "internal_batch_size" in parameters:
            kwargs.setdefault("internal_batch_size", max(examples, work))
        if "perturbations_per_eval" in parameters:
            kwargs.setdefault("perturbations_per_eval", max(1, work // examples))
        if self._has_delta:
            kwargs["return_convergence_delta"] = True
        return group, kwargs

    def _workers(self, device: torch.device, n: int) -> int:
        """Threads to run Captum on: one per core on the CPU for methods that neither sample nor
        set hooks on the model (threads would race for the random stream and the hooks).

        Small passes use a few cores poorly: one single-threaded pass per core ran Integrated
        Gradients on the digits CNN 1.3× faster than one pass over both cores of this machine.
        """
        from captum.attr import GradientAttribution, PerturbationAttribution

        safe = self.method_class.__name__ in _THREAD_SAFE or (
            issubclass(self.method_class, PerturbationAttribution) and not self._random)
        if device.type != "cpu" or not safe or self._random or not issubclass(
                self.method_class, GradientAttribution | PerturbationAttribution):
            return 1
        return int(np.clip(torch.get_num_threads(), 1, n))

    def _explain(self, worker: int, x: torch.Tensor, targets: torch.Tensor, base, kwargs: dict):
        """One Captum call: (maps in input space, per-image deltas or None)."""
        from captum.attr import GradientAttribution

        m = len(x)
        if issubclass(self.method_class, GradientAttribution):
            x = x.detach().requires_grad_(True)  # what Captum would do, without its warning
        if base is not None:
            distribution = self.method_class.__name__ in _DISTRIBUTION
            kwargs = kwargs | {"baselines": base if distribution else base.expand(m, *base.shape[1:])}
        out = self._explainer_for(worker).attribute(x, target=targets, **kwargs)
        delta = None
        if self._has_delta:
            out, d = out
            delta = torch.as_tensor(d).detach().float().reshape(m, -1).mean(dim=1).cpu()
        out = out[0] if isinstance(out, tuple) else out
        return self._to_input_space(out.detach().float(), x.shape[2:]).cpu(), delta

    def _inputs_per_pass(self, device: torch.device) -> int:
        """Inputs per forward pass: a cache-sized working set on the CPU, the memory budget on a GPU."""
        if not hasattr(self, "_forward_bytes"):
            arch = self.store.architecture(self.record)
            numel = {r["layer"]: int(np.prod(r["output_shape"] or [0])) for r in arch.iter_rows(named=True)}
            leaves = [n for n in numel if not any(other.startswith(n + ".") for other in numel)]
            self._forward_bytes = 4 * (sum(numel[n] for n in leaves) + int(np.prod(self.pixel_shape)))
        budget = self.memory_budget // 3  # activations, their gradients, and what autograd keeps
        if device.type == "cpu":
            budget = min(budget, CPU_WORKING_SET)
        return max(1, budget // self._forward_bytes)

    def _to_input_space(self, out: torch.Tensor, size) -> torch.Tensor:
        if tuple(out.shape[1:]) == self.shape:
            return out
        if out.ndim == 4 and self._upsampled:
            out = out.sum(dim=1, keepdim=True)
            return nn.functional.interpolate(out, size=tuple(size), mode=self.upsample) if \
                tuple(out.shape[2:]) != tuple(size) else out
        raise UnknownMethodError(f"{self.method} returned maps of shape {tuple(out.shape[1:])}, not the "
                                 f"input's {self.shape}; odinlab stores input-space maps only.")

    def _predict(self, x: torch.Tensor) -> np.ndarray:
        """The model's top class for each input (int64), in passes of at most 1024 inputs."""
        with evaluating(self.module), torch.no_grad():
            out = [first_tensor(self.module(x[start : start + 1024])).argmax(dim=1).cpu()
                   for start in range(0, len(x), 1024)]
        return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


# Methods whose attribute() only runs the model forward and backward: no hooks set on modules,
# no random draws. (Perturbation methods without sampling are safe too.)
_THREAD_SAFE = {"IntegratedGradients", "Saliency", "InputXGradient"}


def _on_threads(workers: int, run, parts: list) -> list:
    """``[run(worker, part) for part in parts]``, parts dealt round-robin to ``workers`` threads
    that each run single-threaded torch (one core each); in order, the first error re-raised."""
    if workers == 1:
        return [run(0, part) for part in parts]
    results = [None] * len(parts)

    def work(worker: int) -> None:
        torch.set_num_threads(1)  # per thread: the caller's setting is left alone
        for i in range(worker, len(parts), workers):
            results[i] = run(worker, parts[i])

    with ThreadPoolExecutor(workers, thread_name_prefix="odinlab-attribute") as pool:
        for future in [pool.submit(work, w) for w in range(workers)]:
            future.result()
    return results
