"""Torch datasets over cfm's data files: train a torch model on files larger
than memory.

:class:`BlockDataset` streams a libsvm / libFM / libffm text file (plain or
gzip) or a ``.cfmdata`` cache through :func:`cfm.iter_blocks` -- one block
of rows in memory at a time -- and yields mini-batches in the form the
cfm.torch layers take::

    ds = cfm.torch.BlockDataset("train.cfmdata", batch_size=1024, shuffle=True,
                                binary_labels=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=None)   # batches come ready
    for epoch in range(3):
        ds.set_epoch(epoch)
        for indices, offsets, values, y in loader:
            loss = F.binary_cross_entropy_with_logits(module(indices, offsets, values), y)

Rows are validated as cfm's estimators validate them (duplicate entries of
a row summed, explicit zeros dropped, bad structure raises).  ``shuffle``
shuffles the rows within each block (``block_rows`` rows), in a new order
each epoch (``set_epoch``), reproducibly under ``seed``.  With a DataLoader
of several workers, worker w takes blocks w, w + n_workers, ...: every
worker reads the whole file, which costs little for a cache (a memory map)
but parses a text file once per worker -- convert text to a cache first
(:func:`cfm.convert_to_cache`).
"""
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .._validation import check_X
from ..data import iter_blocks, scan_file

__all__ = ["BlockDataset"]


def take_rows(data, indices, indptr, rows):
    """(indices, offsets, values) of the CSR rows ``rows`` (NumPy, copies)."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = indptr[rows]
    counts = indptr[rows + 1] - starts
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    pos = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1], dtype=np.int64)
    return indices[pos].astype(np.int64), offsets, data[pos]


class BlockDataset(IterableDataset):
    """Mini-batches ``(indices, offsets, values, y)`` of a data file.

    Parameters
    ----------
    path : str or path-like
        libsvm / libFM / libffm text (plain or gzip) or ``.cfmdata`` cache.
    batch_size : int, default=1024
        Rows per batch (the last batch of a block may be shorter, unless
        ``drop_last``).
    shuffle : bool, default=False
        Shuffle the rows within each block, anew each epoch (``set_epoch``).
    seed : int, default=0
        Seeds the shuffling (with the epoch and the block).
    binary_labels : bool, default=False
        y as 1.0 where the label is > 0, else 0.0 (0/1 and -1/+1 files alike:
        the target of ``BCEWithLogitsLoss``); False keeps the labels.
    dtype : torch.dtype, default=torch.float32
        dtype of ``values`` and ``y``.
    drop_last : bool, default=False
        Skip a block's last batch when it is shorter than ``batch_size``.
    block_rows : int, default=65536
        Rows read at once (memory: about one block).
    n_features, format, zero_based, n_jobs, allow_nonfinite
        As for :func:`cfm.iter_blocks` (``allow_nonfinite`` defaults to False
        here: a nan / inf raises, naming the file and line).
    """

    def __init__(self, path, batch_size=1024, *, shuffle=False, seed=0, binary_labels=False,
                 dtype=torch.float32, drop_last=False, block_rows=65_536, n_features=None,
                 format="auto", zero_based="auto", n_jobs=None, allow_nonfinite=False):
        super().__init__()
        for name, v in (("batch_size", batch_size), ("block_rows", block_rows)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.path = path
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.binary_labels = bool(binary_labels)
        self.dtype = dtype
        self.drop_last = bool(drop_last)
        self.block_rows = int(block_rows)
        self._read = dict(n_features=n_features, format=format, zero_based=zero_based,
                          n_jobs=n_jobs, allow_nonfinite=allow_nonfinite)
        self.epoch = 0

    def set_epoch(self, epoch):
        """Select the shuffling of epoch ``epoch`` (as DistributedSampler)."""
        self.epoch = int(epoch)

    def scan(self):
        """The file's sizes (:func:`cfm.scan_file`): ``n_rows``, ``n_features``,
        ``nnz``, ``n_fields``, ... -- what a model for it needs."""
        r = self._read
        return scan_file(self.path, format=r["format"], zero_based=r["zero_based"],
                         n_jobs=r["n_jobs"])

    def fields(self):
        """Field id of every feature (libffm files and caches), else None."""
        for _, _, fields in self._blocks():
            return None if fields is None else np.asarray(fields, dtype=np.int64)
        return None

    def _blocks(self):
        r = self._read
        return iter_blocks(self.path, self.block_rows, r["n_features"], r["format"],
                           zero_based=r["zero_based"], n_jobs=r["n_jobs"],
                           allow_nonfinite=r["allow_nonfinite"])

    def __iter__(self):
        info = get_worker_info()
        n_workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        for b, (X, y, _) in enumerate(self._blocks()):
            if b % n_workers != worker:
                continue
            yield from self._batches(X, y, b)

    def _batches(self, X, y, block):
        Xc = check_X(X, name=f"block {block} of {self.path!r}", min_samples=0)
        y = np.asarray(y)
        if self.binary_labels:
            y = (y > 0).astype(np.float64)
        n, bs = Xc.n_rows, self.batch_size
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch, block])
            order = rng.permutation(n)
        else:
            order = np.arange(n)
        for s in range(0, n, bs):
            rows = order[s:s + bs]
            if self.drop_last and len(rows) < bs:
                break
            ind, off, val = take_rows(Xc.data, Xc.indices, Xc.indptr, rows)
            yield (torch.from_numpy(ind), torch.from_numpy(off),
                   torch.from_numpy(val).to(self.dtype),
                   torch.from_numpy(np.array(y[rows])).to(self.dtype))
