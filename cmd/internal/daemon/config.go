package daemon

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/openlocker/locker/controller"
	"github.com/openlocker/locker/sync/protocol"
)

// Config is lockerd's configuration file.
type Config struct {
	// LockerID is this locker's id (1 to 32 of A-Z a-z 0-9 _ -).
	LockerID string `yaml:"locker_id"`
	// Data is the folder for the database.
	Data string `yaml:"data"`
	// Wiring is the cabinet wiring file; relative to the config file's folder.
	Wiring string `yaml:"wiring"`
	// Language of the display: en (default).
	Language string `yaml:"language"`
	// Broker is how to reach the central server's MQTT broker.
	Broker Broker `yaml:"broker"`
	// CentralKeys are the trusted central public keys, "KEY_ID:BASE64".
	CentralKeys []string `yaml:"central_keys"`
	// Keypad tunes the lockout (docs/keypad.md); zero values keep the defaults.
	Keypad Keypad `yaml:"keypad"`
	// PurgeAfter is the replay horizon (docs/operations.md): grants that
	// ended, tombstones and executed command ids are deleted this long
	// after they ended; envelopes may live at most half of it. Default
	// 14 days; 2 to 90 days.
	PurgeAfter time.Duration `yaml:"purge_after"`
}

// Keypad tunes the keypad's lockout.
type Keypad struct {
	LockoutAfter int           `yaml:"lockout_after"`
	LockoutBase  time.Duration `yaml:"lockout_base"`
	LockoutMax   time.Duration `yaml:"lockout_max"`
	MinCodeLen   int           `yaml:"min_code_len"`
}

// Broker is the MQTT connection.
type Broker struct {
	URL          string `yaml:"url"`           // tcp://host:1883 or ssl://host:8883
	CAFile       string `yaml:"ca_file"`       // CA certificates to trust (ssl://)
	CertFile     string `yaml:"cert_file"`     // this locker's client certificate (mutual TLS)
	KeyFile      string `yaml:"key_file"`      // its private key
	Username     string `yaml:"username"`      // optional
	PasswordFile string `yaml:"password_file"` // optional; the file holds the password
}

// LoadConfig reads and checks a config file. Errors name the file, and the
// line where the YAML parser knows it.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, oneLine(fmt.Errorf("config: %w", err))
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, oneLine(yamlError(path, err))
	}
	base := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	c.Wiring, c.Data = rel(c.Wiring), rel(c.Data)
	c.Broker.CAFile, c.Broker.CertFile, c.Broker.KeyFile = rel(c.Broker.CAFile), rel(c.Broker.CertFile), rel(c.Broker.KeyFile)
	c.Broker.PasswordFile = rel(c.Broker.PasswordFile)
	if err := c.check(); err != nil {
		return nil, oneLine(fmt.Errorf("config %s: %w", path, err))
	}
	return &c, nil
}

// oneLine keeps an error's message on one line, as the daemon's start-up
// errors are (a value or a path quoted from the file may hold a line
// break); the error still unwraps to err.
func oneLine(err error) error {
	msg := err.Error()
	if !strings.ContainsAny(msg, "\r\n") {
		return err
	}
	return &lineError{msg: strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(msg), err: err}
}

type lineError struct {
	msg string
	err error
}

func (e *lineError) Error() string { return e.msg }
func (e *lineError) Unwrap() error { return e.err }

// yamlError turns a YAML error into one line: "FILE:LINE: problem".
func yamlError(path string, err error) error {
	if errors.Is(err, io.EOF) { // yaml's word for a file without a document
		return fmt.Errorf("config %s: no settings in it (the file is empty or only comments)", path)
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		first := te.Errors[0]
		var line int
		if n, _ := fmt.Sscanf(first, "line %d:", &line); n == 1 {
			first = fmt.Sprintf("%s:%d:%s", path, line, strings.SplitN(first, ":", 2)[1])
		} else {
			first = path + ": " + first
		}
		if more := len(te.Errors) - 1; more > 0 {
			first += fmt.Sprintf(" (and %d more)", more)
		}
		return errors.New("config " + first)
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		return fmt.Errorf("config %s:%d:%s", path, line, strings.SplitN(msg, ":", 2)[1])
	}
	return fmt.Errorf("config %s: %s", path, msg)
}

