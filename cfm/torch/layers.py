"""Torch layers with cfm's formulas: FM (and LR), field-aware FM, DeepFM, and
the posterior-mean ensemble of an MCMC-fitted FM.

Every layer takes a batch of sparse rows -- ``(indices, offsets, values)``
or a torch sparse CSR tensor, see cfm/torch/_batch.py -- and returns the raw
score of each row, shape (n_rows,), in the parameters' dtype.  For a binary
classifier that is the log-odds: ``torch.sigmoid(score)`` is
``predict_proba(X)[:, 1]`` and ``nn.BCEWithLogitsLoss`` its training loss.

The sums run over the non-zeros of a row, in O(k nnz) per row for FM and
DeepFM (Rendle's identity) and O(k (nnz F + F^2)) for FFM (see
:class:`FieldAwareFactorizationMachine`), with ``scatter_add`` segment sums
that torch.onnx.export turns into ScatterElements (cfm/torch/_batch.py).  Each
entry of a row counts as one occurrence of its feature, as in cfm's kernels
on canonical rows: :func:`cfm.torch.as_batch` sums duplicate entries as the
estimators do.  Gradients are dense (any torch optimizer works; an epoch
over a large table with Adam touches all of it at every step).

``sum_dtype``: the dtype the products and row sums are computed in (None:
the parameters' dtype).  cfm's FM kernels sum in float64 whatever the
table's dtype; converted FM / LR / FFM / MCMC models do the same
(``sum_dtype=torch.float64``, cfm.torch.from_state), so that their scores
stay within 1e-5 of cfm's when the pairwise term sums many large products.
The score is returned in the parameters' dtype: a float32 score carries a
rounding of about 1e-7 times its magnitude (``module.double()`` -- an exact
copy of float32 parameters -- removes it for scores beyond about 100).
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from ._batch import _eager, check_batch, row_ids, scaled_values, segment_sum, unpack

__all__ = ["FactorizationMachine", "FieldAwareFactorizationMachine",
           "FieldWeightedFactorizationMachine", "DeepFM", "FMPosterior"]

_NORMALIZE = (False, True, "xlearn")


def _pairwise(xv, rows, n_rows):
    """1/2 sum_f [(sum_j v_jf x_j)^2 - sum_j (v_jf x_j)^2] per row, from the
    products xv (nnz, ..., k)."""
    s = segment_sum(xv, rows, n_rows)
    q = segment_sum(xv * xv, rows, n_rows)
    return 0.5 * (s * s - q).sum(-1)


def _ndtr(x):
    """The normal CDF as cfm's MCMC kernel computes it, erfc(-x/sqrt 2) / 2
    (torch.special.ndtr loses the lower tail: relative error 0.5 at -8)."""
    return 0.5 * torch.special.erfc(x * (-1.0 / math.sqrt(2.0)))


def _ndtr_graph(x):
    """The normal CDF from exp and arithmetic, for exported graphs:
    onnxruntime has no float64 Erf, and 0.5 (1 + erf) loses the lower tail
    that the log-odds of an MCMC classifier need.  Phi(x) = erfc(-x/sqrt 2) / 2
    with Numerical Recipes' erfc (relative error < 1.2e-7 everywhere)."""
    z = torch.abs(x) * (1.0 / math.sqrt(2.0))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -0.82215223 + t * 0.17087277
    for c in (1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196,
              1.00002368, -1.26551223):
        poly = c + t * poly
    tail = 0.5 * t * torch.exp(-z * z + poly)  # Phi(-|x|)
    return torch.where(x < 0, tail, 1.0 - tail)


def _check_normalize(normalize):
    if normalize not in _NORMALIZE or not isinstance(normalize, (bool, str)):
        raise ValueError(f"normalize must be True, False or 'xlearn', got {normalize!r}")
    return normalize


def _check_fields(fields, n_features, n_fields):
    f = torch.as_tensor(fields).reshape(-1)
    if f.is_floating_point() and not bool((f == f.round()).all()):
        raise ValueError("fields must hold integer field ids")
    f = f.long()
    if f.shape[0] != n_features:
        raise ValueError(f"fields must hold one field id per feature ({n_features}), "
                         f"got {f.shape[0]}")
    hi = int(f.max()) + 1 if n_features else 1
    n_fields = hi if n_fields is None else int(n_fields)
    if n_features and (int(f.min()) < 0 or hi > n_fields):
        raise ValueError(f"field ids must be in [0, {n_fields})")
    if n_fields < 1:
        raise ValueError("at least one field is needed")
    return f, n_fields


