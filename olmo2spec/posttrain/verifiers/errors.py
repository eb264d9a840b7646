"""What a verifier raises: the data is wrong, or a package it needs is missing.

A wrong *response* is never an error: it scores 0.0. These are for the things a training run
cannot fix by sampling again, so the RLVR stage stops on them instead of training on zeros.
"""

from __future__ import annotations

__all__ = ["VerifierError", "GroundTruthError", "VerifierUnavailable"]


class VerifierError(Exception):
    """A verifier cannot score: an unknown verifier name, bad ground truth, a missing package."""


class GroundTruthError(VerifierError, ValueError):
    """A prompt's ground truth is malformed for its verifier; the message says which field and how to fix it."""


class VerifierUnavailable(VerifierError, ImportError):
    """A verifier's package is not installed; the message names the extra to install."""
