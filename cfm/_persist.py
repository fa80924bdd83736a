"""Estimator <-> model file: the estimator's header entries around its state's.

A model file holds the state's arrays and header entries (``state.export()``,
``StateClass.from_file``) and the estimator's: class, task, parameters,
labels, history, feature names, id base, generator state.  The bytes are
written and read by the model-file layer (cfm._model_file), which knows no
estimator; ``cfm.load`` (cfm/_loader.py) finds the class in its registry and
calls ``cls._from_file``.
"""
import numpy as np

from ._classes import class_weights, plain
from ._model_file import RowBlocks, _decode_labels, _encode_labels, write_model_file
from ._state import FFMTable, FMTable, MCMCSamples
from ._state.base import LazyRows
from ._validation import check_n_jobs


def _jsonable_params(params):
    out = {}
    for k, v in params.items():
        if v is None or isinstance(v, (bool, int, float, str, np.integer, np.floating, np.bool_)):
            out[k] = v
        else:  # e.g. a RandomState instance: not reproducible from a file
            out[k] = None
    return out


# Instance attributes of estimators pickled by cfm before model states
# (cfm/_state): upgraded to a state when unpickled.
_LEGACY = ("_tables", "_table", "_w0_state", "_k", "_kp", "_ks", "_solver", "_normalize",
           "_lin", "_V", "_rec_off", "_row_width", "_foff", "_samples", "_sample_w0", "_clip",
           "alpha_", "n_prior_groups_", "fields_", "n_fields_", "_scoring_only")


def _legacy_state(d):
    """The state of an estimator pickled before model states existed."""
    trainable = not d.get("_scoring_only", False)
    if "_V" in d:
        return FFMTable(d["_lin"], d["_V"], d["_w0_state"], d["fields_"], d["n_fields_"],
                        d["_k"], d["_ks"], d["_solver"], d["_normalize"], trainable)
    if d["_solver"] == "mcmc" and d.get("_samples") is not None:
        task = int(d.get("classes_") is not None)
        return MCMCSamples(d["_table"], d["_w0_state"], d["_k"], d["_normalize"],
                           samples=d["_samples"], sample_w0=d["_sample_w0"], clip=d["_clip"],
                           alpha=d.get("alpha_", 1.0), task=task,
                           n_prior_groups=d.get("n_prior_groups_"))
    return FMTable(d["_table"], d["_w0_state"], d["_k"], d["_solver"], d["_normalize"],
                   trainable)


