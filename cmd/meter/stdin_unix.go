//go:build unix

package main

import (
	"io"
	"os"
	"syscall"
)

// pollableStdin returns stdin switched to non-blocking mode, so that reads wait in
// the runtime's poller instead of holding an OS thread in read(2). A thread parked
// in a blocking read keeps the runtime's monitor waking every 20 µs to retake its
// processor: on an idle meter that was most of its CPU. restore puts the shared
// file description back in blocking mode (a terminal or pipe shared with the
// parent must not stay non-blocking after we exit). Regular files cannot be
// polled; for them the runtime reads as before.
func pollableStdin() (r io.Reader, restore func()) {
	if err := syscall.SetNonblock(0, true); err != nil {
		return os.Stdin, func() {}
	}
	return os.NewFile(0, "/dev/stdin"), func() { _ = syscall.SetNonblock(0, false) } // best effort on exit
}
