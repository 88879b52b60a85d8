package consumer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"phloem/phloem/control"
)

// fileDeliverer appends NDJSON lines to per-tenant rolling files:
//
//	<dir>/<tenant>/<tenant>-<UTC time>.ndjson
//
// A file is rotated (closed, and a new one started) when it reaches max_bytes or
// when it is older than max_age; names sort by creation time. At most maxOpenFiles
// files are open at once: the least recently written is closed (and a later write
// to its tenant starts a new file).
//
// Params: "dir" (required), "max_bytes" (default 64 MiB), "max_age" (Go duration,
// default 1h), "fsync": "batch" (default: fsync every file written by a batch
// before acknowledging it, so an acknowledged record survives a machine crash) or
// "never" (acknowledge after write(2): survives a crash of phloem, not of the
// machine; faster).
type fileDeliverer struct {
	dir      string
	maxBytes int64
	maxAge   time.Duration
	fsync    bool
	files    map[string]*rollingFile
	line     []byte
	now      func() time.Time
}

type rollingFile struct {
	f       *os.File
	size    int64
	opened  time.Time
	lastUse time.Time
	dirty   bool
}

const maxOpenFiles = 64

func newFileDeliverer(spec control.Sink) (*fileDeliverer, error) {
	d := &fileDeliverer{
		dir:      spec.Params["dir"],
		maxBytes: 64 << 20,
		maxAge:   time.Hour,
		fsync:    true,
		files:    make(map[string]*rollingFile),
		now:      time.Now,
	}
	if d.dir == "" {
		return nil, fmt.Errorf("file sink %q: params.dir is required", spec.ID)
	}
	if s := spec.Params["max_bytes"]; s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("file sink %q: params.max_bytes %q must be a positive integer", spec.ID, s)
		}
		d.maxBytes = v
	}
	if s := spec.Params["max_age"]; s != "" {
		v, err := time.ParseDuration(s)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("file sink %q: params.max_age %q must be a positive Go duration", spec.ID, s)
		}
		d.maxAge = v
	}
	switch spec.Params["fsync"] {
	case "", "batch":
	case "never":
		d.fsync = false
	default:
		return nil, fmt.Errorf("file sink %q: params.fsync %q must be \"batch\" or \"never\"", spec.ID, spec.Params["fsync"])
	}
	return d, nil
}

func (d *fileDeliverer) deliver(ctx context.Context, batch []*item) error {
	now := d.now()
	for _, it := range batch {
		if err := ctx.Err(); err != nil {
			return err
		}
		rf, err := d.file(it.tenant, now)
		if err != nil {
			return err
		}
		d.line = appendLine(d.line[:0], it)
		n, err := rf.f.Write(d.line)
		rf.size += int64(n)
		rf.dirty = true
		rf.lastUse = now
		if err != nil {
			// A short write leaves a partial line: start a new file so every file
			// stays line-aligned, and retry the batch (duplicates, never loss).
			d.closeFile(it.tenant)
			return fmt.Errorf("cannot write to %s: %w", rf.f.Name(), err)
		}
	}
	var errs []error
	for tenant, rf := range d.files {
		if !rf.dirty {
			continue
		}
		if d.fsync {
			if err := rf.f.Sync(); err != nil {
				d.closeFile(tenant)
				errs = append(errs, fmt.Errorf("cannot fsync %s: %w", rf.f.Name(), err))
				continue
			}
		}
		rf.dirty = false
	}
	return errors.Join(errs...)
}

// file returns the open file of tenant, rotating or opening as needed.
func (d *fileDeliverer) file(tenant string, now time.Time) (*rollingFile, error) {
	rf := d.files[tenant]
	if rf != nil && (rf.size >= d.maxBytes || now.Sub(rf.opened) >= d.maxAge) {
		if err := d.closeFile(tenant); err != nil {
			return nil, err
		}
		rf = nil
	}
	if rf != nil {
		return rf, nil
	}
	if len(d.files) >= maxOpenFiles {
		var oldest string
		var t time.Time
		for k, f := range d.files {
			if !f.dirty && (oldest == "" || f.lastUse.Before(t)) {
				oldest, t = k, f.lastUse
			}
		}
		if oldest != "" {
			if err := d.closeFile(oldest); err != nil {
				return nil, err
			}
		}
	}
	dir := filepath.Join(d.dir, tenant)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create sink directory %s: %w", dir, err)
	}
	name := filepath.Join(dir, tenant+"-"+now.UTC().Format("20060102T150405.000000000Z")+".ndjson")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open sink file %s: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("cannot stat sink file %s: %w", name, err), f.Close())
	}
	rf = &rollingFile{f: f, size: st.Size(), opened: now, lastUse: now}
	d.files[tenant] = rf
	return rf, nil
}

func (d *fileDeliverer) closeFile(tenant string) error {
	rf := d.files[tenant]
	if rf == nil {
		return nil
	}
	delete(d.files, tenant)
	if err := rf.f.Close(); err != nil {
		return fmt.Errorf("cannot close sink file %s: %w", rf.f.Name(), err)
	}
	return nil
}

func (d *fileDeliverer) close() error {
	var errs []error
	for tenant := range d.files {
		errs = append(errs, d.closeFile(tenant))
	}
	return errors.Join(errs...)
}
