package meter

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// selfSigned writes a self-signed client certificate and key (PEM) to dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meter-client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err = x509.ParseCertificate(der)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return certFile, keyFile, cert
}

// TestMeterTLS: https to a collector whose CA comes from a file, presenting a
// client certificate the collector requires.
func TestMeterTLS(t *testing.T) {
	c := &testCollector{acked: map[string]map[uint64][]byte{}, order: map[string][]uint64{}, reqIDs: map[string]bool{}}
	dir := t.TempDir()
	certFile, keyFile, clientCert := selfSigned(t, dir)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(c.serve))
	pool := x509.NewCertPool()
	pool.AddCert(clientCert)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes below are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600))

	cfg := testConfig(t, strings.TrimPrefix(srv.URL, "https://"))
	cfg.TLS = TLSConfig{Enabled: true, CAFile: caFile, CertFile: certFile, KeyFile: keyFile}
	m, err := New(cfg, nil, nil)
	require.NoError(t, err)
	runMeter(t, m)
	require.NoError(t, m.Append(context.Background(), []byte(`{"tls":true}`)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, m.Flush(ctx))
	require.Equal(t, 1, c.count(cfg.MeterID))

	// Without the client certificate the handshake fails: the record stays spooled.
	cfg2 := testConfig(t, strings.TrimPrefix(srv.URL, "https://"))
	cfg2.TLS = TLSConfig{Enabled: true, CAFile: caFile}
	m2, err := New(cfg2, nil, nil)
	require.NoError(t, err)
	runMeter(t, m2)
	require.NoError(t, m2.Append(context.Background(), []byte(`{"tls":false}`)))
	require.Eventually(t, func() bool { return m2.Stats().Retries >= 2 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, uint64(0), m2.Stats().AckedSeq)

	_, err = buildTLS(TLSConfig{Enabled: true, CAFile: filepath.Join(dir, "client-key.pem")}, "")
	require.ErrorContains(t, err, "no PEM certificate")
}
