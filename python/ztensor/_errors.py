"""Exception hierarchy. Messages from the core carry the spec's rule id."""

from __future__ import annotations


class ZTensorError(Exception):
    """Base class of every error ztensor raises.

    Attributes:
        rule: The id of the format rule the file broke (see the spec's
            reject list), or None when the error is not a format violation.
    """

    rule: str | None = None


class FormatError(ZTensorError):
    """The file breaks a rule of the `.zt` format (or of the foreign format
    it was read as: GGUF, safetensors, npy/npz, legacy ztensor)."""


class ChecksumError(FormatError):
    """Stored bytes do not match their digest."""


class LimitError(ZTensorError):
    """A size is above a configured limit."""


class UnsupportedError(ZTensorError):
    """The file is valid but uses a layout, type or encoding we cannot decode."""


class ZTensorIOError(ZTensorError, OSError):
    """The operating system refused an operation."""


class ZTensorFileNotFoundError(ZTensorIOError, FileNotFoundError):
    """The file does not exist."""


class ZTensorKeyError(ZTensorError, KeyError):
    """No tensor has that name."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message plain.
        return str(self.args[0]) if self.args else ""


class ZTensorValueError(ZTensorError, ValueError):
    """The API was called with arguments it does not accept."""


class SnapshotError(ZTensorError):
    """An engine snapshot or state cannot be restored: malformed, truncated
    or corrupt, or not fitting this engine. The engine is left as it was.

    Attributes:
        fault: "malformed", "incompatible", "tokenizer-mismatch" or
            "fingerprint-mismatch".
    """

    fault: str | None = None


class FingerprintMismatchError(SnapshotError):
    """The snapshot was taken with a model of other weights."""