class _SparseRows(nn.Module):
    """What the layers share: the batch, its row ids and scaled values."""

    def __init__(self, n_features, normalize, sum_dtype=None):
        super().__init__()
        if sum_dtype not in (None, torch.float32, torch.float64):
            raise ValueError(f"sum_dtype must be None, torch.float32 or torch.float64, "
                             f"got {sum_dtype!r}")
        self.sum_dtype = sum_dtype
        if isinstance(n_features, bool) or int(n_features) != n_features or n_features < 0:
            raise ValueError(f"n_features must be an integer >= 0, got {n_features!r}")
        self.n_features = int(n_features)
        self.normalize = _check_normalize(normalize)
        self.task = None  # "classification" / "regression" when converted from a cfm model

    def _rows(self, x, offsets, values, fields=None):
        """(indices, row of each non-zero, n_rows, scaled values, raw values)."""
        indices, offsets, values = unpack(x, offsets, values)
        check_batch(indices, offsets, values, self.n_features, fields)
        indices = indices.long()
        n_rows = offsets.shape[0] - 1
        rows = row_ids(offsets, indices.shape[0])
        dtype = self.sum_dtype if self.sum_dtype is not None else self.w0.dtype
        xs = scaled_values(values, rows, n_rows, dtype, bool(self.normalize))
        return indices, rows, n_rows, xs, values

    def _linear(self, indices, xs, rows, n_rows):
        """w0 + sum_j w_j x_j per row."""
        wg = F.embedding(indices, self.w.view(-1, 1)).view(-1).to(xs.dtype)
        return self.w0.to(xs.dtype) + segment_sum(wg * xs, rows, n_rows)

    def _init_params(self, n_factors, dtype, min_factors=1, fields=None, n_fields=None):
        """What every layer's constructor does first: check ``n_factors``
        (an integer >= ``min_factors``); with ``fields``, check them and
        keep them as the buffer ``fields`` (and ``n_fields``); the
        parameters w0 = 0 and w = 0 of ``dtype``."""
        if isinstance(n_factors, bool) or int(n_factors) != n_factors or n_factors < min_factors:
            raise ValueError(f"n_factors must be an integer >= {min_factors}, got {n_factors!r}")
        self.n_factors = int(n_factors)
        if fields is not None:
            f, self.n_fields = _check_fields(fields, self.n_features, n_fields)
            self.register_buffer("fields", f)
        self.w0 = nn.Parameter(torch.zeros((), dtype=dtype))
        self.w = nn.Parameter(torch.zeros(self.n_features, dtype=dtype))

    def _field_ids(self, indices, fields):
        """Field of every non-zero: the model's field of its column, or
        ``fields`` (one id per non-zero) when given."""
        if fields is None:
            return self.fields[indices]
        fields = fields.long()
        if _eager() and fields.numel() and (int(fields.min()) < 0
                                            or int(fields.max()) >= self.n_fields):
            raise ValueError(f"field ids must be in [0, {self.n_fields})")
        return fields

    def extra_repr(self):
        return f"n_features={self.n_features}, normalize={self.normalize!r}"


