"""Registers for models trained without them: test-time registers, the neuron search, norm diagnostics."""
