-- The team board's state. The demo backend owns it; pushgate only carries changes.
PRAGMA foreign_keys = ON;

CREATE TABLE IF NOT EXISTS users (
    id          TEXT PRIMARY KEY,          -- also the JWT `sub` and the `#user` of channels
    name        TEXT NOT NULL,
    color       TEXT NOT NULL,             -- avatar background
    notif_stamp INTEGER NOT NULL DEFAULT 0 -- bumped on every change to the user's notifications
);

CREATE TABLE IF NOT EXISTS boards (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS board_members (
    board_id INTEGER NOT NULL REFERENCES boards(id),
    user_id  TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (board_id, user_id)
);

CREATE TABLE IF NOT EXISTS cards (
    id          INTEGER PRIMARY KEY,
    board_id    INTEGER NOT NULL REFERENCES boards(id),
    column_name TEXT NOT NULL CHECK (column_name IN ('todo', 'doing', 'done')),
    position    REAL NOT NULL,             -- order inside the column (fractional: a move touches one row)
    title       TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    assignee    TEXT REFERENCES users(id),
    version     INTEGER NOT NULL,          -- +1 on every write: clients apply only newer versions
    deleted     INTEGER NOT NULL DEFAULT 0,-- a tombstone, so a delete has a version too
    updated_by  TEXT,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cards_by_board ON cards(board_id, column_name, position);

CREATE TABLE IF NOT EXISTS notifications (
    id         INTEGER PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    kind       TEXT NOT NULL,              -- 'assigned' or 'mention'
    actor      TEXT NOT NULL REFERENCES users(id),
    board_id   INTEGER NOT NULL,
    card_id    INTEGER NOT NULL,
    text       TEXT NOT NULL,
    created_at REAL NOT NULL,
    read       INTEGER NOT NULL DEFAULT 0, -- unused: read positions are pushgate's (mark_read)
    pos_offset INTEGER,                    -- where pushgate published it in notifications:#<user>
    pos_epoch  TEXT
);
CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications(user_id, id);

-- notifications nobody saw in time, as pushgate handed them off (one row per event id)
CREATE TABLE IF NOT EXISTS handoffs (
    event_id        TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    notification_id INTEGER,
    text            TEXT NOT NULL,
    at              REAL NOT NULL
);
