"""Batches of sparse rows as torch tensors, and the segment sums the layers use.

A batch is three 1-D tensors, as ``nn.EmbeddingBag`` takes them with
``include_last_offset=True`` (that is, SciPy's CSR arrays):

* ``indices`` (nnz,) int64: the column of every non-zero, row after row;
* ``offsets`` (n_rows + 1,) int64: row i's non-zeros are
  ``indices[offsets[i]:offsets[i + 1]]`` (``offsets[0] == 0``,
  ``offsets[-1] == nnz``);
* ``values`` (nnz,) float: the values x_j (None: all ones, one-hot rows).

or one torch sparse CSR tensor of shape (n_rows, n_features) (its
``crow_indices``, ``col_indices`` and ``values``).  :func:`as_batch` builds
the tensors from anything cfm's estimators accept (SciPy sparse, NumPy,
pandas), with cfm's own validation, so that a module's scores equal the
estimator's on the same input.
"""
import numpy as np
import torch

from .._validation import check_X


_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) \
    or (lambda: False)  # torch < 2.3: no torch.compiler.is_compiling (nor torch.export)


def _eager():
    """False while torch.export / torch.compile / the TorchScript tracer
    records the graph: the value checks below then stay out of it."""
    return not (_is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting())


def unpack(x, offsets=None, values=None):
    """(indices, offsets, values) from a sparse CSR tensor or the triple."""
    if offsets is None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            raise TypeError("expected (indices, offsets, values) or a 2-D torch sparse CSR "
                            f"tensor, got {type(x).__name__}")
        if x.layout != torch.sparse_csr:
            x = x.to_sparse_csr()  # COO or dense input (explicit zeros are dropped)
        return x.col_indices(), x.crow_indices(), x.values()
    if values is None:
        values = torch.ones(x.shape[0], dtype=torch.float32, device=x.device)
    return x, offsets, values


def check_batch(indices, offsets, values, n_features, fields=None):
    """Shapes, dtypes and the ranges the layers index with (eager mode only:
    an out-of-range index would otherwise surface as an obscure error deep
    in torch)."""
    if not _eager():
        return
    for name, t in (("indices", indices), ("offsets", offsets)):
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.is_floating_point() \
                or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be a 1-D integer tensor")
    if not isinstance(values, torch.Tensor) or values.dim() != 1 \
            or not values.is_floating_point():
        raise ValueError("values must be a 1-D floating-point tensor")
    nnz = indices.shape[0]
    if values.shape[0] != nnz:
        raise ValueError(f"values has {values.shape[0]} entries, indices {nnz}")
    if offsets.shape[0] < 1:
        raise ValueError("offsets must hold n_rows + 1 entries (offsets[0] == 0, "
                         "offsets[-1] == len(indices)), got an empty tensor")
    if int(offsets[0]) != 0 or int(offsets[-1]) != nnz:
        raise ValueError(f"offsets must start at 0 and end at len(indices) = {nnz} "
                         f"(n_rows + 1 entries, like CSR indptr), got {int(offsets[0])} "
                         f"... {int(offsets[-1])}")
    if offsets.shape[0] > 1 and bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError("offsets must be non-decreasing")
    if nnz and (int(indices.min()) < 0 or int(indices.max()) >= n_features):
        bad = int(indices.max()) if int(indices.max()) >= n_features else int(indices.min())
        raise ValueError(f"column index {bad} is outside [0, {n_features}) "
                         "(the model's n_features)")
    if fields is not None:
        if not isinstance(fields, torch.Tensor) or fields.shape != indices.shape:
            raise ValueError("fields must be a tensor of one field id per non-zero")


def _scatter_add(out, index, src):
    """``out`` plus ``src`` (n, ...) summed into the rows ``index`` (n,).

    scatter_add, not index_add: torch.onnx.export turns index_add into a
    ScatterND with reduction "add", which onnxruntime's CPU kernel runs in
    parallel over the updates without atomics -- rows that several updates
    add to lose some of them, now and then (measured: 5 runs in 20 wrong on
    400k updates into 4 rows).  scatter_add becomes ScatterElements, whose
    kernel gives each output element to one thread and adds in order."""
    index = index.view((-1,) + (1,) * (src.dim() - 1)).expand_as(src)
    return out.scatter_add(0, index, src)


def row_ids(offsets, nnz):
    """The row of every non-zero, (nnz,) int64: the number of row starts
    offsets[1:-1] at or before its position (a scatter and a cumulative
    sum, static shapes: ONNX-friendly, unlike repeat_interleave)."""
    starts = offsets[1:-1].long()
    marks = torch.zeros(nnz + 1, dtype=torch.int64, device=offsets.device)
    marks = _scatter_add(marks, starts, torch.ones_like(starts))
    return torch.cumsum(marks, 0)[:nnz]


def segment_sum(src, rows, n_rows):
    """Per-row sums of ``src`` (nnz, ...) -> (n_rows, ...)."""
    out = torch.zeros((n_rows,) + tuple(src.shape[1:]), dtype=src.dtype, device=src.device)
    return _scatter_add(out, rows, src)


def scaled_values(values, rows, n_rows, dtype, normalize):
    """The values in the parameters' dtype, each row scaled to unit L2 norm
    when ``normalize`` (a row of norm 0 is left as it is), as cfm's kernels
    (row_scale in src/cfm/_common.pxd)."""
    x = values.to(dtype)
    if not normalize:
        return x
    n2 = segment_sum(x * x, rows, n_rows)
    scale = torch.rsqrt(torch.where(n2 > 0, n2, torch.ones_like(n2)))
    return x * scale[rows]


def as_batch(X, *, dtype=torch.float32, n_features=None):
    """(indices, offsets, values) tensors of the rows of X.

    X is anything cfm's estimators accept (SciPy sparse, NumPy, pandas),
    validated as they validate it (non-finite values and bad CSR structure
    raise; duplicate entries of a row are summed and explicit zeros dropped),
    so a converted model scores these tensors as the estimator scores X.
    ``n_features``: the width X must have (a model's ``n_features_in_``).
    """
    Xc = check_X(X, n_features=n_features, min_samples=0)
    return (torch.from_numpy(np.asarray(Xc.indices, dtype=np.int64)),
            torch.from_numpy(np.asarray(Xc.indptr, dtype=np.int64)),
            torch.from_numpy(np.array(Xc.data)).to(dtype))
