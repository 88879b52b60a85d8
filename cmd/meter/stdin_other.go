//go:build !unix

package main

import (
	"io"
	"os"
)

func pollableStdin() (io.Reader, func()) { return os.Stdin, func() {} }
