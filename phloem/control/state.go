package control

import (
	"cmp"
	"encoding/json"
	"maps"
	"slices"
	"sync"
)

// State is an immutable snapshot of the control topic. Its methods are safe for
// concurrent use; values they return are copies, except Sink.Params, which callers
// must not modify.
type State struct {
	tenants map[string]Tenant
	byHash  map[string]string // token hash -> tenant id
	sinks   map[string]Sink
	gen     uint64

	// Sorted views, built on first use: most snapshots are superseded before anyone
	// lists them, and building them eagerly would cost O(n log n) per event.
	sortedOnce    sync.Once
	sortedTenants []Tenant
	sortedSinks   []Sink
}

// Generation counts the snapshots a Watcher has published: 0 for the empty state
// before the first change, then +1 per published change. It only orders snapshots of
// one Watcher.
func (s *State) Generation() uint64 { return s.gen }

// Tenant returns the tenant with the given id.
func (s *State) Tenant(id string) (Tenant, bool) {
	t, ok := s.tenants[id]
	return t, ok
}

// TenantByTokenHash returns the tenant whose TokenHash is hash (a map lookup). Callers
// must still check Active: disabled tenants are returned too, so that they can be
// told apart from unknown tokens.
func (s *State) TenantByTokenHash(hash string) (Tenant, bool) {
	id, ok := s.byHash[hash]
	if !ok {
		return Tenant{}, false
	}
	return s.Tenant(id)
}

// NumTenants returns the number of tenants.
func (s *State) NumTenants() int { return len(s.tenants) }

// NumSinks returns the number of sinks.
func (s *State) NumSinks() int { return len(s.sinks) }

// Sink returns the sink with the given id.
func (s *State) Sink(id string) (Sink, bool) {
	k, ok := s.sinks[id]
	return k, ok
}

func (s *State) sort() {
	s.sortedOnce.Do(func() {
		s.sortedTenants = slices.SortedFunc(maps.Values(s.tenants), func(a, b Tenant) int { return cmp.Compare(a.ID, b.ID) })
		s.sortedSinks = slices.SortedFunc(maps.Values(s.sinks), func(a, b Sink) int { return cmp.Compare(a.ID, b.ID) })
	})
}

// Tenants returns every tenant, sorted by ID.
func (s *State) Tenants() []Tenant {
	s.sort()
	return slices.Clone(s.sortedTenants)
}

// Sinks returns every sink, sorted by ID.
func (s *State) Sinks() []Sink {
	s.sort()
	return slices.Clone(s.sortedSinks)
}

// SinksFor returns the sinks that receive tenant's records: its own and those for
// AllTenants, sorted by ID.
func (s *State) SinksFor(tenant string) []Sink {
	s.sort()
	var out []Sink
	for _, k := range s.sortedSinks {
		if k.Tenant == tenant || k.Tenant == AllTenants {
			out = append(out, k)
		}
	}
	return out
}

// Reasons an event is ignored, the values of the reason label of
// phloem_control_events_ignored_total.
const (
	// ReasonStale: a put whose version is not newer than the one held (a duplicate
	// or an older event).
	ReasonStale = "stale"
	// ReasonAbsent: a tombstone for a key that is not held (a duplicate removal).
	ReasonAbsent = "absent"
	// ReasonInvalid: a value that does not decode or validate, or whose id does not
	// match its key.
	ReasonInvalid = "invalid"
	// ReasonUnknownKey: a key that is neither tenant/<id> nor sink/<id>; a newer
	// writer may know kinds this reader does not.
	ReasonUnknownKey = "unknown_key"
)

// builder applies a batch of events to a base snapshot. Maps are copied on the first
// write of the batch only, so a batch of n events on a state of size m costs
// O(m + n), not O(m·n). A builder is used by one goroutine.
type builder struct {
	base    *State
	tenants map[string]Tenant
	byHash  map[string]string
	sinks   map[string]Sink
	tDirty  bool
	sDirty  bool
}

func newBuilder(base *State) *builder {
	return &builder{base: base, tenants: base.tenants, byHash: base.byHash, sinks: base.sinks}
}

func (b *builder) changed() bool { return b.tDirty || b.sDirty }

func (b *builder) writeTenants() {
	if !b.tDirty {
		b.tenants = maps.Clone(b.tenants)
		b.byHash = maps.Clone(b.byHash)
		if b.tenants == nil {
			b.tenants = make(map[string]Tenant)
		}
		if b.byHash == nil {
			b.byHash = make(map[string]string)
		}
		b.tDirty = true
	}
}

func (b *builder) writeSinks() {
	if !b.sDirty {
		b.sinks = maps.Clone(b.sinks)
		if b.sinks == nil {
			b.sinks = make(map[string]Sink)
		}
		b.sDirty = true
	}
}

// apply applies one control record. It returns "" when the event changed the state,
// else the reason it was ignored. Applying the same record twice, or any put whose
// version is not newer, is a no-op.
func (b *builder) apply(key, value []byte) (ignored string) {
	kind, id, ok := splitKey(string(key))
	if !ok {
		return ReasonUnknownKey
	}
	tombstone := len(value) == 0
	switch kind {
	case "tenant":
		cur, have := b.tenants[id]
		if tombstone {
			if !have {
				return ReasonAbsent
			}
			b.writeTenants()
			b.dropHash(cur)
			delete(b.tenants, id)
			return ""
		}
		var t Tenant
		if err := json.Unmarshal(value, &t); err != nil || t.ID != id || t.Validate() != nil {
			return ReasonInvalid
		}
		if have && t.Version <= cur.Version {
			return ReasonStale
		}
		b.writeTenants()
		if have {
			b.dropHash(cur)
		}
		b.tenants[id] = t
		b.byHash[t.TokenHash] = id
		return ""
	default: // "sink"
		cur, have := b.sinks[id]
		if tombstone {
			if !have {
				return ReasonAbsent
			}
			b.writeSinks()
			delete(b.sinks, id)
			return ""
		}
		var k Sink
		if err := json.Unmarshal(value, &k); err != nil || k.ID != id || k.Validate() != nil {
			return ReasonInvalid
		}
		if have && k.Version <= cur.Version {
			return ReasonStale
		}
		b.writeSinks()
		b.sinks[id] = k
		return ""
	}
}

// dropHash removes t's token hash from the index if it still points at t; a token
// hash shared by two tenants (only possible if an operator reused a token) stays with
// the tenant written last.
func (b *builder) dropHash(t Tenant) {
	if b.byHash[t.TokenHash] == t.ID {
		delete(b.byHash, t.TokenHash)
	}
}

// build returns the new snapshot, or the base when nothing changed.
func (b *builder) build() *State {
	if !b.changed() {
		return b.base
	}
	return &State{tenants: b.tenants, byHash: b.byHash, sinks: b.sinks, gen: b.base.gen + 1}
}
