"""MCMCSamples: an FM fitted by Gibbs sampling, with its posterior samples.

Predictions are posterior means over the kept samples ``samples`` of shape
(n_samples, n_features, 1 + k) holding [w, v] per feature and sample, with
biases ``sample_w0``: regression averages the predictions clipped to the
training target range ``clip`` (as libFM), classification averages the
probit probabilities (the decision is their log-odds).  The table of the
last sample is the FMTable part (``w_``, ``V_``).
"""
import numpy as np

from .. import _mcmc, _utils
from .base import as_array
from .fm import FMTable

# likelihood codes of the kernels (src/cfm/_utils.pxd)
TASK_REGRESSION, TASK_PROBIT = int(_utils.TASK_REGRESSION), int(_utils.TASK_PROBIT)


def to_score(sum_p, sum_q, n, task):
    """Posterior-mean prediction (regression) or its log-odds (probit)."""
    if task == TASK_REGRESSION:
        return sum_p / n
    with np.errstate(divide="ignore"):
        return np.log(sum_p) - np.log(sum_q)


class MCMCSamples(FMTable):
    """An FM table plus its posterior samples (see the module docstring)."""

    def __init__(self, table, w0_state, k, normalize, *, samples, sample_w0, clip, alpha,
                 task, n_prior_groups=None):
        super().__init__(table, w0_state, k, "mcmc", normalize)
        n = table.shape[0]
        if samples.ndim != 3 or samples.shape[1:] != (n, 1 + k) \
                or sample_w0.shape != (samples.shape[0],):
            raise RuntimeError("inconsistent MCMC samples")
        self._set(samples=samples, sample_w0=sample_w0, clip=(float(clip[0]), float(clip[1])),
                  alpha=float(alpha), task=int(task), n_prior_groups=n_prior_groups)

    def relayout(self, solver, dtype, **hyper):
        """A warm start with a per-sample solver continues from the last sample."""
        plain = FMTable(self.table, self.w0_state, self.k, "mcmc", self.normalize)
        return plain.relayout(solver, dtype, **hyper)

    def decision(self, Xc, n_threads, shared=False):
        """Posterior mean over the kept samples (log-odds of the posterior mean
        probability for classification)."""
        self.check_width(Xc)
        p = np.zeros(Xc.n_rows)
        q = np.zeros(Xc.n_rows)
        _mcmc.predict_sum(Xc.data, Xc.indices, Xc.indptr, self.normalize, self.samples,
                          self.sample_w0, self.k, self.task, self.clip[0], self.clip[1], p, q,
                          n_threads)
        return to_score(p, q, self.samples.shape[0], self.task)

    def export(self):
        arrays, header = super().export()
        arrays["mcmc_samples"] = self.samples
        arrays["mcmc_w0"] = self.sample_w0
        header["mcmc"] = {"clip": [float(c) for c in self.clip], "alpha": float(self.alpha)}
        return arrays, header

    @classmethod
    def from_file(cls, header, arrays, scoring_only=False):
        fm = FMTable.from_file(header, arrays, scoring_only)
        info = header.get("mcmc")
        if not isinstance(info, dict) or "mcmc_samples" not in arrays or "mcmc_w0" not in arrays:
            raise ValueError("MCMC model file without its posterior samples")
        S, w0s = arrays["mcmc_samples"], arrays["mcmc_w0"]
        n, k, dtype = fm.table.shape[0], fm.k, fm.table.dtype
        if S.ndim != 3 or S.shape[1:] != (n, 1 + k) or S.shape[0] < 1 or S.dtype != dtype:
            raise ValueError(f"array 'mcmc_samples' has shape {S.shape} / dtype {S.dtype}, "
                             f"expected (n_samples, {n}, {1 + k}) of {np.dtype(dtype)}")
        if w0s.shape != (S.shape[0],) or w0s.dtype != np.float64:
            raise ValueError("array 'mcmc_w0' does not match the samples")
        clip = info.get("clip")
        if not (isinstance(clip, list) and len(clip) == 2):
            raise ValueError("bad MCMC clip range in header")
        task = TASK_REGRESSION if header["task"] == "regression" else TASK_PROBIT
        # the arrays cfm._model_file hands over are fresh copies (or read now): no second copy
        return cls(fm.table, fm.w0_state, k, fm.normalize,
                   samples=np.ascontiguousarray(as_array(S)),
                   sample_w0=np.ascontiguousarray(as_array(w0s)),
                   clip=(float(clip[0]), float(clip[1])), alpha=float(info.get("alpha", 1.0)),
                   task=task)
