package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/openlocker/locker/controller/wire"
	"github.com/openlocker/locker/sync/protocol"
)

// common are the flags every publishing command takes.
type common struct {
	broker, locker, key string
	wait                time.Duration
	conn                connFlags
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.key, "key", "var/central-dev.json", "central key pair file that signs")
	fs.DurationVar(&c.wait, "wait", 10*time.Second, "how long to wait for the locker's answer")
	c.conn.register(fs, &c.broker, &c.locker)
}

// connFlags say how to reach the broker (TLS files and credentials are
// optional).
type connFlags struct {
	ca, cert, certKey, user, passwordFile string
}

func (f *connFlags) register(fs *flag.FlagSet, broker, locker *string) {
	fs.StringVar(broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker (tcp://host:port or ssl://host:port)")
	fs.StringVar(locker, "locker", "SIM01", "locker id")
	fs.StringVar(&f.ca, "ca", "", "ssl://: CA certificate file that signed the broker's certificate")
	fs.StringVar(&f.cert, "cert", "", "ssl://: client certificate file (mutual TLS)")
	fs.StringVar(&f.certKey, "cert-key", "", "ssl://: the client certificate's private key file")
	fs.StringVar(&f.user, "user", "", "MQTT user name")
	fs.StringVar(&f.passwordFile, "password-file", "", "file holding the MQTT password")
}

func keygen(args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	id := fs.String("id", "central", "key id")
	out := fs.String("out", "central-key.json", "key pair file to write (mode 0600)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := os.Stat(*out); err == nil {
		return fmt.Errorf("%s exists: refusing to overwrite a key", *out)
	}
	kp, err := protocol.GenerateKeyPair(*id)
	if err != nil {
		return err
	}
	if err := protocol.SaveKeyPair(*out, kp); err != nil {
		return err
	}
	fmt.Printf("wrote %s\npublic key (for -central-key or central_keys): %s\n", *out, kp.PublicString())
	return nil
}

// readCode takes a code from the flag, or from standard input for "-", and
// checks its form. The code itself is never printed.
func readCode(name, v string) (string, error) {
	if v == "-" {
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return "", fmt.Errorf("-%s: reading standard input: %w", name, err)
		}
		v = strings.TrimSpace(line)
	}
	if len(v) < 6 || len(v) > 12 || strings.Trim(v, "0123456789") != "" {
		return "", fmt.Errorf("-%s: a code is 6 to 12 digits", name)
	}
	return v, nil
}

func grantPut(args []string) error { return putGrant("grant put", args) }

// grantTransfer hands a grant's right over to another person: a put of the
// same grant id with a higher version (default: now in milliseconds) and the
// new holder and code. From then on the old code opens nothing. The central
// server knows the grant's other fields; give them as for put.
func grantTransfer(args []string) error { return putGrant("grant transfer", args) }

func putGrant(name string, args []string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var c common
	c.register(fs)
	now := time.Now().UTC()
	id := fs.String("id", fmt.Sprintf("g-%d", now.UnixMilli()), "grant id")
	version := fs.Int64("version", now.UnixMilli(), "grant version (must go up)")
	action := fs.String("action", "deposit", "deposit, pickup, reclaim or service")
	size := fs.String("size", "", "deposit: S, M, L or XL")
	compartment := fs.Int("compartment", 0, "compartment number (reserved deposit, pickup, reclaim)")
	parcel := fs.String("parcel", "", "parcel id")
	holder := fs.String("holder", "", "holder's phone number (the locker keeps it masked)")
	code := fs.String("code", "", "the keypad code, 6 to 12 digits ('-' reads it from standard input)")
	valid := fs.Duration("valid", 24*time.Hour, "valid for this long from now")
	uses := fs.Int("uses", 0, "uses (default 1; service: unlimited)")
	pickupID := fs.String("pickup-id", "", "deposit: id of the nested pickup grant (default GRANT_ID-p when -pickup-code is set)")
	pickupCode := fs.String("pickup-code", "", "deposit: the recipient's code for the nested pickup grant")
	pickupHolder := fs.String("pickup-holder", "", "deposit: the recipient's phone number")
	pickupValid := fs.Duration("pickup-valid", 72*time.Hour, "deposit: how long the recipient may pick up")
	snapshot := fs.Bool("snapshot", false, "send as a snapshot: every other grant is revoked")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if name == "grant transfer" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, need := range []string{"id", "holder", "code"} {
			if !set[need] {
				return fmt.Errorf("%s: -%s is required (the grant, its new holder and the new code)", name, need)
			}
		}
	}
	cd, err := readCode("code", *code)
	if err != nil {
		return err
	}
	until := now.Add(*valid)
	op := wire.GrantOp{Op: "put", GrantID: *id, Version: *version, Action: *action, Size: *size,
		Compartment: *compartment, ParcelID: *parcel, Holder: *holder, CodeHash: wire.CodeHash(c.locker, cd),
		ValidFrom: &now, ValidUntil: &until}
	if *uses > 0 {
		op.Uses = uses
	}
	if *pickupCode != "" {
		pc, err := readCode("pickup-code", *pickupCode)
		if err != nil {
			return err
		}
		if *pickupID == "" {
			*pickupID = *id + "-p"
		}
		pu := now.Add(*pickupValid)
		op.Pickup = &wire.PickupSpec{GrantID: *pickupID, Holder: *pickupHolder,
			CodeHash: wire.CodeHash(c.locker, pc), ValidUntil: &pu}
	}
	return sendGrants(c, now, *snapshot, op)
}

