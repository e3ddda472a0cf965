package store

import (
	"errors"
	"path/filepath"
	"syscall"

	"modernc.org/sqlite"
)

// SQLite's primary result codes that say the storage, not the data, failed.
const (
	sqlitePerm     = 3
	sqliteBusy     = 5
	sqliteReadOnly = 8
	sqliteIOErr    = 10
	sqliteFull     = 13
	sqliteCantOpen = 14
)

// Unavailable says whether err means that the data folder cannot be written
// just now — a full disk, a read-only or vanished folder, an I/O error —
// rather than that a request was wrong or the file is corrupt. Such a
// failure may go away (space is freed, the folder is writable again); the
// locker stays up, refuses every door it could not record, and tries again.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // extended codes keep the primary one in the low byte
		case sqlitePerm, sqliteBusy, sqliteReadOnly, sqliteIOErr, sqliteFull, sqliteCantOpen:
			return true
		}
		return false
	}
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EROFS, syscall.EIO, syscall.EACCES,
		syscall.EPERM, syscall.EDQUOT, syscall.EFBIG} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// MinFree is the room the data folder must have before a storage outage
// caused by a full disk is over: a few kilobytes freed by the database's
// own log, or by another program, are not space returned.
const MinFree = 1 << 20

// FreeBytes is the room left for an unprivileged writer on the file system
// that holds the database.
func (s *Store) FreeBytes() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(s.path), &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
