package store

// LiveGrantMeta is AllGrantMeta of the grants that may still be used or
// revoked: not tombstones and not used up (uses_left 0, which no time and
// no envelope but a newer put brings back). It is what applying a large
// envelope or a snapshot keeps in memory: as many rows as grants live,
// however many ended and wait for the purge (AllGrantMeta holds those
// too). A grant that it leaves out is looked up by id (Grant).
func (t *Tx) LiveGrantMeta() (map[string]GrantMeta, error) {
	rows, err := t.query(`SELECT grant_id, version, revoked, code_hash, valid_until, uses_left, pickup_id, pickup_code, issued_at
		FROM grants WHERE revoked = 0 AND uses_left <> 0`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]GrantMeta{}
	for rows.Next() {
		var id, until, issued string
		var m GrantMeta
		if err := rows.Scan(&id, &m.Version, &m.Revoked, &m.CodeHash, &until, &m.UsesLeft, &m.PickupID, &m.PickupCode,
			&issued); err != nil {
			return nil, err
		}
		m.ValidUntil, m.IssuedAt = parseTime(until), parseTime(issued)
		out[id] = m
	}
	return out, rows.Err()
}
