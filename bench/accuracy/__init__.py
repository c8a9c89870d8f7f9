"""Accuracy of the variants: pose data (:mod:`.data`: synthetic, Human3.6M), the protocol of one case
(:mod:`.job`), training (:mod:`.train`, :mod:`.standardise`), evaluation (:mod:`.evaluate`, the pose
metrics of :mod:`.metrics`) and checkpoints, the releases' and vptbench's own (:mod:`.checkpoints`).
"""
