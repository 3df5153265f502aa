"""The embedded tiny SD-family model: its architecture, training command and prompt-adherence check.

``python -m dragnb.tiny.train --out data/tiny-scenes --work runs/tiny`` trains it from scratch on the scene
world (:mod:`dragnb.tiny.scenes`) in the classes and folder layout of Stable Diffusion 1.5.
"""
