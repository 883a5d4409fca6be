"""The torch-free ground floor: kernels shared by data loading, models, export and the runtime.

Nothing here imports torch, scikit-learn, data-set code or anything above this package; every
other layer may import from here.

- `edgead.ops.decode`: the one image decoder for files and frames (gray, RGB(A), 16-bit).
"""
