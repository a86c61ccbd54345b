"""The team board's state in SQLite: users, boards, cards (with versions), notifications.

Every method is synchronous and short; the web handlers run them with
``asyncio.to_thread`` so a slow disk never stalls the event loop that also carries
pushgate's connections. One connection is shared behind a lock, and every write is one
``BEGIN IMMEDIATE`` transaction: SQLite puts concurrent writes in one order, and each
card's ``version`` grows by one per write. Clients apply a card only if its version is
newer than theirs, so every screen ends in the order the database chose.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).with_name("schema.sql")
COLUMNS = ("todo", "doing", "done")
COLUMN_TITLES = {"todo": "To do", "doing": "Doing", "done": "Done"}
MAX_TITLE = 200
MAX_DESCRIPTION = 4000

DEMO_USERS = [
    ("alice", "Alice Chen", "#e8590c"),
    ("bob", "Bob Li", "#1c7ed6"),
    ("carol", "Carol Wang", "#2f9e44"),
    ("dave", "Dave Zhang", "#9c36b5"),
    ("erin", "Erin Zhou", "#c2255c"),
]
DEMO_BOARDS = [
    (1, "Website launch", ["alice", "bob", "carol", "dave"]),
    (2, "Mobile app", ["alice", "bob", "erin"]),
]
DEMO_CARDS = [
    (1, "todo", "Write the launch blog post", "Draft, then @carol reviews.", "carol"),
    (1, "todo", "Pricing page copy", "", None),
    (1, "todo", "Set up status page", "", "dave"),
    (1, "doing", "New landing page", "Hero, features, testimonials.", "alice"),
    (1, "doing", "Fix signup e-mail", "Links point at staging.", "bob"),
    (1, "done", "Pick the launch date", "", "alice"),
    (2, "todo", "Push notifications on iOS", "", "erin"),
    (2, "doing", "Offline mode", "Queue edits while offline.", "bob"),
    (2, "done", "App icon", "", "alice"),
]

MENTION = re.compile(r"(?<![\w@])@([A-Za-z][A-Za-z0-9_.-]*)")


class NotFound(Exception):
    """The board, card or user does not exist (or the card is deleted)."""


class Invalid(ValueError):
    """A field has a value the board does not accept; the message says which."""


@dataclass
class Change:
    """What one write did: the card's new state, and the notifications it created."""

    card: dict[str, Any]
    notices: list[dict[str, Any]] = field(default_factory=list)
    """Per notified user: ``{user, notification}``."""


def _card(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "board_id": row["board_id"],
        "column": row["column_name"],
        "position": row["position"],
        "title": row["title"],
        "description": row["description"],
        "assignee": row["assignee"],
        "version": row["version"],
        "deleted": bool(row["deleted"]),
        "updated_by": row["updated_by"],
        "updated_at": row["updated_at"],
    }


def _notification(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "actor": row["actor"],
        "board_id": row["board_id"],
        "card_id": row["card_id"],
        "text": row["text"],
        "created_at": row["created_at"],
        # where pushgate published it (None if publishing failed): read positions are
        # pushgate's, "read up to this offset of notifications:#<user>"
        "offset": row["pos_offset"],
        "epoch": row["pos_epoch"],
    }


