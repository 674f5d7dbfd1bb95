"""PyTorch inference (eager; fp16 autocast on CUDA): runs checkpoints on the CPU or a GPU."""

from __future__ import annotations

import numpy as np

from ceuspipe.segment.engines.base import Engine, EngineOptions, register_engine
from ceuspipe.segment.model_spec import ModelSpec


class TorchPredictor:
    """Eager PyTorch inference; fp16 autocast on CUDA when ``amp``."""

    engine = "torch"

    def __init__(self, spec: ModelSpec, device: str = "cpu", *, amp: bool = True):
        import torch

        self._torch = torch
        self.device = device
        self.size = spec.size
        self.model = spec.model.to(device).eval()
        self.amp = amp and device.startswith("cuda")

    def inference_record(self) -> dict:
        """One run per batch; on the CPU with PyTorch's intra-op threads."""
        if self.device.startswith("cuda"):
            return {"runs_per_batch": 1}
        return {"runs_per_batch": 1, "threads_per_run": self._torch.get_num_threads()}

    def __call__(self, ceus: np.ndarray, us: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            c = torch.from_numpy(np.ascontiguousarray(ceus, dtype=np.float32))[:, None].to(self.device)
            u = torch.from_numpy(np.ascontiguousarray(us, dtype=np.float32))[:, None].to(self.device)
            if self.amp:
                with torch.autocast("cuda", dtype=torch.float16):
                    logits = self.model(c, u)
            else:
                logits = self.model(c, u)
            return torch.sigmoid(logits.float())[:, 0].cpu().numpy()


def _build(spec: ModelSpec, device: str, options: EngineOptions) -> TorchPredictor:
    return TorchPredictor(spec, device)


#: on a GPU, ``engine auto`` runs PyTorch; on the CPU only when ONNX Runtime is missing
ENGINE = register_engine(Engine("torch", _build, devices=("cpu", "cuda"), precisions=("fp32", "fp16"),
                                model_files=("checkpoint",), auto_for=("cpu", "cuda"), auto_rank=10,
                                requires=("torch",)))
