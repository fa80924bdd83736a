"""Training input that is streamed: a data file (out of core) or re-iterable
chunks of (X, y).  Opens the source once per epoch as blocks of
(X, y, fields); the per-sample solvers train on them (cfm._train.sgd)."""
import numbers
import os

import numpy as np

from .. import data as cfm_data
from ..exceptions import DataFormatError


def peek_chunk(source):
    """The first (X, y) chunk of re-iterable chunks (checked)."""
    if hasattr(source, "__next__"):
        raise ValueError("X is a one-shot iterator; pass a list of (X, y) chunks or a function "
                         "returning a fresh iterator, so that every epoch can re-read them")
    it = source() if callable(source) else iter(source)
    try:
        first = next(iter(it))
    except StopIteration:
        raise ValueError("the training data stream is empty") from None
    if not (isinstance(first, (tuple, list)) and len(first) == 2 and hasattr(first[0], "shape")):
        raise ValueError("chunks must be (X, y) pairs with a 2-D X")
    return first


class StreamSource:
    """A stream's facts and its blocks.

    ``n_features``; ``zero_based`` (how a libsvm file's ids were read;
    chunks: their columns); ``labels`` (a sample of a file's label values;
    for chunks the ``labels`` attribute of the source, e.g. set on the
    function returning the chunks, when it has one: every label of the
    stream, which classifiers take as their classes); ``info`` (scan_file's
    result, None for chunks); ``blocks()`` yields (X, y, fields or None)
    afresh.  ``entry_fields``: a libffm file (or a cache made with its
    per-entry fields) whose blocks carry the field of each entry
    (``column_fields``: the file's first field of each column)."""

    def __init__(self, source, block_rows, n_features=None, name=None, check_size=None,
                 entry_fields=False):
        if isinstance(block_rows, bool) or not isinstance(block_rows, numbers.Integral) or \
                block_rows < 1:
            raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
        self.source, self.block_rows = source, block_rows
        self.zero_based, self.info, self.labels = True, None, None
        self.entry_fields, self.column_fields = bool(entry_fields), None
        if entry_fields and not isinstance(source, (str, os.PathLike)):
            raise ValueError("fields='entry' takes the fields of a libffm file (or cache) "
                             "given as X; for arrays pass the per-entry fields themselves")
        if isinstance(source, (str, os.PathLike)):
            # nan / inf are refused at file:line before anything is trained
            info, self.column_fields = cfm_data._scan(source, "auto", finite=True,
                                                      want_fields=bool(entry_fields))
            if entry_fields and not (info["format"] == "libffm" or info.get("has_entry_fields")):
                raise ValueError(f"fields='entry' needs a libffm file or a cache made with "
                                 f"convert_to_cache(..., entry_fields=True); "
                                 f"{os.fspath(source)!r} is {info['format']}"
                                 + (" without per-entry fields" if info["format"] == "cache"
                                    else ""))
            nf = info["n_features"]
            if info["n_rows"] == 0 or nf < 1:
                raise DataFormatError(f"{os.fspath(source)}: no data to train on ("
                                      f"{info['n_rows']} rows, {nf} features)")
            self.zero_based = bool(info.get("zero_based", True))
            if n_features is None and check_size is not None:
                check_size(nf, info)
            if n_features is not None and nf != n_features:
                raise ValueError(f"{os.fspath(source)!r} has {nf} features, but "
                                 f"{name} is expecting {n_features} features as input.")
            self.n_features = nf if n_features is None else n_features
            self.info = info
            self.labels = np.asarray(info.get("label_values_sample", []))
        else:
            first = peek_chunk(source)
            self.n_features = first[0].shape[1]
            labels = getattr(source, "labels", None)
            self.labels = None if labels is None else np.asarray(labels)

    def blocks(self):
        if self.info is not None:
            info = self.info
            kw = {} if info.get("format") in ("cache", "libffm") else \
                {"zero_based": info.get("zero_based", "auto")}
            if self.entry_fields:
                kw["entry_fields"] = True
            yield from cfm_data.iter_blocks(self.source, block_rows=self.block_rows,
                                            n_features=self.n_features,
                                            allow_nonfinite=False, **kw)
            return
        it = self.source() if callable(self.source) else iter(self.source)
        for pair in it:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError("chunks must be (X, y) pairs")
            yield pair[0], pair[1], None

    def where(self, row):
        """file:line of a row of the file (for label errors), or None for chunks."""
        if self.info is None:
            return None
        return cfm_data._where_row(self.source, self.info["format"], row)


def read_eval_file(path, n_features, zero_based=True, entry_fields=False):
    """An eval_set file as (X, y), its libsvm ids read as the training data's
    were; ``entry_fields``: (X, y, per-entry fields) of a libffm file or a
    cache holding them."""
    info = cfm_data.scan_file(path)
    if entry_fields:
        if info.get("format") == "libffm":
            return cfm_data.load_libffm(path, n_features=n_features, allow_nonfinite=False,
                                        entry_fields=True)
        if info.get("format") == "cache":
            return cfm_data.load_cache(path, entry_fields=True)
        raise ValueError(f"{os.fspath(path)}: a model trained on per-entry fields is "
                         f"evaluated on libffm data, not {info.get('format')}")
    if info.get("format") == "libffm":
        Xv, yv, _ = cfm_data.load_libffm(path, n_features=n_features, allow_nonfinite=False)
    elif info.get("format") == "cache":
        Xv, yv, _ = cfm_data.load_cache(path)
    else:
        Xv, yv = cfm_data.load_libsvm(path, n_features=n_features, zero_based=zero_based,
                                      allow_nonfinite=False)
    return Xv, yv