class FactorizationMachine(_SparseRows):
    """Factorization machine layer (Rendle 2010), cfm's formula::

        y(x) = w0 + sum_j w_j x_j + 1/2 sum_f [(sum_j v_jf x_j)^2 - sum_j v_jf^2 x_j^2]

    ``n_factors=0`` is a linear model (LR).  ``normalize=True`` scales each
    row to unit L2 norm first (cfm's ``normalize``); ``"xlearn"`` is xLearn's
    FM normalisation (models imported by :func:`cfm.load_xlearn`: the
    pairwise term is divided by sum_j x_j^2 once more).

    Parameters ``w0`` (scalar), ``w`` (n_features,), ``V`` (n_features,
    n_factors) of ``dtype``; a new layer starts from w0 = 0, w = 0,
    V ~ N(0, init_std^2) (torch's generator: seed it with
    ``torch.manual_seed``).  ``sum_dtype``: see the module docstring.

    ``forward(indices, offsets=None, values=None)`` -> (n_rows,) scores; see
    the module docstring for the batch.
    """

    def __init__(self, n_features, n_factors=8, *, normalize=False, init_std=0.03,
                 dtype=torch.float32, sum_dtype=None):
        super().__init__(n_features, normalize, sum_dtype)
        self._init_params(n_factors, dtype, min_factors=0)
        self.V = nn.Parameter(torch.randn(self.n_features, self.n_factors, dtype=dtype)
                              * init_std)

    def forward(self, indices, offsets=None, values=None):
        indices, rows, n_rows, xs, raw = self._rows(indices, offsets, values)
        out = self._linear(indices, xs, rows, n_rows)
        if self.n_factors:
            pair = _pairwise(F.embedding(indices, self.V).to(xs.dtype) * xs[:, None], rows,
                             n_rows)
            if self.normalize == "xlearn":
                n2 = segment_sum(raw.to(xs.dtype) ** 2, rows, n_rows)
                pair = pair / torch.where(n2 > 0, n2, torch.ones_like(n2))
            out = out + pair
        return out.to(self.w0.dtype)

    def extra_repr(self):
        return f"{super().extra_repr()}, n_factors={self.n_factors}"


class FieldAwareFactorizationMachine(_SparseRows):
    """Field-aware factorization machine layer (Juan et al. 2016), cfm's formula::

        y(x) = w0 + sum_j w_j x_j + sum_{a<b} <v_{a,f(b)}, v_{b,f(a)}> x_a x_b

    over the non-zeros a < b of a row, f(j) the field of column j
    (``fields``, one id per feature, as cfm's FFM estimators take it).

    Computed without the O(nnz^2) pair loop: with per-row sums
    S[p, q] = sum_{a: f(a) = p} x_a v_{a,q}, the pair term is
    1/2 (sum_{p,q} <S[p, q], S[q, p]> - sum_a x_a^2 |v_{a,f(a)}|^2): O(k (nnz F
    + F^2)) per row, memory n_rows F^2 k per batch.

    Parameters ``w0``, ``w`` (n_features,), ``V`` (n_features, n_fields,
    n_factors); buffer ``fields`` (n_features,) int64; ``sum_dtype`` as for
    :class:`FactorizationMachine`.  ``forward(indices,
    offsets=None, values=None, fields=None)``: ``fields`` (one id per
    non-zero) overrides the field of each column.
    """

    def __init__(self, n_features, fields, n_factors=4, *, n_fields=None, normalize=False,
                 init_std=0.03, dtype=torch.float32, sum_dtype=None):
        super().__init__(n_features, normalize, sum_dtype)
        if normalize == "xlearn":
            raise ValueError("normalize='xlearn' is for FM layers (xLearn's FFM normalises "
                             "as cfm does: use True)")
        self._init_params(n_factors, dtype, fields=fields, n_fields=n_fields)
        self.V = nn.Parameter(torch.randn(self.n_features, self.n_fields, self.n_factors,
                                          dtype=dtype) * init_std)

    def forward(self, indices, offsets=None, values=None, fields=None):
        indices, rows, n_rows, xs, _ = self._rows(indices, offsets, values, fields)
        f = self._field_ids(indices, fields)
        nf, k = self.n_fields, self.n_factors
        out = self._linear(indices, xs, rows, n_rows)
        e = F.embedding(indices, self.V.view(-1, nf * k)).view(-1, nf, k).to(xs.dtype)
        e = e * xs[:, None, None]
        s = segment_sum(e, rows * nf + f, n_rows * nf).view(n_rows, nf, nf, k)
        cross = (s * s.transpose(1, 2)).sum((1, 2, 3))
        own = e.gather(1, f.view(-1, 1, 1).expand(-1, 1, k)).view(-1, k)
        pair = 0.5 * (cross - segment_sum((own * own).sum(1), rows, n_rows))
        return (out + pair).to(self.w0.dtype)

    def extra_repr(self):
        return (f"{super().extra_repr()}, n_fields={self.n_fields}, "
                f"n_factors={self.n_factors}")


