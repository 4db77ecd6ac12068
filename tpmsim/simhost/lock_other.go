//go:build !unix

package simhost

import "os"

// Without flock, concurrent appenders in different processes may extend
// PCR 10 in another order than they wrote the list; one appender is safe.
func lockFile(*os.File) error { return nil }

func unlockFile(*os.File) error { return nil }
