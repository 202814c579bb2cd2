"""Alignment between the sub-elements of two modalities (DESIGN.md "Alignment" contract).

Explicit: dtw.py (DTW with its warping path, soft-DTW and its divergence), cca.py (linear CCA, Deep CCA), ot.py
(entropic OT / Gromov-Wasserstein couplings via ott-jax). Implicit: tokens.py (FILIP token-wise late interaction);
attention weights come from mmjax.layers.attention (`return_weights=True`, `attention_weights`).
Functions take x [..., T1, D], y [..., T2, D] (or a cost matrix) and return a value and, where defined, a path or a
soft alignment matrix [..., T1, T2]; they are jittable, vmappable and differentiable where the math is.
Import the functions from their modules (`from mmjax.alignment.dtw import dtw, soft_dtw`): the package does not
re-export them, so that `mmjax.alignment.dtw` stays the module.
"""