class FieldWeightedFactorizationMachine(_SparseRows):
    """Field-weighted factorization machine layer (Pan et al. 2018), cfm's
    formula (src/cfm/_fwfm.pyx)::

        y(x) = w0 + sum_j w_j x_j + sum_{a<b} r_{f(a)f(b)} <v_a, v_b> x_a x_b

    one embedding per feature (``V``, n_features x n_factors) and a
    symmetric weight per pair of fields (``R``, n_fields x n_fields; a new
    layer starts from R = 1, an FM).  With per-field sums
    s_f = sum_{a: f(a) = f} x_a v_a and q_f = sum_{a: f(a) = f} x_a^2 |v_a|^2
    the pair term is 1/2 (sum_{f,g} r_fg <s_f, s_g> - sum_f r_ff q_f):
    O(k (nnz + F^2)) per row, memory n_rows F^2 per batch.  ``fields``,
    ``sum_dtype`` and ``forward`` as for
    :class:`FieldAwareFactorizationMachine`.
    """

    def __init__(self, n_features, fields, n_factors=8, *, n_fields=None, normalize=False,
                 init_std=0.03, dtype=torch.float32, sum_dtype=None):
        super().__init__(n_features, normalize, sum_dtype)
        if normalize == "xlearn":
            raise ValueError("normalize must be True or False for FwFM")
        self._init_params(n_factors, dtype, fields=fields, n_fields=n_fields)
        self.V = nn.Parameter(torch.randn(self.n_features, self.n_factors, dtype=dtype)
                              * init_std)
        self.R = nn.Parameter(torch.ones(self.n_fields, self.n_fields, dtype=dtype))

    def forward(self, indices, offsets=None, values=None, fields=None):
        indices, rows, n_rows, xs, _ = self._rows(indices, offsets, values, fields)
        f = self._field_ids(indices, fields)
        nf = self.n_fields
        out = self._linear(indices, xs, rows, n_rows)
        e = F.embedding(indices, self.V).to(xs.dtype) * xs[:, None]
        slot = rows * nf + f
        s = segment_sum(e, slot, n_rows * nf).view(n_rows, nf, -1)
        q = segment_sum((e * e).sum(1), slot, n_rows * nf).view(n_rows, nf)
        R = self.R.to(xs.dtype)
        gram = torch.matmul(s, s.transpose(1, 2))
        pair = 0.5 * ((gram * R).sum((1, 2)) - (q * torch.diagonal(R)).sum(1))
        return (out + pair).to(self.w0.dtype)

    def extra_repr(self):
        return (f"{super().extra_repr()}, n_fields={self.n_fields}, "
                f"n_factors={self.n_factors}")