class ModelFileMixin:
    """save / export / import of BaseFM (see the module docstring)."""

    def __setstate__(self, state):
        if "_state" not in state and "_w0_state" in state:  # pickled by an older cfm
            state = dict(state)
            upgraded = _legacy_state(state)
            for name in _LEGACY:
                state.pop(name, None)
            state["_state"] = upgraded
        parent = getattr(super(), "__setstate__", None)
        if parent is not None:
            parent(state)
        else:  # scikit-learn not installed
            self.__dict__.update(state)

    def save(self, path):
        """Save the fitted model to ``path`` in cfm's versioned binary format.

        The file holds no pickle: loading an untrusted file cannot run code.
        Load it with :func:`cfm.load`.
        """
        self._check_fitted()
        arrays, header = self._export_state()
        write_model_file(path, header, arrays)

    def _export_state(self):
        """Arrays and JSON header describing the fitted model (see cfm/_model_file.py)."""
        self._check_trainable()
        arrays, entries = self._current_tables().export()
        arrays = {name: RowBlocks(a.shape, a.dtype, a.block) if isinstance(a, LazyRows) else a
                  for name, a in arrays.items()}
        header = self._common_header()
        header.update(entries)
        self._export_encoder(header, arrays)
        return arrays, header

    def _file_task(self):
        """The model file's "task" (classifiers: "binary" or "multiclass")."""
        return "regression" if self._loss == "squared" else "binary"

    def _file_tasks(self):
        """The tasks of model files this class loads."""
        return (self._file_task(),)

    def _common_header(self):
        """Model-file header entries of the estimator (besides its state's)."""
        from . import __version__

        header = {
            "kind": self._state_class.kind,
            "estimator": type(self).__name__,
            "task": self._file_task(),
            "params": _jsonable_params(self.get_params()),
            "history": self.history_,
            "n_epochs_": int(self.n_epochs_),
            "best_epoch_": int(getattr(self, "best_epoch_", self.n_epochs_)),
            "rng_state": self._rng.bit_generator.state,
            "cfm_version": __version__,
        }
        zb = getattr(self, "_input_zero_based", None)
        header["input_zero_based"] = bool(zb) if zb is not None else True
        if isinstance(getattr(self, "best_params_", None), dict):
            header["best_params"] = dict(self.best_params_)
        if hasattr(self, "classes_"):
            header["classes"] = _encode_labels(self.classes_)
            cw = getattr(self, "class_weight", None)
            if isinstance(cw, dict):  # (params keeps scalars only) one weight per class
                header["class_weight"] = [float(w) for w in class_weights(
                    cw, self.classes_, np.zeros(0, dtype=np.intp))]
        if hasattr(self, "feature_names_in_"):
            header["feature_names"] = [str(c) for c in self.feature_names_in_]
        return header

    @classmethod
    def _from_file(cls, header, arrays, scoring_only=False):
        """A fitted estimator from a model file's (validated) header and arrays."""
        model = cls.__new__(cls)
        model._import_state(header, arrays, scoring_only)
        return model

    def _adopt(self, state, *, classes=None):
        """Become a fitted model holding ``state``, built elsewhere (an imported
        model: cfm.xlearn); no history, a fresh generator."""
        self._state = state
        self.n_features_in_ = state.n_features
        self.history_ = []
        self.n_epochs_ = self.best_epoch_ = 0
        self._input_zero_based = True
        self._rng = np.random.default_rng()
        if classes is not None:
            self.classes_ = classes
        return self

    def _import_state(self, header, arrays, scoring_only=False):
        self._import_params(header)
        state_cls = self._file_state_classes.get(header["solver"], self._state_class)
        state = state_cls.from_file(header, arrays, scoring_only)
        self._import_common(header, state)
        self._import_encoder(header, arrays, state)
        self._state = state

    def _import_params(self, header):
        """Re-initialise from the saved hyper-parameters; return the table dtype."""
        params = header.get("params", {})
        valid = self._get_param_names()
        self.__init__(**{k: v for k, v in params.items() if k in valid})
        if "classes" in header:  # a classifier's state class depends on its classes
            self.classes_ = _decode_labels(header["classes"])
        # kept as a parameter (capped by effective_n_threads when used; cfm
        # predict never uses it), but it must be one
        check_n_jobs(self.n_jobs, "the saved n_jobs")
        if header.get("kind") != self._state_class.kind:
            raise ValueError(f"model kind {header.get('kind')!r} does not match "
                             f"{type(self).__name__}")
        try:
            dtype = np.dtype(header["dtype"])
        except TypeError:
            dtype = None
        if dtype is None or dtype.name not in self._state_class.dtypes:
            raise ValueError(f"unsupported parameter dtype {header['dtype']!r}")
        return dtype

    def _import_common(self, header, state):
        """Restore what the estimator keeps besides its state."""
        if header["task"] not in self._file_tasks():
            raise ValueError(f"a {header['task']} model cannot be a {type(self).__name__}")
        self.n_features_in_ = state.n_features
        self.history_ = [dict(e) for e in header.get("history", [])]
        self.n_epochs_ = int(header.get("n_epochs_", len(self.history_)))
        self.best_epoch_ = int(header.get("best_epoch_", self.n_epochs_))
        # Files written before every model recorded it hold no key: such models
        # were fitted from arrays (fit(path) always recorded it), whose column j
        # is id j.
        zb = header.get("input_zero_based", True)
        self._input_zero_based = bool(zb) if isinstance(zb, bool) else True
        self._rng = np.random.default_rng()
        if "rng_state" in header:  # validated by cfm._model_file (a PCG64 state)
            self._rng.bit_generator.state = header["rng_state"]
        if "best_params" in header:  # a flat object (cfm._model_file.check_header)
            self.best_params_ = dict(header["best_params"])
        if "classes" in header:
            self.classes_ = _decode_labels(header["classes"])
        if "class_weight" in header and "class_weight" in self._get_param_names():
            self.class_weight = {plain(c): w for c, w in zip(self.classes_,
                                                             header["class_weight"])}
        if header.get("feature_names") is not None:
            self.feature_names_in_ = np.asarray(header["feature_names"], dtype=object)
