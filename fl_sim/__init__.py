"""fl-sim: a Flower-based federated simulation harness for privacy-preserving training."""

__version__ = "0.1.0"
