//go:build !unix

package flock

import "os"

// Lock does nothing where there is no flock: a file is then safe within one
// process (its users' own mutexes) but not shared between processes.
func Lock(*os.File) error { return nil }

// Unlock does nothing where there is no flock.
func Unlock(*os.File) error { return nil }
