package procrun

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestInfraFailureStopsTheComponent(t *testing.T) {
	infra, appCtx := NewInfra(context.Background())
	boom := errors.New("boom")
	infra.Go("broker", func(context.Context) error { return boom })
	select {
	case <-appCtx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("an infrastructure failure must cancel the component's context")
	}
	err := infra.Stop()
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "broker: boom")
	require.Equal(t, err, infra.Stop(), "Stop is idempotent")
}

func TestInfraOutlivesTheProcessContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	infra, appCtx := NewInfra(ctx)
	stopped := make(chan struct{})
	infra.Go("watcher", func(ctx context.Context) error { <-ctx.Done(); close(stopped); return nil })
	cancel()
	<-appCtx.Done()
	select {
	case <-stopped:
		t.Fatal("infrastructure must keep running until Stop, after the component")
	case <-time.After(50 * time.Millisecond):
	}
	require.NoError(t, infra.Stop())
	<-stopped
}

func TestInfraEarlyReturnStopsTheComponent(t *testing.T) {
	infra, appCtx := NewInfra(context.Background())
	infra.Go("admin listener", func(context.Context) error { return nil })
	select {
	case <-appCtx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("an infrastructure goroutine that returns early must stop the component")
	}
	require.ErrorContains(t, infra.Stop(), "admin listener: stopped before")
}
