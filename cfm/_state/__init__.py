"""Model state objects: each owns a model's parameters (allocation, layout,
init, one epoch, decision, finiteness, snapshot / restore, export / import).
See base.py for the protocol."""
from .base import Hyper, ModelState
from .deepfm import DeepFMState
from .ffm import FFMTable
from .fm import FMTable
from .fwfm import FwFMTable
from .mcmc import MCMCSamples
from .softmax import SoftmaxFMTable
from .softmax_ffm import SoftmaxFFMTable

__all__ = ["DeepFMState", "FFMTable", "FMTable", "FwFMTable", "Hyper", "MCMCSamples", "ModelState",
           "SoftmaxFFMTable", "SoftmaxFMTable"]
