"""The model-agnostic core shared by the language-model, ViT and trainer studies.

Imports neither transformer_lens, timm nor transformers: the massive criterion, exact order
statistics, streaming statistics, the activation recorder and the intervention protocol work on
plain tensors indexed ``[batch, pos, ...]`` and on site names chosen by the caller.
"""
