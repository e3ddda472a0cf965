package daemon

import (
	"io"
	"log/slog"
	"os"
)

// NewLogger logs JSON under systemd (whose journal keeps the fields) and
// text on a terminal.
func NewLogger(w io.Writer) *slog.Logger {
	if os.Getenv("JOURNAL_STREAM") != "" || os.Getenv("LOCKER_LOG_JSON") != "" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
