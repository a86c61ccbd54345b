"""STOMP transactions of one connection, bounded.

BEGIN opens a transaction; SEND, ACK and NACK frames that name it are held until COMMIT
applies them in order (or ABORT drops them). What is held is what COMMIT needs: for a
SEND, its channel and publication data, already checked; for ACK and NACK, nothing but
their count. Three bounds keep a connection from buffering without end
(``[stomp] max_transactions``, ``max_transaction_frames``, ``max_transaction_bytes``):
passing one raises ``TransactionLimit``, which the session answers with ERROR and a close.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class TransactionLimits:
    """0 means unlimited."""

    #: transactions open at once on one connection
    max_open: int = 4
    #: SEND, ACK and NACK frames in one transaction
    max_frames: int = 1000
    #: bytes of publication data and channel names held by one transaction
    max_bytes: int = 1048576


class TransactionLimit(Exception):
    """A bound was passed; ``message`` names it (the ERROR frame's ``message`` header)."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class Transaction:
    """One open transaction: the publications COMMIT will make, in order."""

    __slots__ = ("frames", "limits", "name", "sends", "size")

    def __init__(self, name: str, limits: TransactionLimits) -> None:
        self.name = name
        self.limits = limits
        self.sends: list[tuple[str, bytes]] = []
        self.frames = 0
        self.size = 0

    def add_frame(self) -> None:
        """Count one more frame (an ACK or a NACK, or a SEND through ``add_send``)."""
        limit = self.limits.max_frames
        if limit and self.frames >= limit:
            raise TransactionLimit(
                "limit exceeded: too many frames in transaction",
                f"transaction {self.name} may hold at most {limit} frames "
                "(stomp.max_transaction_frames)",
            )
        self.frames += 1

    def add_send(self, channel: str, data: bytes) -> None:
        """Hold a checked publication for COMMIT."""
        self.add_frame()
        size = self.size + len(channel) + len(data)
        limit = self.limits.max_bytes
        if limit and size > limit:
            raise TransactionLimit(
                "limit exceeded: transaction too large",
                f"transaction {self.name} may hold at most {limit} bytes "
                "(stomp.max_transaction_bytes)",
            )
        self.size = size
        self.sends.append((channel, data))


class Transactions:
    """The open transactions of one connection, by name."""

    __slots__ = ("limits", "open")

    def __init__(self, limits: TransactionLimits) -> None:
        self.limits = limits
        self.open: dict[str, Transaction] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.open

    def begin(self, name: str) -> Transaction:
        """Open ``name`` (the caller has checked it is not open already)."""
        limit = self.limits.max_open
        if limit and len(self.open) >= limit:
            raise TransactionLimit(
                "limit exceeded: too many open transactions",
                f"at most {limit} transactions may be open at once (stomp.max_transactions)",
            )
        transaction = self.open[name] = Transaction(name, self.limits)
        return transaction

    def get(self, name: str) -> Transaction | None:
        return self.open.get(name)

    def pop(self, name: str) -> Transaction | None:
        return self.open.pop(name, None)
