"""The DP-DCGAN task: models, local training, public prior, metrics, and the writer of its files."""
