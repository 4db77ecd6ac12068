//go:build !unix

package soft

import "os"

// Without flock, a file-backed TPM is safe within one process (its mutex)
// but not shared between processes.
func lockFile(*os.File) error { return nil }

func unlockFile(*os.File) error { return nil }
