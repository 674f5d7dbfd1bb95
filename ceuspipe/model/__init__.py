"""CEUSegNet, its ablation variants and size reporting."""

from ceuspipe.model.factory import VARIANTS, build_model
from ceuspipe.model.info import count_macs, count_parameters, model_info

__all__ = ["VARIANTS", "build_model", "count_macs", "count_parameters", "model_info"]
