"""A loopback Hugging Face Hub for reszoo's tests: see README.md beside this file."""

from .cards import HUB_LICENSES, validate_card
from .server import LFS_SIZE_THRESHOLD, Fault, HubServer

__all__ = ["HUB_LICENSES", "LFS_SIZE_THRESHOLD", "Fault", "HubServer", "validate_card"]