class DeepFM(_SparseRows):
    """DeepFM layer (Guo et al. 2017), cfm's formula (src/cfm/_deepfm.pyx)::

        e_f  = sum_{j: f(j) = f} x_j v_j              (per-field pooling)
        h_0  = [e_0, ..., e_{F-1}],  h_l = dropout(relu(h_{l-1} W_l + b_l))
        y(x) = w0 + sum_j w_j x_j + FM pairwise term of the v_j + h_L . w_out

    one embedding v_j (``V``, n_features x n_factors) shared by the FM and
    the MLP (``hidden``: nn.Linear layers, ``w_out`` without bias).  A new
    layer is initialised as cfm's DeepFM: V ~ N(0, init_std^2), He-uniform
    hidden weights, zero biases, Glorot-uniform w_out.
    """

    def __init__(self, n_features, fields, n_factors=8, hidden_layer_sizes=(256, 128), *,
                 n_fields=None, dropout=0.0, normalize=False, init_std=0.01,
                 dtype=torch.float32):
        super().__init__(n_features, normalize)
        if normalize == "xlearn":
            raise ValueError("normalize must be True or False for DeepFM")
        if not 0 <= float(dropout) < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self._init_params(n_factors, dtype, fields=fields, n_fields=n_fields)
        self.V = nn.Parameter(torch.randn(self.n_features, self.n_factors, dtype=dtype)
                              * init_std)
        sizes = [self.n_fields * self.n_factors] + [int(h) for h in hidden_layer_sizes]
        self.hidden = nn.ModuleList(nn.Linear(a, b, dtype=dtype)
                                    for a, b in zip(sizes[:-1], sizes[1:]))
        with torch.no_grad():
            for layer in self.hidden:
                lim = math.sqrt(6.0 / layer.in_features)
                layer.weight.uniform_(-lim, lim)
                layer.bias.zero_()
        lim = math.sqrt(6.0 / (sizes[-1] + 1))
        self.w_out = nn.Parameter(torch.empty(sizes[-1], dtype=dtype).uniform_(-lim, lim))

    def forward(self, indices, offsets=None, values=None, fields=None):
        indices, rows, n_rows, xs, _ = self._rows(indices, offsets, values, fields)
        f = self._field_ids(indices, fields)
        nf, k = self.n_fields, self.n_factors
        xv = F.embedding(indices, self.V) * xs[:, None]
        out = self._linear(indices, xs, rows, n_rows) + _pairwise(xv, rows, n_rows)
        h = segment_sum(xv, rows * nf + f, n_rows * nf).view(n_rows, nf * k)
        for layer in self.hidden:
            h = F.relu(layer(h))
            if self.dropout:
                h = F.dropout(h, self.dropout, self.training)
        return out + h @ self.w_out

    def extra_repr(self):
        return (f"{super().extra_repr()}, n_fields={self.n_fields}, "
                f"n_factors={self.n_factors}, dropout={self.dropout}")


class FMPosterior(_SparseRows):
    """The posterior-mean prediction of an FM fitted by MCMC (Gibbs
    sampling): cfm's ``decision_function`` of such a model averages over its
    kept samples, which no single FM reproduces (the pairwise term is not
    linear in V), so the samples are kept::

        regression:      mean_s clip(y_s(x), clip)
        classification:  log(sum_s Phi(y_s(x))) - log(sum_s Phi(-y_s(x)))

    (the log-odds of the posterior mean probability; Phi the normal CDF,
    ``task="classification"``), y_s the FM score of sample s.  Parameters
    ``w0`` (n_samples,), ``w`` (n_features, n_samples), ``V`` (n_features,
    n_samples, n_factors).  Scores are float64 (the averaging runs in float64).
    """

    def __init__(self, w0, w, V, *, task, clip=(1.0, 0.0), normalize=False, sum_dtype=None):
        w0, w, V = (torch.as_tensor(a) for a in (w0, w, V))
        super().__init__(w.shape[0], normalize, sum_dtype)
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if w0.dim() != 1 or w.shape[1:] != w0.shape or V.dim() != 3 \
                or V.shape[:2] != w.shape:
            raise ValueError("inconsistent sample shapes: w0 (S,), w (n, S), V (n, S, k)")
        self.task = task
        self.n_factors = int(V.shape[2])
        self.n_samples = int(w0.shape[0])
        self.clip = (float(clip[0]), float(clip[1]))
        self.w0 = nn.Parameter(w0.clone().to(w.dtype))
        self.w = nn.Parameter(w.clone())
        self.V = nn.Parameter(V.clone())

    def forward(self, indices, offsets=None, values=None):
        indices, rows, n_rows, xs, _ = self._rows(indices, offsets, values)
        s, k = self.n_samples, self.n_factors
        wg = F.embedding(indices, self.w).to(xs.dtype)
        pred = self.w0.to(xs.dtype) + segment_sum(wg * xs[:, None], rows, n_rows)
        if k:
            vg = F.embedding(indices, self.V.view(-1, s * k)).view(-1, s, k).to(xs.dtype)
            pred = pred + _pairwise(vg * xs[:, None, None], rows, n_rows)
        if self.task == "regression":
            lo, hi = self.clip
            if lo <= hi:
                pred = pred.clamp(lo, hi)
            return pred.double().mean(1)
        pred = pred.double()
        phi = _ndtr if _eager() else _ndtr_graph
        return torch.log(phi(pred).sum(1)) - torch.log(phi(-pred).sum(1))

    def extra_repr(self):
        return (f"{super().extra_repr()}, n_samples={self.n_samples}, "
                f"n_factors={self.n_factors}, task={self.task!r}")
