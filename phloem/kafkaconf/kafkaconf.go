package kafkaconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Defaults used by DefaultConfig.
const (
	DefaultClientID       = "phloem"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second
)

// SASL mechanisms accepted in SASLConfig.Mechanism.
const (
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
)

// Config is the Kafka client configuration shared by every Phloem binary. Build it
// with DefaultConfig, optionally bind it to flags with RegisterFlags, check it with
// Validate and turn it into franz-go options with Opts.
type Config struct {
	// Brokers are the seed brokers, host:port. Empty means the caller starts the
	// embedded broker and adds its addresses (kgo.SeedBrokers) itself.
	Brokers []string

	// ClientID is the Kafka client id, visible in broker logs and quotas.
	// Default "phloem"; must not be empty.
	ClientID string

	// TLS configures TLS to the brokers. Zero value: plaintext.
	TLS TLSConfig

	// SASL configures SASL authentication. Zero value: none.
	SASL SASLConfig

	// DialTimeout bounds each TCP (and TLS) connection attempt. Default 5s.
	DialTimeout time.Duration

	// RequestTimeout is added to a request's own timeout (kgo's
	// RequestTimeoutOverhead) to bound how long the client waits for any
	// response before it considers the connection dead. Default 10s.
	RequestTimeout time.Duration

	// envErr records PHLOEM_* variables that RegisterFlags could not parse;
	// Validate reports it, since RegisterFlags cannot return an error.
	envErr error
}

// TLSConfig configures TLS. Files are PEM.
type TLSConfig struct {
	// Enabled turns TLS on. Zero: plaintext; the other fields must then be empty.
	Enabled bool
	// CAFile holds the CA certificates that sign the brokers' certificates.
	// Empty: the system roots.
	CAFile string
	// CertFile and KeyFile are the client certificate and key for mutual TLS.
	// Both or neither.
	CertFile string
	KeyFile  string
	// ServerName overrides the name checked against the brokers' certificates.
	// Empty: the host of each broker address.
	ServerName string
	// InsecureSkipVerify disables certificate verification. Testing only.
	InsecureSkipVerify bool
}

// SASLConfig configures SASL authentication.
type SASLConfig struct {
	// Mechanism is "" (no SASL), "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512"
	// (case-insensitive).
	Mechanism string
	// User and Password are the credentials; both required with a mechanism.
	User     string
	Password string
}

// String hides the password, so that logging a Config never leaks it.
func (s SASLConfig) String() string {
	pw := ""
	if s.Password != "" {
		pw = "<redacted>"
	}
	return fmt.Sprintf("{Mechanism:%s User:%s Password:%s}", s.Mechanism, s.User, pw)
}

// DefaultConfig returns the defaults: no brokers (embedded), client id "phloem",
// plaintext, no SASL, 5s dial timeout, 10s request timeout.
func DefaultConfig() Config {
	return Config{
		ClientID:       DefaultClientID,
		DialTimeout:    DefaultDialTimeout,
		RequestTimeout: DefaultRequestTimeout,
	}
}

// Validate reports every invalid field, joined, each naming the flag to fix.
func (c Config) Validate() error {
	var errs []error
	if c.envErr != nil {
		errs = append(errs, c.envErr)
	}
	for _, b := range c.Brokers {
		if err := checkHostPort(b); err != nil {
			errs = append(errs, err)
		}
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("kafka client id is empty: set --kafka-client-id (default \"phloem\")"))
	}
	if c.DialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("kafka dial timeout must be positive, got %s: set --kafka-dial-timeout", c.DialTimeout))
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, fmt.Errorf("kafka request timeout must be positive, got %s: set --kafka-request-timeout", c.RequestTimeout))
	}

	t := c.TLS
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify) {
		errs = append(errs, errors.New("kafka TLS options are set but TLS is off: add --kafka-tls"))
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("kafka TLS client certificate needs both --kafka-tls-cert-file and --kafka-tls-key-file"))
	}
	for _, f := range []struct{ flag, path string }{
		{"--kafka-tls-ca-file", t.CAFile}, {"--kafka-tls-cert-file", t.CertFile}, {"--kafka-tls-key-file", t.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("kafka TLS file %s %q: %w", f.flag, f.path, err))
		}
	}

	s := c.SASL
	switch strings.ToUpper(s.Mechanism) {
	case "":
		if s.User != "" || s.Password != "" {
			errs = append(errs, errors.New("kafka SASL credentials are set but no mechanism: set --kafka-sasl-mechanism to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"))
		}
	case MechanismPlain, MechanismScramSHA256, MechanismScramSHA512:
		if s.User == "" {
			errs = append(errs, fmt.Errorf("kafka SASL %s needs a user: set --kafka-sasl-user", s.Mechanism))
		}
		if s.Password == "" {
			errs = append(errs, fmt.Errorf("kafka SASL %s needs a password: set %s", s.Mechanism, EnvPassword))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown kafka SASL mechanism %q: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid kafka configuration: %w", err)
	}
	return nil
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("kafka broker %q is not host:port (e.g. kafka-1:9092): %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("kafka broker %q has no host", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("kafka broker %q has an invalid port", addr)
	}
	return nil
}

// Opts validates c and returns the franz-go options for it: seed brokers (none when
// Brokers is empty: add the embedded broker's), client id, dial and request
// timeouts, TLS and SASL. TLS files are read now, so a bad file fails here rather
// than on the first connection.
func (c Config) Opts() ([]kgo.Opt, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{
		kgo.ClientID(c.ClientID),
		kgo.DialTimeout(c.DialTimeout),
		kgo.RequestTimeoutOverhead(c.RequestTimeout),
	}
	if len(c.Brokers) > 0 {
		opts = append(opts, kgo.SeedBrokers(c.Brokers...))
	}
	if c.TLS.Enabled {
		tc, err := c.TLS.Build()
		if err != nil {
			return nil, err
		}
		// kgo clones this config per connection and fills ServerName from
		// the broker's host when it is empty.
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if m := c.SASL.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// Build returns the *tls.Config for t (TLS 1.2 or newer).
func (t TLSConfig) Build() (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // an explicit operator choice, documented as testing only
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read kafka TLS CA file %q: %w", t.CAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka TLS CA file %q holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cannot load kafka TLS client certificate %q / key %q: %w", t.CertFile, t.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// mechanism returns the franz-go SASL mechanism, or nil for none. The mechanism is
// validated by Validate.
func (s SASLConfig) mechanism() sasl.Mechanism {
	switch strings.ToUpper(s.Mechanism) {
	case MechanismPlain:
		return plain.Auth{User: s.User, Pass: s.Password}.AsMechanism()
	case MechanismScramSHA256:
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism()
	case MechanismScramSHA512:
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism()
	}
	return nil
}
