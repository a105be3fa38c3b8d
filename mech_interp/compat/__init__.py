"""Compatibility shims for libraries the studies import (torchvision on CPU-only torch)."""