func grantRevoke(args []string) error {
	fs := flag.NewFlagSet("grant revoke", flag.ContinueOnError)
	var c common
	c.register(fs)
	now := time.Now().UTC()
	id := fs.String("id", "", "grant id")
	version := fs.Int64("version", now.UnixMilli(), "revoke version (must be above the grant's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("grant revoke: -id is required")
	}
	return sendGrants(c, now, false, wire.GrantOp{Op: "revoke", GrantID: *id, Version: *version})
}

// grantSnapshot sends the complete set of a locker's grants: every grant
// not in the file is revoked.
func grantSnapshot(args []string) error {
	fs := flag.NewFlagSet("grant snapshot", flag.ContinueOnError)
	var c common
	c.register(fs)
	file := fs.String("file", "", "JSON file with the list of ops (put or revoke, as in docs/protocol.md); '-' reads standard input")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var data []byte
	var err error
	switch *file {
	case "":
		return errors.New("grant snapshot: -file is required")
	case "-":
		data, err = io.ReadAll(os.Stdin)
	default:
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		return fmt.Errorf("grant snapshot: %w", err)
	}
	ops := []wire.GrantOp{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ops); err != nil {
		return fmt.Errorf("grant snapshot: %s: want a JSON list of ops: %w", *file, err)
	}
	if ops == nil {
		ops = []wire.GrantOp{}
	}
	return sendGrants(c, time.Now().UTC(), true, ops...)
}

func sendGrants(c common, now time.Time, snapshot bool, ops ...wire.GrantOp) error {
	if ops == nil {
		ops = []wire.GrantOp{} // "ops": [], never null
	}
	body, err := json.Marshal(wire.GrantsBody{Kind: "grants", LockerID: c.locker, IssuedAt: now,
		ExpiresAt: now.Add(time.Hour), Snapshot: snapshot, Ops: ops})
	if err != nil {
		return err
	}
	reply, err := publish(c, "grants", body, "grants/ack", func([]byte) bool { return true })
	if err != nil {
		return err
	}
	fmt.Println(string(reply))
	var ack wire.GrantsAck
	if json.Unmarshal(reply, &ack) == nil && len(ack.Rejected) > 0 {
		return fmt.Errorf("%d op(s) rejected", len(ack.Rejected))
	}
	return nil
}

func command(args []string) error {
	fs := flag.NewFlagSet("command", flag.ContinueOnError)
	var c common
	c.register(fs)
	now := time.Now().UTC()
	id := fs.String("id", fmt.Sprintf("c-%d", now.UnixMilli()), "command id (runs at most once)")
	action := fs.String("action", "", "open, disable or enable")
	compartment := fs.Int("compartment", 0, "compartment number")
	reason := fs.String("reason", "technician", "why, for the trace")
	if err := fs.Parse(args); err != nil {
		return err
	}
	body, err := json.Marshal(wire.Command{Kind: "command", LockerID: c.locker, CommandID: *id, IssuedAt: now,
		ExpiresAt: now.Add(time.Minute), Action: *action, Compartment: *compartment, Reason: *reason})
	if err != nil {
		return err
	}
	reply, err := publish(c, "commands", body, "commands/result", func(b []byte) bool {
		var r wire.CommandResult
		return json.Unmarshal(b, &r) == nil && r.CommandID == *id
	})
	if err != nil {
		return err
	}
	fmt.Println(string(reply))
	var r wire.CommandResult
	if json.Unmarshal(reply, &r) == nil && !r.OK {
		return fmt.Errorf("command failed: %s", r.Error)
	}
	return nil
}

func codeHash(args []string) error {
	fs := flag.NewFlagSet("code-hash", flag.ContinueOnError)
	locker := fs.String("locker", "SIM01", "locker id")
	code := fs.String("code", "-", "the code ('-' reads it from standard input)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cd, err := readCode("code", *code)
	if err != nil {
		return err
	}
	fmt.Println(wire.CodeHash(*locker, cd))
	return nil
}
