package meter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"phloem/hashring"
	"phloem/internal/logx"
)

// Resolver is the part of *net.Resolver discovery uses; tests inject their own
// answers through it.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupSRV(ctx context.Context, service, proto, name string) (cname string, addrs []*net.SRV, err error)
}

type specKind int

const (
	specStatic specKind = iota
	specDNS
	specSRV
)

// collectorSpec is a parsed Config.Collectors.
type collectorSpec struct {
	kind   specKind
	static []string // specStatic: host:port or http(s)://host:port, sorted, distinct
	host   string   // specDNS: name to resolve; specSRV: full SRV name
	port   string   // specDNS
}

// parseCollectors parses "a:1,b:2", "dns://name:port" or "srv://_svc._proto.name".
func parseCollectors(s string) (collectorSpec, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return collectorSpec{}, errors.New("collectors: none given (want host:port list, dns://name:port or srv://_service._proto.name)")
	case strings.HasPrefix(s, "dns://"):
		host, port, err := net.SplitHostPort(strings.TrimPrefix(s, "dns://"))
		if err != nil || host == "" || port == "" {
			return collectorSpec{}, fmt.Errorf("collectors %q: want dns://name:port", s)
		}
		return collectorSpec{kind: specDNS, host: host, port: port}, nil
	case strings.HasPrefix(s, "srv://"):
		name := strings.TrimPrefix(s, "srv://")
		if name == "" || strings.ContainsAny(name, "/:") {
			return collectorSpec{}, fmt.Errorf("collectors %q: want srv://_service._proto.name", s)
		}
		return collectorSpec{kind: specSRV, host: name}, nil
	}
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimRight(strings.TrimSpace(a), "/")
		if a == "" {
			continue
		}
		hostport := a
		if i := strings.Index(a, "://"); i >= 0 {
			u, err := url.Parse(a)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
				return collectorSpec{}, fmt.Errorf("collectors: %q is not http(s)://host:port", a)
			}
			hostport = u.Host
		}
		if _, _, err := net.SplitHostPort(hostport); err != nil {
			return collectorSpec{}, fmt.Errorf("collectors: %q: want host:port: %w", a, err)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return collectorSpec{}, errors.New("collectors: empty list")
	}
	slices.Sort(out)
	return collectorSpec{kind: specStatic, static: slices.Compact(out)}, nil
}

// tlsName is the default TLS server name for the spec (dns:// resolves to IPs,
// but the certificate names the service).
func (c collectorSpec) tlsName() string {
	if c.kind == specDNS {
		return c.host
	}
	return ""
}

// resolve returns the collector addresses, sorted and distinct.
func (c collectorSpec) resolve(ctx context.Context, r Resolver) ([]string, error) {
	var out []string
	switch c.kind {
	case specStatic:
		return c.static, nil
	case specDNS:
		ips, err := r.LookupIPAddr(ctx, c.host)
		if err != nil {
			return nil, fmt.Errorf("cannot resolve collectors dns://%s:%s: %w", c.host, c.port, err)
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip.IP.String(), c.port))
		}
	case specSRV:
		_, srvs, err := r.LookupSRV(ctx, "", "", c.host)
		if err != nil {
			return nil, fmt.Errorf("cannot resolve collectors srv://%s: %w", c.host, err)
		}
		// Every target joins the ring; SRV priorities and weights are not used:
		// placement spreads meters evenly and failover follows the ring.
		for _, s := range srvs {
			out = append(out, net.JoinHostPort(strings.TrimSuffix(s.Target, "."), fmt.Sprint(s.Port)))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("collector discovery returned no address")
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// discovery keeps a hashring.Holder in step with the collector set. Its run loop is
// owned by Meter.Run.
type discovery struct {
	spec     collectorSpec
	resolver Resolver
	holder   *hashring.Holder
	interval time.Duration
	minGap   time.Duration
	logger   *slog.Logger
	throttle *logx.Throttled
	onNodes  func(n int)

	kick    chan struct{} // cap 1: the sender asks for a refresh
	current []string
	last    time.Time
}

// refresh resolves once and installs a new ring (version + 1) when the set changed.
// A failed or empty resolution keeps the current ring.
func (d *discovery) refresh(ctx context.Context) {
	d.last = time.Now()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	nodes, err := d.spec.resolve(rctx, d.resolver)
	cancel()
	if err != nil {
		d.throttle.Warn("discovery", "collector discovery failed; keeping the current collector set", "error", err, "collectors", len(d.current))
		return
	}
	if slices.Equal(nodes, d.current) {
		return
	}
	if err := d.install(nodes); err != nil {
		d.throttle.Error("discovery-ring", "cannot build collector ring", "error", err)
		return
	}
	d.logger.Info("collector set changed", "collectors", nodes)
}

// install builds and stores the ring for nodes. The ring is table-less
// (hashring.NewDirect): a meter locates its collector only when the set changes
// or a collector fails, so a 2 MiB table and its 30 MiB build would be pure cost
// on a customer host; placement is identical to the table's.
func (d *discovery) install(nodes []string) error {
	ns := make([]hashring.Node, len(nodes))
	for i, n := range nodes {
		ns[i] = hashring.Node{Name: n}
	}
	cur := d.holder.Load()
	var r *hashring.Ring
	var err error
	if cur == nil {
		r, err = hashring.NewDirect(1, ns)
	} else {
		r, err = cur.Rebuild(cur.Version()+1, ns)
	}
	if err != nil {
		return err
	}
	if err := d.holder.Store(r); err != nil {
		return err
	}
	d.current = nodes
	d.onNodes(len(nodes))
	return nil
}

// run re-resolves every interval and when kicked (at most once per minGap) until
// ctx is done. Static sets never change, so run returns at once for them.
func (d *discovery) run(ctx context.Context) {
	if d.spec.kind == specStatic {
		return
	}
	t := time.NewTicker(d.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.kick:
			if wait := d.minGap - time.Since(d.last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		d.refresh(ctx)
	}
}

// requestRefresh asks run for an early re-resolution; it never blocks.
func (d *discovery) requestRefresh() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}