func (c *Config) check() error {
	switch {
	case !protocol.ValidLockerID(c.LockerID):
		return fmt.Errorf("locker_id %q: want 1 to 32 of A-Z a-z 0-9 _ -", c.LockerID)
	case c.Data == "":
		return errors.New("data: the data folder is missing")
	case c.Wiring == "":
		return errors.New("wiring: the wiring file is missing")
	case len(c.CentralKeys) == 0:
		return errors.New("central_keys: at least one central public key is needed")
	case c.Language != "" && !slices.Contains(controller.Languages(), c.Language):
		// The controller refuses it at start-up; -check must say so first.
		return fmt.Errorf("language %q: want one of %s", c.Language, strings.Join(controller.Languages(), ", "))
	}
	if _, err := c.Keyring(); err != nil {
		return err
	}
	u, err := url.Parse(c.Broker.URL)
	if err == nil && u.User != nil {
		// paho would use it, and the URL is printed by -check and logged
		// at every start: a password there ends up in the journal.
		return errors.New("broker.url: a user name or password in the URL is not accepted (it would be printed and logged); use broker.username and broker.password_file")
	}
	if err != nil || u.Host == "" {
		return fmt.Errorf("broker.url %q: want tcp://host:port or ssl://host:port", c.Broker.URL)
	}
	switch u.Scheme {
	case "tcp", "mqtt":
		if c.Broker.CAFile != "" || c.Broker.CertFile != "" {
			return fmt.Errorf("broker.url %q: TLS files are set but the scheme is not ssl://", c.Broker.URL)
		}
	case "ssl", "tls", "mqtts":
	default:
		return fmt.Errorf("broker.url %q: unknown scheme %q", c.Broker.URL, u.Scheme)
	}
	k := c.Keypad
	switch {
	case k.LockoutAfter < 0 || k.LockoutAfter > 20:
		return fmt.Errorf("keypad.lockout_after %d: want 1 to 20", k.LockoutAfter)
	case k.LockoutBase < 0 || k.LockoutMax < 0 || (k.LockoutMax > 0 && k.LockoutMax < k.LockoutBase):
		return errors.New("keypad: lockout_base and lockout_max must be positive, base ≤ max")
	case k.MinCodeLen != 0 && (k.MinCodeLen < 6 || k.MinCodeLen > 12):
		return fmt.Errorf("keypad.min_code_len %d: codes are 6 to 12 digits", k.MinCodeLen)
	}
	if c.PurgeAfter != 0 && (c.PurgeAfter < 48*time.Hour || c.PurgeAfter > 90*24*time.Hour) {
		return fmt.Errorf("purge_after %s: want 48h to 2160h (2 to 90 days)", c.PurgeAfter)
	}
	if (c.Broker.CertFile == "") != (c.Broker.KeyFile == "") {
		return errors.New("broker: cert_file and key_file go together")
	}
	if _, err := c.TLS(); err != nil {
		return err
	}
	return nil
}

// Keyring parses the central keys.
func (c *Config) Keyring() (protocol.Keyring, error) {
	keys := protocol.Keyring{}
	for i, s := range c.CentralKeys {
		id, pub, err := protocol.ParsePublicKey(s)
		if err != nil {
			return nil, fmt.Errorf("central_keys[%d]: %w", i, err)
		}
		if old, ok := keys[id]; ok && !old.Equal(pub) {
			// One of the two would be dropped without a word.
			return nil, fmt.Errorf("central_keys[%d]: key id %q is already given with another key", i, id)
		}
		keys[id] = pub
	}
	return keys, nil
}

// TLS builds the TLS configuration for ssl:// brokers (nil for tcp://).
func (c *Config) TLS() (*tls.Config, error) {
	// The scheme as url.Parse (and so the MQTT client) reads it: SSL:// is
	// ssl:// too, and must not skip the CA and client certificate.
	u, err := url.Parse(c.Broker.URL)
	if err != nil {
		return nil, fmt.Errorf("broker.url %q: %w", c.Broker.URL, err)
	}
	switch u.Scheme {
	case "ssl", "tls", "mqtts":
	default:
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.Broker.CAFile != "" {
		pem, err := os.ReadFile(c.Broker.CAFile)
		if err != nil {
			return nil, fmt.Errorf("broker.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("broker.ca_file %s: no PEM certificate in it", c.Broker.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.Broker.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.Broker.CertFile, c.Broker.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("broker.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Password reads the broker password file ("" when none is set).
func (c *Config) Password() (string, error) {
	if c.Broker.PasswordFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.Broker.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("broker.password_file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