class Store:
    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode = WAL")
        self._migrate()
        self._db.executescript(SCHEMA.read_text())
        self._seed()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        """A database made before notifications kept their position gets the columns."""
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(notifications)")}
        if columns and "pos_offset" not in columns:
            self._db.execute("ALTER TABLE notifications ADD COLUMN pos_offset INTEGER")
            self._db.execute("ALTER TABLE notifications ADD COLUMN pos_epoch TEXT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _seed(self) -> None:
        with self._write() as db:
            if db.execute("SELECT 1 FROM users LIMIT 1").fetchone():
                return
            db.executemany("INSERT INTO users (id, name, color) VALUES (?, ?, ?)", DEMO_USERS)
            for board_id, name, members in DEMO_BOARDS:
                db.execute("INSERT INTO boards (id, name) VALUES (?, ?)", (board_id, name))
                db.executemany(
                    "INSERT INTO board_members VALUES (?, ?)", [(board_id, m) for m in members]
                )
            now = time.time()
            for n, (board_id, column, title, description, assignee) in enumerate(DEMO_CARDS):
                db.execute(
                    "INSERT INTO cards (board_id, column_name, position, title, description,"
                    " assignee, version, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
                    (board_id, column, float(n + 1), title, description, assignee, now),
                )

    # --- users and boards ---------------------------------------------------------------
    def users(self) -> list[dict[str, Any]]:
        rows = self._read("SELECT id, name, color FROM users ORDER BY rowid")
        return [dict(row) for row in rows]

    def user(self, user_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT id, name, color FROM users WHERE id = ?", user_id)
        return dict(rows[0]) if rows else None

    def boards_for(self, user_id: str) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT b.id, b.name FROM boards b JOIN board_members m ON m.board_id = b.id"
            " WHERE m.user_id = ? ORDER BY b.id",
            user_id,
        )
        return [{**dict(row), "members": self.members(row["id"])} for row in rows]

    def board(self, board_id: int) -> dict[str, Any]:
        rows = self._read("SELECT id, name FROM boards WHERE id = ?", board_id)
        if not rows:
            raise NotFound(f"no board {board_id}")
        return {**dict(rows[0]), "members": self.members(board_id)}

    def members(self, board_id: int) -> list[str]:
        rows = self._read(
            "SELECT m.user_id FROM board_members m JOIN users u ON u.id = m.user_id"
            " WHERE m.board_id = ? ORDER BY u.rowid",
            board_id,
        )
        return [row["user_id"] for row in rows]

    def is_member(self, board_id: int, user_id: str) -> bool:
        return bool(
            self._read(
                "SELECT 1 FROM board_members WHERE board_id = ? AND user_id = ?", board_id, user_id
            )
        )

    def boards_of(self, user_id: str) -> list[int]:
        rows = self._read("SELECT board_id FROM board_members WHERE user_id = ?", user_id)
        return [row["board_id"] for row in rows]

    # --- cards ----------------------------------------------------------------------------
    def cards(self, board_id: int) -> list[dict[str, Any]]:
        """Every card of the board, tombstones included (a client merging by version
        needs them to know a card it holds was deleted)."""
        rows = self._read(
            "SELECT * FROM cards WHERE board_id = ? ORDER BY column_name, position, id", board_id
        )
        return [_card(row) for row in rows]

    def card(self, card_id: int) -> dict[str, Any]:
        rows = self._read("SELECT * FROM cards WHERE id = ?", card_id)
        if not rows:
            raise NotFound(f"no card {card_id}")
        return _card(rows[0])

    def create_card(
        self,
        board_id: int,
        actor: str,
        title: str,
        description: str = "",
        column: str = "todo",
        assignee: str | None = None,
    ) -> Change:
        title, description = _check_text(title, description)
        _check_column(column)
        with self._write() as db:
            if not db.execute("SELECT 1 FROM boards WHERE id = ?", (board_id,)).fetchone():
                raise NotFound(f"no board {board_id}")
            _check_assignee(db, board_id, assignee)
            position = _end_of(db, board_id, column)
            cursor = db.execute(
                "INSERT INTO cards (board_id, column_name, position, title, description,"
                " assignee, version, updated_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
                (board_id, column, position, title, description, assignee, actor, time.time()),
            )
            card = _card(
                db.execute("SELECT * FROM cards WHERE id = ?", (cursor.lastrowid,)).fetchone()
            )
            notices = _notify(db, actor, card, old=None)
        return Change(card, notices)

    def update_card(self, card_id: int, actor: str, changes: dict[str, Any]) -> Change:
        """Apply ``changes`` (any of title, description, assignee, column, before,
        deleted) as one new version. ``column`` moves the card: before the card
        ``before`` of that column, or to its end when ``before`` is None."""
        with self._write() as db:
            row = db.execute("SELECT * FROM cards WHERE id = ?", (card_id,)).fetchone()
            if row is None or row["deleted"]:
                raise NotFound(f"no card {card_id}")
            old = _card(row)
            new = dict(old)
            if "title" in changes or "description" in changes:
                new["title"], new["description"] = _check_text(
                    changes.get("title", old["title"]),
                    changes.get("description", old["description"]),
                )
            if "assignee" in changes:
                new["assignee"] = changes["assignee"] or None
                _check_assignee(db, old["board_id"], new["assignee"])
            if "column" in changes:
                _check_column(changes["column"])
                new["column"] = changes["column"]
                new["position"] = _position(
                    db, old["board_id"], card_id, changes["column"], changes.get("before")
                )
            if changes.get("deleted"):
                new["deleted"] = True
            db.execute(
                "UPDATE cards SET column_name = ?, position = ?, title = ?, description = ?,"
                " assignee = ?, deleted = ?, version = version + 1, updated_by = ?,"
                " updated_at = ? WHERE id = ?",
                (
                    new["column"],
                    new["position"],
                    new["title"],
                    new["description"],
                    new["assignee"],
                    int(new["deleted"]),
                    actor,
                    time.time(),
                    card_id,
                ),
            )
            card = _card(db.execute("SELECT * FROM cards WHERE id = ?", (card_id,)).fetchone())
            notices = [] if card["deleted"] else _notify(db, actor, card, old=old)
        return Change(card, notices)

    # --- notifications ----------------------------------------------------------------------
    def notifications(
        self, user_id: str, read: tuple[int, str] | None = None, limit: int = 30
    ) -> dict[str, Any]:
        """Every unread notification and the ``limit`` latest, newest first, each with
        ``read``; ``read`` is pushgate's read position of ``notifications:#<user>``:
        everything up to the notification published there (ids grow with time, so one
        published in an earlier stream is older too)."""
        with self._lock:
            upto = _read_upto(self._db, user_id, read)
            rows = self._db.execute(
                "SELECT * FROM notifications WHERE user_id = ? AND (id > ? OR id IN"
                " (SELECT id FROM notifications WHERE user_id = ? ORDER BY id DESC LIMIT ?))"
                " ORDER BY id DESC",
                (user_id, upto, user_id, limit),
            ).fetchall()
        items = [{**_notification(r), "read": r["id"] <= upto} for r in rows]
        return {"items": items, "unread": sum(1 for n in items if not n["read"]), "read_upto": upto}

    def set_position(self, notification_id: int, offset: int, epoch: str) -> None:
        """Where pushgate published the notification (its publish result)."""
        with self._write() as db:
            db.execute(
                "UPDATE notifications SET pos_offset = ?, pos_epoch = ? WHERE id = ?",
                (offset, epoch, notification_id),
            )

    def record_handoff(
        self, event_id: str, user_id: str, notification_id: int | None, text: str
    ) -> bool:
        """A hand-off from pushgate; False if this event id was already recorded."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO handoffs (event_id, user_id, notification_id, text, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (event_id, user_id, notification_id, text, time.time()),
            )
            return cursor.rowcount == 1

    def handoffs(self, user_id: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT * FROM handoffs WHERE user_id = ? ORDER BY at", user_id)
        return [
            {"notification": r["notification_id"], "text": r["text"], "at": r["at"]} for r in rows
        ]


def _read_upto(db: sqlite3.Connection, user_id: str, read: tuple[int, str] | None) -> int:
    """Id of the newest notification at or before the read position (0: none read)."""
    if read is None:
        return 0
    offset, epoch = read
    row = db.execute(
        "SELECT MAX(id) FROM notifications WHERE user_id = ? AND pos_epoch = ? AND pos_offset <= ?",
        (user_id, epoch, offset),
    ).fetchone()
    return row[0] or 0


# --- helpers (run inside a transaction) ---------------------------------------------------
def _check_text(title: object, description: object) -> tuple[str, str]:
    if not isinstance(title, str) or not title.strip():
        raise Invalid("a card needs a title")
    if not isinstance(description, str):
        raise Invalid("the description must be text")
    if len(title) > MAX_TITLE or len(description) > MAX_DESCRIPTION:
        raise Invalid(
            f"the title (up to {MAX_TITLE} characters) or the description"
            f" (up to {MAX_DESCRIPTION}) is too long"
        )
    return title.strip(), description.strip()


def _check_column(column: object) -> None:
    if column not in COLUMNS:
        raise Invalid(f"there is no column {column!r} (only {', '.join(COLUMNS)})")


def _check_assignee(db: sqlite3.Connection, board_id: int, assignee: object) -> None:
    if assignee is None:
        return
    if (
        not isinstance(assignee, str)
        or not db.execute(
            "SELECT 1 FROM board_members WHERE board_id = ? AND user_id = ?", (board_id, assignee)
        ).fetchone()
    ):
        raise Invalid(f"{assignee!r} is not a member of this board")


def _end_of(db: sqlite3.Connection, board_id: int, column: str, skip: int = 0) -> float:
    row = db.execute(
        "SELECT MAX(position) FROM cards WHERE board_id = ? AND column_name = ? AND deleted = 0"
        " AND id != ?",
        (board_id, column, skip),
    ).fetchone()
    return (row[0] or 0.0) + 1.0


def _position(
    db: sqlite3.Connection, board_id: int, card_id: int, column: str, before: object
) -> float:
    """A position in ``column`` just before card ``before`` (or at the end): halfway
    between it and its predecessor, so only the moved card changes."""
    if before is None or before == card_id:
        return _end_of(db, board_id, column, skip=card_id)
    row = db.execute(
        "SELECT position FROM cards WHERE id = ? AND board_id = ? AND column_name = ?"
        " AND deleted = 0",
        (before, board_id, column),
    ).fetchone()
    if row is None:  # that card moved away meanwhile: the end of the column is as good
        return _end_of(db, board_id, column, skip=card_id)
    prev = db.execute(
        "SELECT MAX(position) FROM cards WHERE board_id = ? AND column_name = ? AND deleted = 0"
        " AND position < ? AND id != ?",
        (board_id, column, row["position"], card_id),
    ).fetchone()[0]
    return (prev + row["position"]) / 2 if prev is not None else row["position"] - 1.0


def _mentions(db: sqlite3.Connection, board_id: int, *texts: str) -> set[str]:
    names = {m.lower().rstrip(".") for text in texts for m in MENTION.findall(text)}
    if not names:
        return set()
    found = set()
    for row in db.execute(
        "SELECT u.id, u.name FROM users u JOIN board_members m ON m.user_id = u.id"
        " WHERE m.board_id = ?",
        (board_id,),
    ):
        if row["id"].lower() in names or row["name"].split()[0].lower() in names:
            found.add(row["id"])
    return found


def _notify(
    db: sqlite3.Connection, actor: str, card: dict[str, Any], old: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Notifications for what this write did to others: a new assignee, new @mentions."""
    actor_name = db.execute("SELECT name FROM users WHERE id = ?", (actor,)).fetchone()
    who = actor_name["name"].split()[0] if actor_name else actor
    wanted: dict[str, str] = {}
    was_mentioned = (
        _mentions(db, card["board_id"], old["title"], old["description"]) if old else set()
    )
    for user in _mentions(db, card["board_id"], card["title"], card["description"]):
        if user not in was_mentioned:
            wanted[user] = "mention"
    if card["assignee"] and card["assignee"] != (old or {}).get("assignee"):
        wanted[card["assignee"]] = "assigned"
    wanted.pop(actor, None)
    notices = []
    now = time.time()
    for user, kind in wanted.items():
        verb = "assigned you" if kind == "assigned" else "mentioned you in"
        text = f"{who} {verb} “{card['title']}”"
        cursor = db.execute(
            "INSERT INTO notifications (user_id, kind, actor, board_id, card_id, text,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user, kind, actor, card["board_id"], card["id"], text, now),
        )
        row = db.execute("SELECT * FROM notifications WHERE id = ?", (cursor.lastrowid,)).fetchone()
        notices.append({"user": user, "notification": _notification(row)})
    return notices
