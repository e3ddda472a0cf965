package store

import "strings"

// LiveGrantMeta is AllGrantMeta of the grants that may still be used or
// revoked: not tombstones and not used up (uses_left 0, which no time and
// no envelope but a newer put brings back). It is what applying a large
// envelope or a snapshot keeps in memory: as many rows as grants live,
// however many ended and wait for the purge (AllGrantMeta holds those
// too). A grant that it leaves out is looked up by id (Grant).
func (t *Tx) LiveGrantMeta() (map[string]GrantMeta, error) {
	return t.grantMeta("revoked = 0 AND uses_left <> 0")
}

// versionsChunk is how many ids one GrantVersions query asks for; a short
// last chunk repeats its first id, so that one prepared statement serves.
const versionsChunk = 256

// GrantVersions returns the version of each grant in ids that is stored
// (tombstones included); an id not stored is absent from the map. It asks
// in chunks of versionsChunk ids, so that applying a large envelope looks
// up the grants it names in a few hundred queries rather than one per op,
// with memory as the envelope, not as the table.
func (t *Tx) GrantVersions(ids []string) (map[string]int64, error) {
	out := make(map[string]int64, len(ids))
	q := "SELECT grant_id, version FROM grants WHERE grant_id IN (?" + strings.Repeat(", ?", versionsChunk-1) + ")"
	args := make([]any, versionsChunk)
	for len(ids) > 0 {
		n := min(len(ids), versionsChunk)
		for i := range args {
			if i < n {
				args[i] = ids[i]
			} else {
				args[i] = ids[0]
			}
		}
		ids = ids[n:]
		rows, err := t.query(q, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id string
			var v int64
			if err := rows.Scan(&id, &v); err != nil {
				rows.Close()
				return nil, err
			}
			out[id] = v
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
