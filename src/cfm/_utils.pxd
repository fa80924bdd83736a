# Codes shared by the kernels and Python, defined once.  ``cpdef enum``: the
# kernels compare against them as C constants, and Python reads them from
# cfm._utils (e.g. cfm._utils.LOSS_LOGISTIC) -- no copied dicts.

# Loss of the per-sample kernels
cpdef enum:
    LOSS_SQUARED = 0
    LOSS_LOGISTIC = 1

# Optimizer of the per-sample kernels
cpdef enum:
    OPT_SGD = 0
    OPT_ADAGRAD = 1
    OPT_FTRL = 2

# Likelihood of the coordinate-wise kernels (ALS / MCMC, src/cfm/_mcmc.pyx)
cpdef enum:
    TASK_REGRESSION = 0
    TASK_PROBIT = 1

# Status codes of check_csr
cpdef enum:
    CSR_OK = 0
    CSR_BAD_FIRST_OFFSET = 1
    CSR_DECREASING_OFFSET = 2
    CSR_BAD_LAST_OFFSET = 3
    CSR_INDEX_OUT_OF_RANGE = 4
    CSR_NONFINITE = 5
