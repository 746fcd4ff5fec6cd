"""livelearn: real-time machine learning that keeps learning.

Events are joined with what was served into labelled samples, a learner trains on
them online, a gate validates each new version and the server hot-swaps it in.
"""

from livelearn.errors import BadInput, ConfigError, LivelearnError, NotFound, Unavailable

__version__ = "0.1.0"

__all__ = ["BadInput", "ConfigError", "LivelearnError", "NotFound", "Unavailable", "__version__"]
