"""The registry of model variants (no torch needed): the names every CLI option, config
check and pipeline file takes, and the switches :func:`ceuspipe.model.build_model` applies.

``full`` is CEUSegNet; ``unet`` the paper's U-Net baseline; the others are the
ablations of the paper's Table 2.
"""

VARIANTS = ("unet", "ceus_only", "us_only", "both", "both_csa", "both_cff", "full")

VARIANT_FLAGS = {
    # two encoders, no residual shortcuts, a 1x1 conv fusing the two skips at every level
    "unet": dict(two_branch=True, residual=False, csa=False, cff=False),
    "ceus_only": dict(two_branch=False, branch="ceus"),
    "us_only": dict(two_branch=False, branch="us"),
    "both": dict(two_branch=True, csa=False, cff=False),
    "both_csa": dict(two_branch=True, csa=True, cff=False),
    "both_cff": dict(two_branch=True, csa=False, cff=True),
    "full": dict(two_branch=True, csa=True, cff=True),
}
