"""Compatibility names for issue 12's merge (the lead removes this module):
the model file reader now lives in cfm/_container.py (the container) and
cfm/_model_file.py (the "cfm-model" format).  Settings such as the read
block sizes are cfm._container's (``_WHOLE_BYTES``, ``_EAGER_BYTES``,
``_BLOCK_BYTES``)."""
from ._container import ChecksumError, SizeError  # noqa: F401
from ._readahead import FileArray as _FileArray, Job as _Job, crc32_combine  # noqa: F401
from ._model_file import open_model_file as _ModelFile, peek_header  # noqa: F401
