package protocol

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTopic(t *testing.T) {
	if got, want := Topic("610091A01", SuffixGrantsAck), "lockers/v1/610091A01/grants/ack"; got != want {
		t.Errorf("Topic = %q, want %q", got, want)
	}
}

func TestValidLockerID(t *testing.T) {
	for id, want := range map[string]bool{
		"610091A01":             true,
		"a_b-C9":                true,
		strings.Repeat("x", 32): true,
		strings.Repeat("x", 33): false,
		"":                      false,
		"a/b":                   false,
		"a+":                    false,
		"#":                     false,
		"a b":                   false,
		"é":                     false,
	} {
		if got := ValidLockerID(id); got != want {
			t.Errorf("ValidLockerID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestOpen(t *testing.T) {
	for _, v := range openVectors() {
		t.Run(v.name, func(t *testing.T) {
			body, keyID, err := Open(testKeys, v.raw)
			if !errors.Is(err, v.want) || (v.want == nil && err != nil) {
				t.Fatalf("Open: err = %v, want %v", err, v.want)
			}
			if err != nil {
				if body != nil || keyID != "" {
					t.Errorf("Open failed but returned body or key id")
				}
				return
			}
			if keyID != "central-2026" {
				t.Errorf("keyID = %q", keyID)
			}
		})
	}
}

func TestOpenReturnsExactBytes(t *testing.T) {
	body := []byte("{\"kind\": \"grants\" ,\n\"x\":1}") // odd spacing must survive
	raw, err := Seal("central-2026", centralKey, body)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := Open(testKeys, raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Errorf("Open body = %q, want %q", got, body)
	}
}

// TestErrorTextIsSafe checks that reasons never quote the envelope: they end
// up in traces.
func TestErrorTextIsSafe(t *testing.T) {
	evil := `"<script>13488888888"`
	raws := [][]byte{
		[]byte(`{"key_id":` + evil + `,"body":"","sig":"AAAA"}`),
		[]byte(`{"key_id":"central-2026","body":` + evil + `,"sig":"AAAA"}`),
		[]byte(evil),
	}
	for _, raw := range raws {
		_, _, err := Open(testKeys, raw)
		if err == nil || strings.Contains(err.Error(), "1348888") || len(err.Error()) > 80 {
			t.Errorf("Open(%s): err = %v", raw, err)
		}
	}
	bodies := []string{
		withField(grantsBody, "expires_at", evil),
		withField(grantsBody, "issued_at", evil),
		withField(grantsBody, "locker_id", evil),
		withField(grantsBody, "kind", evil),
		strings.Replace(grantsBody, `"version": 7`, `"version": `+evil, 1),
	}
	for _, b := range bodies {
		_, err := DecodeGrants([]byte(b), testLocker, testNow)
		if err == nil || strings.Contains(err.Error(), "1348888") || len(err.Error()) > 80 {
			t.Errorf("DecodeGrants: err = %v", err)
		}
	}
}

func TestDecodeGrants(t *testing.T) {
	for _, v := range grantsVectors() {
		t.Run(v.name, func(t *testing.T) {
			g, err := DecodeGrants([]byte(v.body), testLocker, testNow)
			if !errors.Is(err, v.want) || (v.want == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, v.want)
			}
			if err == nil && (g == nil || g.LockerID != testLocker) {
				t.Fatalf("g = %+v", g)
			}
		})
	}
	g, err := DecodeGrants([]byte(grantsBody), testLocker, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Ops) != 2 || g.Ops[0].Pickup == nil || g.Ops[0].Pickup.GrantID != "g-1002" ||
		g.Ops[1].Op != "revoke" || g.Ops[1].Version != 7 || *g.Ops[0].Uses != 1 ||
		!g.IssuedAt.Equal(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("decoded %+v", g)
	}
}

func TestDecodeCommand(t *testing.T) {
	for _, v := range commandVectors() {
		t.Run(v.name, func(t *testing.T) {
			c, err := DecodeCommand([]byte(v.body), testLocker, testNow)
			if !errors.Is(err, v.want) || (v.want == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, v.want)
			}
			if err == nil && (c.CommandID != "c-77" || c.Compartment != 7) {
				t.Fatalf("c = %+v", c)
			}
		})
	}
}

func TestCommandID(t *testing.T) {
	expired := withField(commandBody, "expires_at", `"2026-11-22T10:01:00Z"`)
	if got := CommandID([]byte(expired), testLocker); got != "c-77" {
		t.Errorf("CommandID(expired) = %q", got)
	}
	if got := CommandID([]byte(expired), "other"); got != "" {
		t.Errorf("CommandID(other locker) = %q", got)
	}
	if got := CommandID([]byte(grantsBody), testLocker); got != "" {
		t.Errorf("CommandID(grants) = %q", got)
	}
}

func TestKeyPairFile(t *testing.T) {
	kp, err := GenerateKeyPair("central-2026")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "central.key")
	if err := SaveKeyPair(path, kp); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	got, err := LoadKeyPair(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.KeyID != kp.KeyID || !got.Public.Equal(kp.Public) || !got.Private.Equal(kp.Private) {
		t.Errorf("loaded %v, want %v", got, kp)
	}
	// Overwrite: still atomic, no temp files left behind.
	if err := SaveKeyPair(path, kp); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("folder holds %d entries, want 1", len(entries))
	}

	// The public string round-trips and verifies what the pair seals.
	id, pub, err := ParsePublicKey(kp.PublicString())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := Seal(kp.KeyID, kp.Private, []byte(grantsBody))
	if _, _, err := Open(Keyring{id: pub}, raw); err != nil {
		t.Errorf("Open with parsed key: %v", err)
	}

	// A file whose halves do not match is refused.
	other, _ := GenerateKeyPair("x")
	bad := kp
	bad.Public = other.Public
	if err := SaveKeyPair(path, bad); err == nil {
		t.Error("SaveKeyPair accepted mismatched halves")
	}
	os.WriteFile(path, []byte(`{"key_id":"k","public_key":"AAAA","private_key":"AAAA"}`), 0o600)
	if _, err := LoadKeyPair(path); err == nil {
		t.Error("LoadKeyPair accepted short keys")
	}
	if _, err := LoadKeyPair(path + ".missing"); err == nil {
		t.Error("LoadKeyPair of a missing file")
	}
}

