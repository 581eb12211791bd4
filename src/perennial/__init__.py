"""perennial: continual learning you can measure.

Layers (imports point downward only): cli > report > api/config > store > train >
strategies > memory > evaluation > models > streams.
"""

__version__ = "0.1.0"
