package meter

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// buildTLS returns the client TLS config for collectors: the system roots or the
// CAs of CAFile, and the optional client certificate. defaultServerName is used
// when TLSConfig.ServerName is empty (the DNS name of a dns:// collector set).
func buildTLS(c TLSConfig, defaultServerName string) (*tls.Config, error) {
	if !c.Enabled {
		return nil, nil
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // tests only, documented on the field
	}
	if tc.ServerName == "" {
		tc.ServerName = defaultServerName
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read collector CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("collector CA file %q holds no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cannot load meter client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
