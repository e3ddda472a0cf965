package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// CodeHash is the lowercase hex SHA-256 of "{lockerID}:{code}", the only form
// in which a keypad code is ever sent, stored or compared.
func CodeHash(lockerID, code string) string {
	sum := sha256.Sum256([]byte(lockerID + ":" + code))
	return hex.EncodeToString(sum[:])
}

// MaskHolder replaces all but the first three and the last four characters of
// a holder (a phone number) with '*': "13488888888" → "134****8888". Holders
// of seven characters or fewer are masked whole, so that nothing of a short
// identifier leaks.
func MaskHolder(holder string) string {
	r := []rune(holder)
	if len(r) == 0 {
		return ""
	}
	if len(r) <= 7 {
		return strings.Repeat("*", len(r))
	}
	return string(r[:3]) + strings.Repeat("*", len(r)-7) + string(r[len(r)-4:])
}
