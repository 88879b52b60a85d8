package kafkaconf

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// certs is a CA plus a server certificate (for 127.0.0.1 and "localhost") and a
// client certificate signed by it, written as PEM files into a temp dir.
type certs struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
	ca                                                   *x509.Certificate
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

func newCerts(t *testing.T) certs {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "phloem test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	c := certs{caFile: filepath.Join(dir, "ca.pem"), ca: ca}
	writePEM(t, c.caFile, "CERTIFICATE", caDER)

	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		require.NoError(t, err)
		keyDER, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	c.serverCert, c.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	c.clientCert, c.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return c
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	require.NoError(t, c.Validate())
	require.Equal(t, "phloem", c.ClientID)
	require.Equal(t, 5*time.Second, c.DialTimeout)
	require.Equal(t, 10*time.Second, c.RequestTimeout)
	require.Empty(t, c.Brokers)
	opts, err := c.Opts()
	require.NoError(t, err)
	cl, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	defer cl.Close()
	require.Equal(t, "phloem", cl.OptValue(kgo.ClientID))
	require.Equal(t, 5*time.Second, cl.OptValue(kgo.DialTimeout))
	require.Equal(t, 10*time.Second, cl.OptValue(kgo.RequestTimeoutOverhead))
}

func TestValidateErrors(t *testing.T) {
	cs := newCerts(t)
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want []string // substrings of the error; none: valid
	}{
		{"brokers", func(c *Config) { c.Brokers = []string{"k1:9092", "[::1]:9093"} }, nil},
		{"broker without port", func(c *Config) { c.Brokers = []string{"kafka-1"} }, []string{`"kafka-1" is not host:port`}},
		{"broker without host", func(c *Config) { c.Brokers = []string{":9092"} }, []string{`":9092" has no host`}},
		{"broker bad port", func(c *Config) { c.Brokers = []string{"k:0"} }, []string{`"k:0" has an invalid port`}},
		{"empty client id", func(c *Config) { c.ClientID = "" }, []string{"--kafka-client-id"}},
		{"zero dial timeout", func(c *Config) { c.DialTimeout = 0 }, []string{"--kafka-dial-timeout"}},
		{"negative request timeout", func(c *Config) { c.RequestTimeout = -time.Second }, []string{"--kafka-request-timeout"}},
		{"tls files without tls", func(c *Config) { c.TLS.CAFile = cs.caFile }, []string{"add --kafka-tls"}},
		{"tls ok", func(c *Config) {
			c.TLS = TLSConfig{Enabled: true, CAFile: cs.caFile, CertFile: cs.clientCert, KeyFile: cs.clientKey}
		}, nil},
		{"cert without key", func(c *Config) { c.TLS = TLSConfig{Enabled: true, CertFile: cs.clientCert} }, []string{"both --kafka-tls-cert-file and --kafka-tls-key-file"}},
		{"missing ca file", func(c *Config) { c.TLS = TLSConfig{Enabled: true, CAFile: "/nonexistent/ca.pem"} }, []string{`--kafka-tls-ca-file "/nonexistent/ca.pem"`, "no such file"}},
		{"unknown mechanism", func(c *Config) { c.SASL = SASLConfig{Mechanism: "GSSAPI", User: "u", Password: "p"} }, []string{`unknown kafka SASL mechanism "GSSAPI"`}},
		{"mechanism lower case", func(c *Config) { c.SASL = SASLConfig{Mechanism: "scram-sha-512", User: "u", Password: "p"} }, nil},
		{"sasl without user", func(c *Config) { c.SASL = SASLConfig{Mechanism: "PLAIN", Password: "p"} }, []string{"--kafka-sasl-user"}},
		{"sasl without password", func(c *Config) { c.SASL = SASLConfig{Mechanism: "SCRAM-SHA-256", User: "u"} }, []string{EnvPassword}},
		{"credentials without mechanism", func(c *Config) { c.SASL = SASLConfig{User: "u"} }, []string{"--kafka-sasl-mechanism"}},
		{"several at once", func(c *Config) { c.ClientID = ""; c.DialTimeout = 0 }, []string{"--kafka-client-id", "--kafka-dial-timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			_, optsErr := c.Opts()
			if len(tc.want) == 0 {
				require.NoError(t, err)
				require.NoError(t, optsErr)
				return
			}
			require.Error(t, err)
			require.ErrorContains(t, err, "invalid kafka configuration")
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
			require.Error(t, optsErr, "Opts validates")
		})
	}
}

