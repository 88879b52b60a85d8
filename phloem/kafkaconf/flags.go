package kafkaconf

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// Environment variables read by RegisterFlags. A variable that is set becomes the
// flag's default, so an explicit flag still wins.
const (
	EnvBrokers        = "PHLOEM_BROKERS"
	EnvClientID       = "PHLOEM_KAFKA_CLIENT_ID"
	EnvTLS            = "PHLOEM_KAFKA_TLS"
	EnvTLSCAFile      = "PHLOEM_KAFKA_TLS_CA_FILE"
	EnvTLSCertFile    = "PHLOEM_KAFKA_TLS_CERT_FILE"
	EnvTLSKeyFile     = "PHLOEM_KAFKA_TLS_KEY_FILE"
	EnvTLSServerName  = "PHLOEM_KAFKA_TLS_SERVER_NAME"
	EnvTLSInsecure    = "PHLOEM_KAFKA_TLS_INSECURE_SKIP_VERIFY"
	EnvSASLMechanism  = "PHLOEM_KAFKA_SASL_MECHANISM"
	EnvSASLUser       = "PHLOEM_KAFKA_SASL_USER"
	EnvPassword       = "PHLOEM_KAFKA_PASSWORD" // the only way to give the password: never on the command line
	EnvDialTimeout    = "PHLOEM_KAFKA_DIAL_TIMEOUT"
	EnvRequestTimeout = "PHLOEM_KAFKA_REQUEST_TIMEOUT"
)

// RegisterFlags binds c's fields to flags on fs. Each flag's default is c's current
// value, replaced by its PHLOEM_* environment variable when that is set; flags given
// on the command line win over both. The SASL password has no flag (command lines
// are visible to every local user): it comes from PHLOEM_KAFKA_PASSWORD only.
// Environment values that do not parse are reported by Validate.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	var envErrs []error
	env := func(name string, set func(string) error) {
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if err := set(v); err != nil {
			envErrs = append(envErrs, fmt.Errorf("environment variable %s=%q: %w", name, v, err))
		}
	}
	str := func(p *string, name, envName, usage string) {
		env(envName, func(v string) error { *p = v; return nil })
		fs.StringVar(p, name, *p, usage+" (env "+envName+")")
	}
	boolean := func(p *bool, name, envName, usage string) {
		env(envName, func(v string) error {
			b, err := strconv.ParseBool(v)
			*p = b
			return err
		})
		fs.BoolVar(p, name, *p, usage+" (env "+envName+")")
	}
	duration := func(p *time.Duration, name, envName, usage string) {
		env(envName, func(v string) error {
			d, err := time.ParseDuration(v)
			*p = d
			return err
		})
		fs.DurationVar(p, name, *p, usage+" (env "+envName+")")
	}

	env(EnvBrokers, func(v string) error { c.Brokers = splitList(v); return nil })
	fs.Var((*listValue)(&c.Brokers), "brokers",
		"Kafka seed brokers, comma-separated host:port list. Empty: run the embedded single-machine broker (env "+EnvBrokers+")")
	str(&c.ClientID, "kafka-client-id", EnvClientID, "Kafka client id, shown in broker logs and used by broker quotas")
	boolean(&c.TLS.Enabled, "kafka-tls", EnvTLS, "connect to the brokers over TLS")
	str(&c.TLS.CAFile, "kafka-tls-ca-file", EnvTLSCAFile, "PEM file with the CA certificates that sign the brokers' certificates; empty: system roots")
	str(&c.TLS.CertFile, "kafka-tls-cert-file", EnvTLSCertFile, "PEM client certificate for mutual TLS (with --kafka-tls-key-file)")
	str(&c.TLS.KeyFile, "kafka-tls-key-file", EnvTLSKeyFile, "PEM client private key for mutual TLS (with --kafka-tls-cert-file)")
	str(&c.TLS.ServerName, "kafka-tls-server-name", EnvTLSServerName, "name to verify in the brokers' certificates; empty: each broker's host")
	boolean(&c.TLS.InsecureSkipVerify, "kafka-tls-insecure-skip-verify", EnvTLSInsecure, "do not verify the brokers' certificates (testing only)")
	str(&c.SASL.Mechanism, "kafka-sasl-mechanism", EnvSASLMechanism, "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty: no SASL. The password comes from "+EnvPassword)
	str(&c.SASL.User, "kafka-sasl-user", EnvSASLUser, "SASL user name")
	env(EnvPassword, func(v string) error { c.SASL.Password = v; return nil })
	duration(&c.DialTimeout, "kafka-dial-timeout", EnvDialTimeout, "timeout for each connection attempt to a broker, TLS handshake included")
	duration(&c.RequestTimeout, "kafka-request-timeout", EnvRequestTimeout, "extra time allowed for a broker's response on top of the request's own timeout, before the connection is considered dead")

	c.envErr = errors.Join(envErrs...)
}

// listValue is a comma-separated flag.Value over a []string.
type listValue []string

func (l *listValue) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *listValue) Set(v string) error {
	*l = splitList(v)
	return nil
}

// splitList splits a comma list, trimming blanks and dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// LogValue makes slog print the configuration without the SASL password.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("brokers", c.Brokers),
		slog.String("client_id", c.ClientID),
		slog.Bool("tls", c.TLS.Enabled),
		slog.String("tls_ca_file", c.TLS.CAFile),
		slog.String("tls_cert_file", c.TLS.CertFile),
		slog.String("tls_server_name", c.TLS.ServerName),
		slog.Bool("tls_insecure_skip_verify", c.TLS.InsecureSkipVerify),
		slog.String("sasl_mechanism", c.SASL.Mechanism),
		slog.String("sasl_user", c.SASL.User),
		slog.Duration("dial_timeout", c.DialTimeout),
		slog.Duration("request_timeout", c.RequestTimeout),
	)
}
