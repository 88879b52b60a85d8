package control

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"phloem/phloem/topics"
)

// DefaultTopic is the name of the control topic.
const DefaultTopic = "phloem.control"

// Key prefixes of the control records.
const (
	TenantKeyPrefix = "tenant/"
	SinkKeyPrefix   = "sink/"
)

// TenantKey returns the record key of tenant id.
func TenantKey(id string) string { return TenantKeyPrefix + id }

// SinkKey returns the record key of sink id.
func SinkKey(id string) string { return SinkKeyPrefix + id }

// TenantStatus says whether a tenant may send data.
type TenantStatus string

// Tenant statuses.
const (
	StatusActive   TenantStatus = "active"
	StatusDisabled TenantStatus = "disabled"
)

// Limits are a tenant's rate limits; 0 means unlimited.
type Limits struct {
	RecordsPerSec float64 `json:"records_per_sec"`
	BytesPerSec   float64 `json:"bytes_per_sec"`
}

// Tenant is the value of a "tenant/<id>" record.
type Tenant struct {
	ID string `json:"id"`
	// TokenHash is HashToken(token): the token itself is never stored.
	TokenHash  string       `json:"token_hash"`
	Status     TenantStatus `json:"status"`
	Limits     Limits       `json:"limits"`
	Topic      string       `json:"topic"`
	Partitions int32        `json:"partitions"`
	// Version orders the writes of this key: a Watcher applies a put only when
	// Version is greater than the one it holds. The first version is 1.
	Version uint64 `json:"version"`
}

// Active reports whether the tenant may send data.
func (t Tenant) Active() bool { return t.Status == StatusActive }

// Validate reports the first invalid field.
func (t Tenant) Validate() error {
	if err := topics.ValidTenantID(t.ID); err != nil {
		return err
	}
	if !validHash(t.TokenHash) {
		return fmt.Errorf("tenant %q: token hash must be 64 lower-case hex characters (HashToken)", t.ID)
	}
	if t.Status != StatusActive && t.Status != StatusDisabled {
		return fmt.Errorf("tenant %q: status %q must be %q or %q", t.ID, t.Status, StatusActive, StatusDisabled)
	}
	if t.Limits.RecordsPerSec < 0 || t.Limits.BytesPerSec < 0 {
		return fmt.Errorf("tenant %q: limits must not be negative (0 means unlimited)", t.ID)
	}
	if t.Partitions < 0 {
		return fmt.Errorf("tenant %q: partitions %d must not be negative", t.ID, t.Partitions)
	}
	if t.Version == 0 {
		return fmt.Errorf("tenant %q: version must be at least 1", t.ID)
	}
	return nil
}

// Sink types.
const (
	SinkHTTP   = "http"
	SinkFile   = "file"
	SinkStdout = "stdout"
	SinkStream = "stream"
)

// AllTenants is the Sink.Tenant value of a sink that receives every tenant's records.
const AllTenants = "*"

// Sink is the value of a "sink/<id>" record.
type Sink struct {
	ID string `json:"id"`
	// Tenant is a tenant id, or AllTenants ("*").
	Tenant string `json:"tenant"`
	// Type is one of SinkHTTP, SinkFile, SinkStdout, SinkStream.
	Type string `json:"type"`
	// Params are type-specific settings (e.g. "url" for http, "path" for file). Sinks
	// returned by a State share this map with the snapshot: do not modify it.
	Params map[string]string `json:"params"`
	// Version: as Tenant.Version.
	Version uint64 `json:"version"`
}

var sinkIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// ValidSinkID reports whether id is a valid sink id: 1-63 characters of [a-z0-9_.-],
// starting with a letter or digit.
func ValidSinkID(id string) error {
	if !sinkIDRe.MatchString(id) {
		return fmt.Errorf("invalid sink id %q: use 1-63 characters of a-z, 0-9, '_', '.' and '-', starting with a letter or digit", id)
	}
	return nil
}

// ValidSinkType reports whether typ is a known sink type.
func ValidSinkType(typ string) error {
	switch typ {
	case SinkHTTP, SinkFile, SinkStdout, SinkStream:
		return nil
	}
	return fmt.Errorf("unknown sink type %q: use %s, %s, %s or %s", typ, SinkHTTP, SinkFile, SinkStdout, SinkStream)
}

// Validate reports the first invalid field.
func (s Sink) Validate() error {
	if err := ValidSinkID(s.ID); err != nil {
		return err
	}
	if s.Tenant != AllTenants {
		if err := topics.ValidTenantID(s.Tenant); err != nil {
			return fmt.Errorf("sink %q: %w", s.ID, err)
		}
	}
	if err := ValidSinkType(s.Type); err != nil {
		return fmt.Errorf("sink %q: %w", s.ID, err)
	}
	if s.Version == 0 {
		return fmt.Errorf("sink %q: version must be at least 1", s.ID)
	}
	return nil
}

// HashToken returns the hex SHA-256 of token, the form stored in Tenant.TokenHash and
// looked up with State.TenantByTokenHash.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// TokenPrefix starts every token NewToken makes, so that leaked tokens are easy to
// recognise in logs and by secret scanners.
const TokenPrefix = "phl_"

// NewToken returns a new random tenant token: TokenPrefix followed by 32 bytes from
// crypto/rand in unpadded base64url.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("cannot generate token: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func validHash(h string) bool {
	if len(h) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ErrAlreadyRunning is returned by Watcher.Run when Run was already called on that
// Watcher: one Watcher never runs two loops.
var ErrAlreadyRunning = errors.New("control watcher: Run called twice; build one Watcher in main and share it")

// splitKey returns the kind ("tenant" or "sink") and id of a record key.
func splitKey(key string) (kind, id string, ok bool) {
	switch {
	case strings.HasPrefix(key, TenantKeyPrefix):
		return "tenant", key[len(TenantKeyPrefix):], true
	case strings.HasPrefix(key, SinkKeyPrefix):
		return "sink", key[len(SinkKeyPrefix):], true
	}
	return "", "", false
}