func TestRegisterFlagsEnvAndHelp(t *testing.T) {
	t.Setenv(EnvBrokers, " k1:9092, k2:9092 ,")
	t.Setenv(EnvClientID, "from-env")
	t.Setenv(EnvTLS, "true")
	t.Setenv(EnvSASLMechanism, "SCRAM-SHA-256")
	t.Setenv(EnvSASLUser, "alice")
	t.Setenv(EnvPassword, "s3cret")
	t.Setenv(EnvDialTimeout, "2s")

	c := DefaultConfig()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	// Flags win over the environment.
	require.NoError(t, fs.Parse([]string{"--kafka-client-id=from-flag", "--kafka-request-timeout=3s"}))
	require.Equal(t, []string{"k1:9092", "k2:9092"}, c.Brokers)
	require.Equal(t, "from-flag", c.ClientID)
	require.True(t, c.TLS.Enabled)
	require.Equal(t, SASLConfig{Mechanism: "SCRAM-SHA-256", User: "alice", Password: "s3cret"}, c.SASL)
	require.Equal(t, 2*time.Second, c.DialTimeout)
	require.Equal(t, 3*time.Second, c.RequestTimeout)
	require.NoError(t, c.Validate())

	// --brokers on the command line replaces the environment's list.
	require.NoError(t, fs.Parse([]string{"--brokers=k3:9092"}))
	require.Equal(t, []string{"k3:9092"}, c.Brokers)

	// The help names every environment variable, and never shows the password.
	var help bytes.Buffer
	fs.SetOutput(&help)
	fs.PrintDefaults()
	for _, env := range []string{EnvBrokers, EnvClientID, EnvTLS, EnvTLSCAFile, EnvTLSCertFile, EnvTLSKeyFile,
		EnvTLSServerName, EnvTLSInsecure, EnvSASLMechanism, EnvSASLUser, EnvPassword, EnvDialTimeout, EnvRequestTimeout} {
		require.Contains(t, help.String(), env)
	}
	require.NotContains(t, help.String(), "s3cret")
	require.Nil(t, fs.Lookup("kafka-sasl-password"), "no password flag: command lines are world-readable")

	// Neither fmt nor slog print the password.
	require.NotContains(t, fmt.Sprintf("%+v", c), "s3cret")
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "kafka", c)
	require.NotContains(t, logs.String(), "s3cret")
	require.Contains(t, logs.String(), "alice")
}

func TestRegisterFlagsBadEnv(t *testing.T) {
	t.Setenv(EnvDialTimeout, "five seconds")
	t.Setenv(EnvTLS, "yes please")
	c := DefaultConfig()
	c.RegisterFlags(flag.NewFlagSet("test", flag.ContinueOnError))
	err := c.Validate()
	require.ErrorContains(t, err, `PHLOEM_KAFKA_DIAL_TIMEOUT="five seconds"`)
	require.ErrorContains(t, err, `PHLOEM_KAFKA_TLS="yes please"`)
}

func TestTLSBuild(t *testing.T) {
	cs := newCerts(t)
	tc, err := TLSConfig{Enabled: true, CAFile: cs.caFile, CertFile: cs.clientCert, KeyFile: cs.clientKey, ServerName: "kafka.internal"}.Build()
	require.NoError(t, err)
	require.Len(t, tc.Certificates, 1)
	require.Equal(t, "kafka.internal", tc.ServerName)
	require.Equal(t, uint16(tls.VersionTLS12), tc.MinVersion)
	_, err = cs.ca.Verify(x509.VerifyOptions{Roots: tc.RootCAs}) // the pool holds our CA
	require.NoError(t, err)

	// A file that is not PEM is refused with its name.
	bad := filepath.Join(t.TempDir(), "bad.pem")
	require.NoError(t, os.WriteFile(bad, []byte("not a cert"), 0o600))
	_, err = TLSConfig{Enabled: true, CAFile: bad}.Build()
	require.ErrorContains(t, err, bad)
	_, err = TLSConfig{Enabled: true, CertFile: cs.clientCert, KeyFile: bad}.Build()
	require.ErrorContains(t, err, "cannot load kafka TLS client certificate")
}

