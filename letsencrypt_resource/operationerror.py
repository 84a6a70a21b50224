"""
The error of an operation the operator asked for that cannot be done.
"""

from __future__ import annotations


class OperationError(Exception):
    """
    An operation that cannot be done, with the reason for the operator.
    """
