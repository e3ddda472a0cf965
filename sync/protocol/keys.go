package protocol

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// KeyPair is an Ed25519 signing key with its key id, as the central server
// (or the simulator standing in for it) holds it.
type KeyPair struct {
	KeyID   string
	Public  ed25519.PublicKey
	Private ed25519.PrivateKey
}

// keyFile is the JSON form of a key pair file.
type keyFile struct {
	KeyID      string `json:"key_id"`
	PublicKey  string `json:"public_key"`
	PrivateKey string `json:"private_key"`
}

// GenerateKeyPair makes a new key pair named keyID.
func GenerateKeyPair(keyID string) (KeyPair, error) {
	if err := checkKeyID(keyID); err != nil {
		return KeyPair{}, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("protocol: generate key: %w", err)
	}
	return KeyPair{KeyID: keyID, Public: pub, Private: priv}, nil
}

// PublicString returns the public half as "ID:BASE64", the form of the
// -central-key flag and of ParsePublicKey.
func (kp KeyPair) PublicString() string {
	return kp.KeyID + ":" + base64.StdEncoding.EncodeToString(kp.Public)
}

// Keyring returns a keyring holding only this pair's public key.
func (kp KeyPair) Keyring() Keyring {
	return Keyring{kp.KeyID: kp.Public}
}

// SaveKeyPair writes kp to path as JSON with mode 0600, atomically: a temporary
// file in the same folder is written, synced and renamed over path, and the
// folder is synced.
func SaveKeyPair(path string, kp KeyPair) error {
	if err := kp.check(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(keyFile{
		KeyID:      kp.KeyID,
		PublicKey:  base64.StdEncoding.EncodeToString(kp.Public),
		PrivateKey: base64.StdEncoding.EncodeToString(kp.Private),
	}, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	return writeFileAtomic(path, data, 0o600)
}

// LoadKeyPair reads a key pair file written by SaveKeyPair and checks that
// its public and private halves belong together.
func LoadKeyPair(path string) (KeyPair, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return KeyPair{}, fmt.Errorf("protocol: read key pair: %w", err)
	}
	var f keyFile
	if err := json.Unmarshal(data, &f); err != nil {
		return KeyPair{}, fmt.Errorf("protocol: key pair file %s is not valid JSON", path)
	}
	pub, err := base64.StdEncoding.DecodeString(f.PublicKey)
	if err != nil {
		return KeyPair{}, fmt.Errorf("protocol: key pair file %s: public_key is not base64", path)
	}
	priv, err := base64.StdEncoding.DecodeString(f.PrivateKey)
	if err != nil {
		return KeyPair{}, fmt.Errorf("protocol: key pair file %s: private_key is not base64", path)
	}
	kp := KeyPair{KeyID: f.KeyID, Public: pub, Private: priv}
	if err := kp.check(); err != nil {
		return KeyPair{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return kp, nil
}

// check validates the id, the lengths, and that Public is Private's public half.
func (kp KeyPair) check() error {
	if err := checkKeyID(kp.KeyID); err != nil {
		return err
	}
	if len(kp.Public) != ed25519.PublicKeySize {
		return fmt.Errorf("protocol: public key must be %d bytes", ed25519.PublicKeySize)
	}
	if len(kp.Private) != ed25519.PrivateKeySize {
		return fmt.Errorf("protocol: private key must be %d bytes", ed25519.PrivateKeySize)
	}
	derived := kp.Private.Public().(ed25519.PublicKey)
	if subtle.ConstantTimeCompare(derived, kp.Public) != 1 {
		return errors.New("protocol: public key does not match private key")
	}
	return nil
}

// checkKeyID accepts a non-empty id without ':' or white space.
func checkKeyID(id string) error {
	if id == "" {
		return errors.New("protocol: empty key id")
	}
	if strings.ContainsAny(id, ": \t\r\n") {
		return errors.New("protocol: key id must not contain ':' or white space")
	}
	return nil
}

// ParsePublicKey parses "ID:BASE64" (the -central-key flag): a key id, a colon,
// and the 32-byte Ed25519 public key in standard base64 with padding.
func ParsePublicKey(s string) (id string, pub ed25519.PublicKey, err error) {
	id, enc, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return "", nil, errors.New("protocol: central key must be ID:BASE64")
	}
	if err := checkKeyID(id); err != nil {
		return "", nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return "", nil, fmt.Errorf("protocol: central key %q: not standard base64", id)
	}
	if len(raw) != ed25519.PublicKeySize {
		return "", nil, fmt.Errorf("protocol: central key %q: %d bytes, want %d", id, len(raw), ed25519.PublicKeySize)
	}
	return id, ed25519.PublicKey(raw), nil
}

// writeFileAtomic writes data to a temporary file next to path, syncs it,
// renames it over path and syncs the folder, so that path holds either the
// old or the new content after a power cut.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync() // best effort: not every file system syncs folders
		d.Close()
	}
	return nil
}
