package collector

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
)

// certReloader serves the data listener's certificate and swaps it atomically on
// Reload, so a renewed certificate takes effect for new handshakes without a
// restart or a dropped connection.
type certReloader struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// reload reads the files again. On error the previous certificate stays.
func (r *certReloader) reload() error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("cannot load TLS certificate %s / key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert.Store(&c)
	return nil
}

func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// tlsConfig is the data listener's TLS configuration: TLS 1.2+, HTTP/2 offered
// first (DESIGN.md: HTTP/2 over TLS when configured).
func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.getCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// Reload re-reads the TLS certificate and key files (wire it to SIGHUP). On
// error the current certificate stays in use. Without TLS it returns
// ErrNoTLS.
func (c *Collector) Reload() error {
	if c.certs == nil {
		return ErrNoTLS
	}
	if err := c.certs.reload(); err != nil {
		c.m.tlsReloads.WithLabelValues("error").Inc()
		c.logger.Error("TLS certificate reload failed; keeping the current certificate", "err", err)
		return err
	}
	c.m.tlsReloads.WithLabelValues("ok").Inc()
	c.logger.Info("TLS certificate reloaded", "cert", c.certs.certFile)
	return nil
}

// ErrNoTLS is returned by Reload when the collector serves plain HTTP.
var ErrNoTLS = errors.New("collector serves plain HTTP: no TLS certificate to reload")

func isTopicExists(err error) bool { return errors.Is(err, kerr.TopicAlreadyExists) }