// TestTLSAgainstKfake: a client built from Opts talks to a TLS broker that requires
// a client certificate, and fails, naming the address, with the wrong CA.
func TestTLSAgainstKfake(t *testing.T) {
	cs := newCerts(t)
	serverCert, err := tls.LoadX509KeyPair(cs.serverCert, cs.serverKey)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cs.ca)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}))
	require.NoError(t, err)
	defer c.Close()

	cfg := DefaultConfig()
	cfg.Brokers = c.ListenAddrs()
	cfg.TLS = TLSConfig{Enabled: true, CAFile: cs.caFile, CertFile: cs.clientCert, KeyFile: cs.clientKey}
	opts, err := cfg.Opts()
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, Probe(ctx, opts, 5*time.Second))

	other := newCerts(t) // a CA that did not sign the server
	cfg.TLS.CAFile = other.caFile
	opts, err = cfg.Opts()
	require.NoError(t, err)
	err = Probe(ctx, opts, 5*time.Second)
	require.ErrorContains(t, err, "kafka unreachable: cannot connect to "+cfg.Brokers[0])
	require.ErrorContains(t, err, "certificate")
}

// TestSASLAgainstKfake authenticates with each mechanism against kfake, and checks
// that a wrong password is refused.
func TestSASLAgainstKfake(t *testing.T) {
	for _, mech := range []string{MechanismPlain, MechanismScramSHA256, MechanismScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser(mech, "alice", "right"))
			require.NoError(t, err)
			defer c.Close()

			cfg := DefaultConfig()
			cfg.Brokers = c.ListenAddrs()
			cfg.SASL = SASLConfig{Mechanism: strings.ToLower(mech), User: "alice", Password: "right"}
			opts, err := cfg.Opts()
			require.NoError(t, err)
			ctx := context.Background()
			require.NoError(t, Probe(ctx, opts, 5*time.Second))

			// A real request, not only the probe's metadata.
			cl, err := kgo.NewClient(opts...)
			require.NoError(t, err)
			defer cl.Close()
			require.NoError(t, cl.Ping(ctx))

			cfg.SASL.Password = "wrong"
			opts, err = cfg.Opts()
			require.NoError(t, err)
			err = Probe(ctx, opts, 5*time.Second)
			require.ErrorContains(t, err, "cannot connect to "+cfg.Brokers[0])
			require.NotContains(t, err.Error(), "deadline", "a refused login fails fast, not at the deadline")
		})
	}
}

func TestProbeOK(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	cfg := DefaultConfig()
	cfg.Brokers = c.ListenAddrs()
	opts, err := cfg.Opts()
	require.NoError(t, err)
	require.NoError(t, Probe(context.Background(), opts, 5*time.Second))

	// One dead seed among live ones does not fail the probe.
	cfg.Brokers = append([]string{"127.0.0.1:1"}, c.ListenAddrs()...)
	opts, err = cfg.Opts()
	require.NoError(t, err)
	require.NoError(t, Probe(context.Background(), opts, 5*time.Second))
}

// TestProbeRefused: nothing listens on 127.0.0.1:1, so the probe fails at once and
// names the address.
func TestProbeRefused(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Brokers = []string{"127.0.0.1:1"}
	opts, err := cfg.Opts()
	require.NoError(t, err)
	start := time.Now()
	err = Probe(context.Background(), opts, 5*time.Second)
	took := time.Since(start)
	t.Logf("probe error after %s: %v", took, err)
	require.ErrorContains(t, err, "kafka unreachable: cannot connect to 127.0.0.1:1 within 5s")
	require.ErrorContains(t, err, "connection refused")
	var pe *ProbeError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, []string{"127.0.0.1:1"}, pe.Addrs)
	require.Less(t, took, 5*time.Second, "a refused connection must not wait for the deadline")
}

// TestProbeBlackhole: a listener that accepts but never answers makes the probe
// fail at its deadline, naming every address.
func TestProbeBlackhole(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	// Accept and hold connections without ever answering, until the test ends.
	acceptorDone := make(chan struct{})
	go func() {
		defer close(acceptorDone)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	defer func() {
		_ = ln.Close()
		<-acceptorDone
	}()

	cfg := DefaultConfig()
	cfg.Brokers = []string{ln.Addr().String(), "127.0.0.1:1"}
	opts, err := cfg.Opts()
	require.NoError(t, err)
	const timeout = 500 * time.Millisecond
	start := time.Now()
	err = Probe(context.Background(), opts, timeout)
	took := time.Since(start)
	t.Logf("probe error after %s: %v", took, err)
	require.ErrorContains(t, err, "cannot connect to any of 2 seed brokers within 500ms")
	require.ErrorContains(t, err, ln.Addr().String()+": no answer")
	require.ErrorContains(t, err, "127.0.0.1:1: ")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.GreaterOrEqual(t, took, timeout)
	require.Less(t, took, timeout+3*time.Second, "the probe returns at its deadline")

	// The caller's context also bounds it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = Probe(ctx, opts, time.Hour)
	require.Error(t, err)
}
