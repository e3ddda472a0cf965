package store

// LiveGrantMeta is AllGrantMeta of the grants that may still be used or
// revoked: not tombstones and not used up (uses_left 0, which no time and
// no envelope but a newer put brings back). It is what applying a large
// envelope or a snapshot keeps in memory: as many rows as grants live,
// however many ended and wait for the purge (AllGrantMeta holds those
// too). A grant that it leaves out is looked up by id (Grant).
func (t *Tx) LiveGrantMeta() (map[string]GrantMeta, error) {
	return t.grantMeta("revoked = 0 AND uses_left <> 0")
}