func TestParsePublicKey(t *testing.T) {
	kp := KeyPair{KeyID: "central-2026", Public: centralKey.Public().(ed25519.PublicKey), Private: centralKey}
	good := kp.PublicString()
	for s, ok := range map[string]bool{
		good:                      true,
		" " + good + "\n":         true,
		"central-2026":            false,
		":" + good[13:]:           false,
		"central-2026:AAAA":       false,
		"central-2026:not base64": false,
		"a b:" + good[13:]:        false,
	} {
		id, pub, err := ParsePublicKey(s)
		if (err == nil) != ok {
			t.Errorf("ParsePublicKey(%q): err = %v, want ok=%v", s, err, ok)
			continue
		}
		if ok && (id != "central-2026" || !pub.Equal(kp.Public)) {
			t.Errorf("ParsePublicKey(%q) = %q, %x", s, id, pub)
		}
	}
}

func TestSealRefusesBadKeys(t *testing.T) {
	if _, err := Seal("", centralKey, nil); err == nil {
		t.Error("Seal with empty key id")
	}
	if _, err := Seal("k", centralKey[:10], nil); err == nil {
		t.Error("Seal with short key")
	}
}

func FuzzOpen(f *testing.F) {
	for _, v := range openVectors() {
		f.Add(v.raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		body, keyID, err := Open(testKeys, raw)
		if err != nil {
			return
		}
		pub := testKeys[keyID]
		if !ed25519.Verify(pub, body, mustSig(t, raw)) {
			t.Fatalf("Open accepted an envelope that does not verify")
		}
	})
}

// mustSig re-extracts the signature of an accepted envelope.
func mustSig(t *testing.T, raw []byte) []byte {
	var env envelope
	if err := jsonUnmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	sig, err := b64.DecodeString(env.Sig)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func FuzzDecodeGrants(f *testing.F) {
	for _, v := range grantsVectors() {
		f.Add([]byte(v.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		g, err := DecodeGrants(body, testLocker, testNow)
		if err != nil {
			return
		}
		if g.Kind != KindGrants || g.LockerID != testLocker || !testNow.Before(g.ExpiresAt) {
			t.Fatalf("accepted %+v", g)
		}
	})
}

func FuzzDecodeCommand(f *testing.F) {
	for _, v := range commandVectors() {
		f.Add([]byte(v.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := DecodeCommand(body, testLocker, testNow)
		if err != nil {
			return
		}
		if c.Kind != KindCommand || c.LockerID != testLocker || c.CommandID == "" || c.Compartment < 1 ||
			!testNow.Before(c.ExpiresAt) {
			t.Fatalf("accepted %+v", c)
		}
	})
}

func ExampleOpen() {
	// The central server's key, known to the locker by its id.
	central := seedKey(1)
	keys := Keyring{"central-2026": central.Public().(ed25519.PublicKey)}
	now := time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)

	raw, _ := Seal("central-2026", central, []byte(commandBody))

	body, keyID, err := Open(keys, raw)
	if err != nil {
		fmt.Println("rejected:", err)
		return
	}
	cmd, err := DecodeCommand(body, "610091A01", now)
	if err != nil {
		fmt.Println("rejected:", err)
		return
	}
	fmt.Println(keyID, cmd.CommandID, cmd.Action, cmd.Compartment)

	_, err = DecodeCommand(body, "610091A01", now.Add(time.Hour))
	fmt.Println("an hour later:", err)
	// Output:
	// central-2026 c-77 open 7
	// an hour later: envelope expired
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
