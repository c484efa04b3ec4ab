"""Shared pytest setup.

Without CUDA, Triton kernels can only run under Triton's interpreter, which must be switched on
*before* triton is first imported; conftest.py is imported before any test module, so it is set
here.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
