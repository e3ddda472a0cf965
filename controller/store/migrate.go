package store

import (
	"context"
	"fmt"
)

// migrations are applied in order, each in its own transaction; the number
// of applied migrations is kept in PRAGMA user_version. Never edit a
// migration that has shipped: append a new one.
var migrations = []string{
	// 1: the first schema.
	`
CREATE TABLE compartments (
	number         INTEGER PRIMARY KEY,
	size           TEXT NOT NULL,
	state          TEXT NOT NULL DEFAULT 'free', -- free, reserved, occupied, expired, fault
	disabled       INTEGER NOT NULL DEFAULT 0,
	door_open      INTEGER NOT NULL DEFAULT 0,   -- last debounced reading
	parcel_present INTEGER NOT NULL DEFAULT 0,   -- last debounced reading (0 without a sensor)
	parcel_id      TEXT NOT NULL DEFAULT '',
	session_grant  TEXT NOT NULL DEFAULT '',     -- grant (or command) whose release opened the door
	session_action TEXT NOT NULL DEFAULT '',     -- deposit, pickup, reclaim, service, command
	session_actor  TEXT NOT NULL DEFAULT '',     -- masked holder
	session_parcel TEXT NOT NULL DEFAULT '',
	session_at     TEXT NOT NULL DEFAULT '',     -- when the release intent was recorded
	session_opened INTEGER NOT NULL DEFAULT 0    -- the door was seen open during the session
) STRICT;

CREATE TABLE grants (
	grant_id     TEXT PRIMARY KEY,
	version      INTEGER NOT NULL,
	revoked      INTEGER NOT NULL DEFAULT 0,     -- a tombstone: the version stays, the rest is cleared
	action       TEXT NOT NULL DEFAULT '',
	compartment  INTEGER NOT NULL DEFAULT 0,
	size         TEXT NOT NULL DEFAULT '',
	parcel_id    TEXT NOT NULL DEFAULT '',
	actor        TEXT NOT NULL DEFAULT '',       -- the masked holder; the full number is never stored
	code_hash    TEXT NOT NULL DEFAULT '',
	valid_from   TEXT NOT NULL DEFAULT '',
	valid_until  TEXT NOT NULL DEFAULT '',
	uses_left    INTEGER NOT NULL DEFAULT 1,     -- -1: unlimited
	pickup       TEXT NOT NULL DEFAULT '',       -- JSON of the nested pickup grant (hashes and masked holder only)
	expired_sent INTEGER NOT NULL DEFAULT 0      -- pickup_expired was emitted
) STRICT;
CREATE INDEX grants_code ON grants(code_hash) WHERE revoked = 0 AND code_hash <> '';
CREATE INDEX grants_compartment ON grants(compartment) WHERE revoked = 0 AND compartment <> 0;
CREATE INDEX grants_until ON grants(valid_until) WHERE revoked = 0 AND action = 'pickup' AND expired_sent = 0;

CREATE TABLE outbox (
	seq     INTEGER PRIMARY KEY,
	payload BLOB NOT NULL
) STRICT;

CREATE TABLE counters (
	name  TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) STRICT;
INSERT INTO counters(name, value) VALUES ('seq', 0);

CREATE TABLE commands (
	command_id TEXT PRIMARY KEY,
	ok         INTEGER NOT NULL,
	error      TEXT NOT NULL,
	at         TEXT NOT NULL
) STRICT;

CREATE TABLE settings (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) STRICT;
`,
	// 2: why a compartment is in state fault (lock, sensor), so that the
	// right event clears it.
	`ALTER TABLE compartments ADD COLUMN fault TEXT NOT NULL DEFAULT '';`,
	// 3: each outbox event's type, so that routine events can be dropped
	// first when the outbox is full (parcel events never are).
	`ALTER TABLE outbox ADD COLUMN type TEXT NOT NULL DEFAULT '';`,
	// 4: the reservations are looked up every second and after every door
	// change: index only the deposit grants that name a compartment, so the
	// lookup does not walk every pickup grant (100,000 of them took tens of
	// milliseconds, and a key typed meanwhile waited).
	`CREATE INDEX grants_reserving ON grants(compartment) WHERE revoked = 0 AND action = 'deposit' AND compartment <> 0;`,
	// 5: no query looks grants up by compartment any more (4 replaced the
	// one that did); the index only cost a write per grant.
	`DROP INDEX grants_compartment;`,
	// 6: the state machine's columns hold only its values (CHECK), and the
	// facts that bind a right to what it was issued for:
	//   - compartments.parcel_seq: the parcel in the compartment, named by
	//     the seq of the trace that put it there (deposited, parcel_found);
	//     0 when empty. A pickup brought into force by a deposit is bound to
	//     it (grants.parcel_seq), so that it opens nothing once that parcel
	//     is gone, whether or not the central named a parcel id.
	//   - grants.issued_at: the issued_at of the envelope that last put or
	//     revoked the grant, so that a snapshot delivered again (or late)
	//     revokes nothing that a newer envelope put.
	// SQLite adds CHECK constraints only by rebuilding the table.
	`
CREATE TABLE compartments_new (
	number         INTEGER PRIMARY KEY,
	size           TEXT NOT NULL,
	state          TEXT NOT NULL DEFAULT 'free' CHECK (state IN ('free', 'reserved', 'occupied', 'expired', 'fault')),
	disabled       INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
	door_open      INTEGER NOT NULL DEFAULT 0 CHECK (door_open IN (0, 1)),
	parcel_present INTEGER NOT NULL DEFAULT 0 CHECK (parcel_present IN (0, 1)),
	parcel_id      TEXT NOT NULL DEFAULT '',
	session_grant  TEXT NOT NULL DEFAULT '',
	session_action TEXT NOT NULL DEFAULT '' CHECK (session_action IN ('', 'deposit', 'pickup', 'reclaim', 'service', 'command', 'selftest')),
	session_actor  TEXT NOT NULL DEFAULT '',
	session_parcel TEXT NOT NULL DEFAULT '',
	session_at     TEXT NOT NULL DEFAULT '',
	session_opened INTEGER NOT NULL DEFAULT 0 CHECK (session_opened IN (0, 1)),
	fault          TEXT NOT NULL DEFAULT '' CHECK (fault IN ('', 'lock', 'sensor', 'parcel')),
	parcel_seq     INTEGER NOT NULL DEFAULT 0 CHECK (parcel_seq >= 0),
	CHECK ((state = 'fault') = (fault <> '')),
	CHECK (state IN ('occupied', 'expired') OR parcel_id = ''),
	CHECK (session_action <> '' OR (session_grant = '' AND session_opened = 0))
) STRICT;
INSERT INTO compartments_new(number, size, state, disabled, door_open, parcel_present, parcel_id, session_grant,
	session_action, session_actor, session_parcel, session_at, session_opened, fault)
SELECT number, size, state, disabled, door_open, parcel_present, parcel_id, session_grant,
	session_action, session_actor, session_parcel, session_at, session_opened,
	CASE WHEN state = 'fault' AND fault = '' THEN 'lock' WHEN state <> 'fault' THEN '' ELSE fault END
FROM compartments;
DROP TABLE compartments;
ALTER TABLE compartments_new RENAME TO compartments;
ALTER TABLE grants ADD COLUMN parcel_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE grants ADD COLUMN issued_at TEXT NOT NULL DEFAULT '';
`,
	// 7: the grant_id and code hash of the pickup grant nested in a deposit
	// grant, as columns of their own (they were only inside the pickup
	// JSON), so that a code is checked for uniqueness against the pickups
	// that will come into force at deposit too, and looked up by index.
	// Rows of earlier versions are filled from their JSON.
	`
ALTER TABLE grants ADD COLUMN pickup_id TEXT NOT NULL DEFAULT '';
ALTER TABLE grants ADD COLUMN pickup_code TEXT NOT NULL DEFAULT '';
UPDATE grants SET
	pickup_id = COALESCE(json_extract(pickup, '$.grant_id'), ''),
	pickup_code = COALESCE(json_extract(pickup, '$.code_hash'), '')
WHERE pickup <> '' AND json_valid(pickup);
CREATE INDEX grants_pickup_code ON grants(pickup_code) WHERE revoked = 0 AND pickup_code <> '';
`,
	// 8: parcel_missing was recorded for the parcel the compartment holds
	// (and not its return): it is reported once, and its return is news,
	// across restarts too.
	`ALTER TABLE compartments ADD COLUMN parcel_missing INTEGER NOT NULL DEFAULT 0
	CHECK (parcel_missing IN (0, 1) AND (parcel_missing = 0 OR state IN ('occupied', 'expired')));`,
	// 9: bounded storage (Purge). ended_at: when a grant's last use was
	// taken. Rows stored before this version have no issued_at or ended_at:
	// they count from the upgrade, so that the first purge after it waits
	// the whole horizon like any other. The commands are purged by their
	// time (at), looked up by index.
	`
ALTER TABLE grants ADD COLUMN ended_at TEXT NOT NULL DEFAULT '';
UPDATE grants SET issued_at = strftime('%Y-%m-%dT%H:%M:%f000000Z', 'now') WHERE issued_at = '';
UPDATE grants SET ended_at = strftime('%Y-%m-%dT%H:%M:%f000000Z', 'now') WHERE uses_left = 0 AND revoked = 0;
CREATE INDEX commands_at ON commands(at);
`,
	// 10: grants are kept in the order of their grant_id (WITHOUT ROWID):
	// the table is its primary key's b-tree, so a grant written at a door
	// (a use taken, a pickup brought into force) writes one page of it,
	// not a row page and a page of the grant_id index besides; and a
	// nested pickup grant, whose id is usually its deposit's with a
	// suffix, lands on its deposit's page. The purge deletes by grant_id.
	`
CREATE TABLE grants_new (
	grant_id     TEXT PRIMARY KEY,
	version      INTEGER NOT NULL,
	revoked      INTEGER NOT NULL DEFAULT 0,
	action       TEXT NOT NULL DEFAULT '',
	compartment  INTEGER NOT NULL DEFAULT 0,
	size         TEXT NOT NULL DEFAULT '',
	parcel_id    TEXT NOT NULL DEFAULT '',
	actor        TEXT NOT NULL DEFAULT '',
	code_hash    TEXT NOT NULL DEFAULT '',
	valid_from   TEXT NOT NULL DEFAULT '',
	valid_until  TEXT NOT NULL DEFAULT '',
	uses_left    INTEGER NOT NULL DEFAULT 1,
	pickup       TEXT NOT NULL DEFAULT '',
	expired_sent INTEGER NOT NULL DEFAULT 0,
	parcel_seq   INTEGER NOT NULL DEFAULT 0,
	issued_at    TEXT NOT NULL DEFAULT '',
	pickup_id    TEXT NOT NULL DEFAULT '',
	pickup_code  TEXT NOT NULL DEFAULT '',
	ended_at     TEXT NOT NULL DEFAULT ''
) STRICT, WITHOUT ROWID;
INSERT INTO grants_new(grant_id, version, revoked, action, compartment, size, parcel_id, actor, code_hash, valid_from,
	valid_until, uses_left, pickup, expired_sent, parcel_seq, issued_at, pickup_id, pickup_code, ended_at)
SELECT grant_id, version, revoked, action, compartment, size, parcel_id, actor, code_hash, valid_from,
	valid_until, uses_left, pickup, expired_sent, parcel_seq, issued_at, pickup_id, pickup_code, ended_at
FROM grants;
DROP TABLE grants;
ALTER TABLE grants_new RENAME TO grants;
CREATE INDEX grants_code ON grants(code_hash) WHERE revoked = 0 AND code_hash <> '';
CREATE INDEX grants_until ON grants(valid_until) WHERE revoked = 0 AND action = 'pickup' AND expired_sent = 0;
CREATE INDEX grants_reserving ON grants(compartment) WHERE revoked = 0 AND action = 'deposit' AND compartment <> 0;
CREATE INDEX grants_pickup_code ON grants(pickup_code) WHERE revoked = 0 AND pickup_code <> '';
`,
}

func (s *Store) migrate(ctx context.Context) error {
	var v int
	if err := s.conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this software (%d): refusing to touch it", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		err := s.Update(ctx, func(tx *Tx) error {
			if _, err := tx.exec(migrations[i]); err != nil {
				return err
			}
			_, err := tx.exec(fmt.Sprintf("PRAGMA user_version = %d", i+1))
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	return nil
}
