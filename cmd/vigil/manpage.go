//go:build vigil_manpage

package main

import (
	"fmt"
	"os"
)

// Built only with -tags vigil_manpage, by `make package` (packaging/), so
// the vigil binary that ships is unchanged: `vigil __manpage` prints the
// roff man page vigil(1) of the whole command tree and exits.
func init() {
	if len(os.Args) != 2 || os.Args[1] != "__manpage" {
		return
	}
	page, err := newApp().ToManWithSection(1)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vigil: man page:", err)
		os.Exit(1)
	}
	fmt.Print(page)
	os.Exit(0)
}
