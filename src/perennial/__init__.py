"""perennial: continual learning you can measure.

Layers (imports point downward only): cli > report > api/config > store > train >
strategies > memory > evaluation > models > streams.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``perennial.experiment``: imported on first use (``import perennial`` stays cheap)."""
    if name == "experiment":
        from perennial.experiments import experiment

        return experiment
    raise AttributeError(f"module 'perennial' has no attribute {name!r}")
