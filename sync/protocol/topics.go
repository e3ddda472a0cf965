// Package protocol is the locker side of the wire contract with the central
// server (docs/protocol.md, version 1): topic names, signed envelopes, the
// decoding and checking of grants and command bodies, and key files.
//
// It knows nothing of MQTT connections: sync/client moves the bytes, this
// package says what they mean and whether to trust them.
package protocol

// TopicPrefix is the first part of every topic of protocol version 1.
const TopicPrefix = "lockers/v1/"

// Topic suffixes, appended to "lockers/v1/{locker_id}/".
const (
	SuffixGrants         = "grants"          // central → locker, signed envelope, QoS 1
	SuffixCommands       = "commands"        // central → locker, signed envelope, QoS 1
	SuffixGrantsAck      = "grants/ack"      // locker → central, QoS 1
	SuffixCommandsResult = "commands/result" // locker → central, QoS 1
	SuffixTraces         = "traces"          // locker → central, QoS 1
	SuffixStatus         = "status"          // locker → central, QoS 1, retained, last will
	SuffixCompartments   = "compartments"    // locker → central, QoS 1, retained
)

// Topic returns the full topic "lockers/v1/{lockerID}/{suffix}".
func Topic(lockerID, suffix string) string {
	return TopicPrefix + lockerID + "/" + suffix
}

// MaxLockerIDLen is the longest valid locker id.
const MaxLockerIDLen = 32

// ValidLockerID reports whether id is 1 to 32 characters of A-Z a-z 0-9 _ -.
// Such an id is safe as an MQTT client id and as a topic level (no '/', '+'
// or '#').
func ValidLockerID(id string) bool {
	if len(id) == 0 || len(id) > MaxLockerIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
